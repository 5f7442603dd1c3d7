"""`aigrid sim SCENARIO.yaml --out DIR`: run a scenario, write its reports, print the comparison table.

The top-level CLI mounts `app` (a typer sub-app) or calls run_scenario() directly.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path
from types import ModuleType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from aigrid.cli_error import print_error, wrong_kind
from aigrid.errors import AigridError
from aigrid.outdir import prepare_dir, write_whole
from aigrid.printable import printable
from aigrid.sim.experiment import Experiment, run_experiment
from aigrid.sim.report import print_table, summary, write_outputs
from aigrid.sim.scenario import ScenarioError, ScenarioProblem, load_scenario


def run_scenario(path: str | Path, out_dir: str | Path, *, plots: bool = True, quiet: bool = False,
                 console: Console | None = None, workers: int | None = None) -> dict[str, object]:
    """Run one scenario file; write summary.json, details.json, requests.csv and PNGs into out_dir.
    `workers`: processes running policies side by side (default one per core; 1: all in this process).

    Returns the summary dict. Raises ScenarioError (a SpecError) for a bad scenario, ConfigError for an
    out_dir that cannot be written (checked before the run).
    """
    console = console or Console(stderr=True)
    scenario = load_scenario(path)
    out = prepare_dir(Path(out_dir))
    # a policy's label names the scenario's site set: text, never rich markup (a `[/x]` was a MarkupError)
    with Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                  TimeElapsedColumn(), console=console, disable=quiet, transient=True) as progress:
        tasks: dict[str, TaskID] = {}
        lines = not quiet and not console.is_terminal  # a log, not a terminal: a plain line every 10% instead
        printed: dict[str, int] = {}
        started = time.monotonic()

        def report(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = progress.add_task(printable(label), total=1.0)
            fraction = min(max(fraction, 0.0), 1.0)
            progress.update(tasks[label], completed=fraction)
            tenth = int(fraction * 10)
            if lines and tenth > printed.get(label, 0):
                printed[label] = tenth
                console.print(f"{printable(label)}: {tenth * 10}% ({time.monotonic() - started:.0f} s)",
                              highlight=False, markup=False)

        try:
            experiment = run_experiment(scenario, progress=report, workers=workers,
                                        idle=_import_plots if plots else None)
        except ScenarioProblem as e:
            raise ScenarioError(str(path), [str(e)]) from None
    written = _write_whole(experiment, out, plots)
    if not quiet:
        print_table(experiment, Console(width=max(Console().width, 132)))
        # every report named (it said `wrote OUT/summary.json` only: the CSV and the plots went unmentioned)
        others = sorted((str(p.relative_to(out)) for p in written if p.name != "summary.json"),
                        key=lambda n: REPORTS.index(n) if n in REPORTS else len(REPORTS))
        console.print(f"wrote {printable(str(out))}/summary.json{''.join(f', {n}' for n in others)} "
                      f"({experiment.events:,} events in {experiment.wall_s:.1f} s)", markup=False, soft_wrap=True)
    return summary(experiment)


REPORTS = ("summary.json", "details.json", "requests.csv", "ttft_cdf.png", "sites_utilization.png",
           "ttft_vs_load.png")
"""Every file `aigrid sim` writes into --out (report.write_outputs, plots.write_plots): one an earlier run wrote
and this one does not (--no-plots, write_requests_csv: false) is removed, not left beside the new reports."""


def _write_whole(experiment: Experiment, out: Path, plots: bool) -> list[Path]:
    """The reports written whole (outdir.write_whole): a run stopped while writing them (Ctrl-C, a full disk)
    leaves `out` as it was, never a new summary.json beside a requests.csv cut short or an earlier run's."""
    def write(folder: Path) -> list[Path]:
        written = write_outputs(experiment, folder)
        return written + _import_plots().write_plots(experiment, folder) if plots else written

    return write_whole(out, write, last="summary.json", owned=REPORTS)


def _import_plots() -> ModuleType:
    """aigrid.sim.plots, imported on first use: matplotlib takes about half a second to import, which
    run_experiment lets happen on a core its runs have left free (its `idle`), not before them."""
    return importlib.import_module("aigrid.sim.plots")


app = typer.Typer(help="Simulate a planet-scale grid driven by the same routing core.", add_completion=False)


@app.command()
def sim(scenario: Annotated[Path, typer.Argument(help="scenario YAML, e.g. examples/sim/global.yaml")],
        out: Annotated[Path, typer.Option("--out", "-o", help="directory for the reports")] = Path("sim-out"),
        no_plots: Annotated[bool, typer.Option("--no-plots", help="skip the PNG plots")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar or table")] = False,
        workers: Annotated[int | None, typer.Option("--workers", "-j", min=0,
                                                    help="processes running policies side by side "
                                                         "(0, the default: one per core)")] = None) -> None:
    """Run SCENARIO and write summary.json, requests.csv and plots into --out."""
    try:  # --workers 0 is one per core, as `aigrid plan --workers 0` (it was refused here)
        run_scenario(scenario, out, plots=not no_plots, quiet=quiet, workers=workers or None)
    except AigridError as e:  # a grid spec or a demand file given here: said so, not a dozen fields it lacks
        print_error(Console(stderr=True), wrong_kind(scenario, "scenario") or e)
        raise typer.Exit(2) from None


if __name__ == "__main__":
    app()
