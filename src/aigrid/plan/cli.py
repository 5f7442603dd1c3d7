"""`aigrid plan DEMAND.yaml --out DIR`: the cheapest placement that meets the SLO at peak and under N+1.

Writes into DIR: grid.yaml (for `aigrid up`, endpoints on engine emulators), run-emulated.sh, scenario.yaml
(the peak check, for `aigrid sim`), cost.md / cost.csv, slo.md, map.png, plan.json, and with --compare
compare.md. What-if flags edit the demand before planning; --from DIR starts the search from an earlier
plan's sites (incremental re-planning).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from aigrid.cli_error import print_error, wrong_kind
from aigrid.errors import AigridError, ConfigError
from aigrid.outdir import prepare_dir, write_whole
from aigrid.plan.checks import Check
from aigrid.plan.demand import MAX_MOVE_TRIALS, MAX_SAMPLES, load_demand
from aigrid.plan.gridspec import write_grid
from aigrid.plan.planner import Events, PlanResult, plan
from aigrid.plan.runs import Backend, LocalBackend, RayBackend
from aigrid.plan.tables import compare_markdown, cost_markdown, slo_markdown, write_tables
from aigrid.plan.whatif import apply_whatif
from aigrid.plan.worldmap import write_map

OUTPUTS = ("plan.json", "cost.csv", "cost.md", "slo.md", "compare.md", "grid.yaml", "run-emulated.sh",
           "scenario.yaml", "map.png", "checks/[0-9][0-9]-[0-9][0-9]h-*.yaml")
"""Every file `aigrid plan` writes into --out (patterns, relative to it): one an earlier plan wrote and this one
does not (no compare.md without --compare, no map.png with --no-map, a check of another hour) is removed."""


def write_outputs(result: PlanResult, out: Path, *, emulator_port: int = 9100, plot: bool = True) -> list[Path]:
    """The plan written whole into `out` (outdir.write_whole, plan.json last): a run stopped while writing it
    (Ctrl-C, a full disk) leaves `out` as it was, never a half-written plan beside a plan.json."""
    out.mkdir(parents=True, exist_ok=True)

    def write(folder: Path) -> list[Path]:
        written = write_tables(folder, result)
        if result.best is not None:
            checks = [Check(o["check"]["hour"], o["check"]["failed"]) for o in result.best.outcomes]
            written += write_grid(folder, result.demand, result.traffic, result.best.placement, checks,
                                  emulator_port, shown=out)
            if plot:
                others = [n.verdict.placement for n in result.naive if n.verdict is not None]
                written.append(write_map(folder / "map.png", result.traffic, result.best.placement,
                                         f"{result.demand.name}: plan, "
                                         f"${result.best.placement.usd_per_month:,.0f}/month "
                                         "(grey: GeoNames cities, CC-BY)", others))
        return written

    return write_whole(out, write, last="plan.json", owned=OUTPUTS)


def _previous_sites(path: Path) -> list[str]:
    """The site ids of the plan in `path` (an earlier --out); ConfigError, said as one `error:` line, for anything
    else (it was typer's boxed `Invalid value`, and came after --out had been made: an empty folder left)."""
    try:
        doc = json.loads((path / "plan.json").read_text())
    except (OSError, ValueError) as e:  # said "cannot read plan.json ([Errno 20] Not a directory: 'x.yaml/plan.json')"
        said = "not a folder" if path.exists() and not path.is_dir() else \
            "no plan.json in it" if isinstance(e, FileNotFoundError) and path.is_dir() else \
            "no such folder" if isinstance(e, FileNotFoundError) else \
            f"cannot read its plan.json ({e.strerror or e})" if isinstance(e, OSError) else \
            f"its plan.json is not JSON ({e})"
        raise ConfigError(f"--from {path}: {said}; give the --out folder of an earlier `aigrid plan` (it holds "
                          "plan.json)") from None
    plan_part = doc.get("plan") if isinstance(doc, dict) else []  # null: a plan that placed nothing
    sites = (plan_part or {}).get("sites", []) if isinstance(plan_part, dict | None) else None
    if not isinstance(sites, list) or not all(isinstance(s, dict) and isinstance(s.get("id"), str) for s in sites):
        # another file named plan.json, or one edited by hand: it was a traceback (AttributeError, KeyError)
        raise ConfigError(f"--from {path}: plan.json is not a plan's (`aigrid plan --out DIR` writes one with "
                          "plan.sites, each with an id)")
    return [s["id"] for s in sites]


def plan_command(
    demand: Annotated[Path, typer.Argument(help="demand YAML, e.g. examples/plan/global.yaml")],
    out: Annotated[Path, typer.Option("--out", "-o", help="directory for the plan")] = Path("plan-out"),
    compare: Annotated[bool, typer.Option(help="also size the naive placements and compare")] = False,
    workers: Annotated[int, typer.Option(min=0, show_default=False, help="simulator processes (0, the default: one per core)")] = 0,
    ray: Annotated[str | None, typer.Option("--ray", help="run the simulator on this Ray cluster "
                                                            "(address, or 'local' to start one here)")] = None,
    traffic: Annotated[list[str] | None, typer.Option(help="what-if: PLACE=FACTOR, e.g. AS=1.3 (repeat)")] = None,
    residency: Annotated[list[str] | None, typer.Option(help="what-if: TENANT=J1,J2, e.g. chat=EU")] = None,
    price: Annotated[list[str] | None, typer.Option(help="what-if: HARDWARE=FACTOR, e.g. rtx-pro-6000=0.8")] = None,
    growth: Annotated[float | None, typer.Option(help="what-if: traffic growth, 0.3 = +30%")] = None,
    start: Annotated[Path | None, typer.Option("--from", help="an earlier plan's --out: start from its sites")] = None,
    emulator_port: Annotated[int, typer.Option(min=1, max=65535,
                                               help="first port of the emulated engines in grid.yaml")] = 9100,
    no_map: Annotated[bool, typer.Option("--no-map", help="skip map.png")] = False,
    samples: Annotated[int | None, typer.Option(min=1, max=MAX_SAMPLES, show_default=False,
                                                help="arrival samples per check, the plan's and every naive "
                                                     "shape's; a check passes only if all pass (default: the "
                                                     "demand's verify.samples, 1)")] = None,
    move_trials: Annotated[int | None, typer.Option(min=0, max=MAX_MOVE_TRIALS, show_default=False,
                                                    help="hardware-move candidates tried per proposal, each a "
                                                         "run of the checks on every sample; 0: no moves "
                                                         "(default: the demand's verify.move_trials, 16)")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bar or tables")] = False,
) -> None:
    """Plan where inference capacity should go: cheapest sites, hardware and replicas meeting the SLO at the
    diurnal peak and with any one site down, verified by simulation with the same routing core."""
    console = Console(stderr=True)
    try:
        d = apply_whatif(load_demand(demand), traffic=traffic or (), residency=residency or (), price=price or (),
                         growth=growth)
        given = {k: v for k, v in (("samples", samples), ("move_trials", move_trials)) if v is not None}
        if given:
            d = d.model_copy(update={"verify": d.verify.model_copy(update=given)})
    except AigridError as e:  # a grid spec or a scenario given here: said so, not a dozen fields it lacks
        print_error(console, wrong_kind(demand, "demand") or e)
        raise typer.Exit(2) from None
    try:
        previous = _previous_sites(start) if start else None  # before --out is made: a bad --from leaves nothing
        prepare_dir(out)  # before the planning, not after it
        backend: Backend = RayBackend(ray) if ray else LocalBackend(workers or None)
    except AigridError as e:
        print_error(console, e)
        raise typer.Exit(2) from None
    plain = not quiet and not console.is_terminal  # no live bar: a line per phase and per 10 runs
    try:  # piped, the bars' last picture is not printed too (transient): each phase's line was there twice
        with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console, disable=quiet, transient=plain) as progress:
            current: list[TaskID] = []

            def phase(label: str, total: int | None) -> None:
                current.append(progress.add_task(label, total=total))
                if plain:
                    console.print(label)

            def step() -> None:
                progress.advance(current[-1])
                task = progress.tasks[-1]
                if plain and task.completed % 10 == 0:
                    console.print(f"  {task.completed:.0f}/{task.total or 0:.0f} ({task.elapsed or 0:.0f} s)")

            def more(n: int) -> None:
                task = progress.tasks[-1]
                progress.update(current[-1], total=(task.total or 0) + n)

            def note(line: str) -> None:
                if not quiet:
                    progress.console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)

            result = plan(d, backend=backend, compare=compare, start_sites=previous,
                          events=Events(phase, step, more, note), source=str(demand))
    except AigridError as e:
        print_error(console, e)
        raise typer.Exit(2) from None
    finally:
        backend.close()
    try:
        write_outputs(result, out, emulator_port=emulator_port, plot=not no_map)
    except AigridError as e:  # outdir.write_failed: a full disk, a folder removed under us
        print_error(console, e)
        raise typer.Exit(2) from None
    if not quiet:
        # Markdown as written: a row wider than the console was cut into two (no longer a table's row), and a
        # tenant or a city with `[...]` in its name was read as rich markup
        show = Console(width=max(Console().width, 140), soft_wrap=True, markup=False, highlight=False)
        # a blank line after each table: the cost table ran straight into the checks' and that into the comparison's,
        # one table to a Markdown reader of the pasted output (its header line read as a row)
        if result.best is not None:
            show.print(cost_markdown(result.best.placement) + "\n")
            show.print(slo_markdown(result.best.outcomes, d.slo.attainment) + "\n")
        if result.naive:
            show.print(compare_markdown(result).rstrip("\n") + "\n")
        # one line, as sim's: piped to a log it was cut at 80 columns (`backend` / `local)` on two lines)
        console.print(f"wrote {escape(str(out))} ({result.runs} simulator runs, screen {result.screen_s:.1f} s, "
                      f"verify {result.verify_s:.1f} s, backend {escape(result.backend)})", soft_wrap=True)
    if result.best is None:
        reasons = "; ".join(v.reason for v in result.proposals) or "no proposal"
        console.print(f"[red]no placement met the SLO in every check:[/red] {escape(reasons)}", soft_wrap=True)
        raise typer.Exit(1)
