"""`aigrid models eval --data FILE.csv`: the quality-vs-cost curve of aigrid's router and its baselines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from aigrid.cli_error import print_error
from aigrid.errors import AigridError
from aigrid.outdir import prepare_dir, write_failed
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.evaluation import curve_rows, evaluate, markdown, summary_rows, write_plot
from aigrid.rightsize.routing_data import RoutingData, concat, read_routing_csv, split_mask

app = typer.Typer(no_args_is_help=True, help="Right-sized models: the per-prompt quality estimate.")
console = Console(soft_wrap=True)


@app.command("eval")
def eval_command(
    data: Annotated[list[Path], typer.Option("--data", help="model-routing CSV (repeat for several)")],
    split: Annotated[str | None, typer.Option(help="only this fixed split of the file (train, validation, "
                                                   "test; the shipped estimate was trained on the first two)")] = None,
    small: Annotated[str | None, typer.Option(help="the small model's column or name (default: the weaker)")] = None,
    large: Annotated[str | None, typer.Option(help="the large model's column or name (default: the stronger)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the curves as a PNG here (needs matplotlib)")] = None,
    reference: Annotated[list[Path] | None, typer.Option(
        help="labelled CSVs whose train+validation splits are the SW-ranking baseline's neighbours (default: "
             "the estimate's own training files, ../shared/data/model-routing, when present)")] = None,
    baseline: Annotated[bool, typer.Option(help="run the similarity-weighted ranking baseline")] = True,
    crossfit: Annotated[bool, typer.Option(help="also the SW baseline on the file's own labels, 5-fold "
                                                "cross-fitted (a ceiling, not a peer)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the in-file baseline's folds")] = 0,
) -> None:
    """Print quality vs share of large-model calls, APGR and the calls needed for 50% / 80% of the gap."""
    try:
        if plot is not None:
            prepare_dir(plot.parent, "--plot")  # before the evaluation, not after it
        estimator = QualityEstimator.load()
        ref = _reference(reference) if baseline else None
        if baseline and ref is None:
            console.print("no reference data for the SW-ranking baseline (pass --reference); skipped",
                          highlight=False)
        for path in data:
            d = read_routing_csv(path, small, large)
            if split is not None:
                d = d.subset(split_mask(d, split))
            if len(d) < 10:
                raise typer.BadParameter(f"{path}: {len(d)} prompts{f' in split {split}' if split else ''}; need 10+")
            ev = evaluate(d, estimator, reference=ref, crossfit=crossfit, seed=seed)
            name = path.name + (f" [{split}]" if split else "")
            console.print(f"\n## {name}: {len(d)} prompts, small = {d.small_name}, large = {d.large_name}",
                          highlight=False)
            console.print(markdown(["router", "APGR", "large calls for 50% of gap", "for 80%",
                                    "cost levels below random", "quality"],
                                   summary_rows(ev)), highlight=False)
            console.print("\nquality by share of large-model calls:", highlight=False)
            console.print(markdown(["large calls"] + [c.name for c in ev.curves], curve_rows(ev)), highlight=False)
            console.print(f"\nestimate cost: {ev.estimate_ms:.3f} ms per prompt (mean, this process)", highlight=False)
            if plot is not None:
                target = plot if len(data) == 1 else plot.with_name(f"{plot.stem}-{path.stem}{plot.suffix}")
                try:
                    write_plot(ev, target, name)
                except OSError as e:
                    raise write_failed("--plot", target, e) from None
                console.print(f"plot: {target}", highlight=False)
    except AigridError as e:
        print_error(console, e)
        raise typer.Exit(2) from None


TRAINING_FILES = ("mmlu_mixtral_vs_gpt4.csv", "gsm8k_mixtral_vs_gpt4.csv", "mt_bench_mixtral_vs_gpt4.csv")


def _reference(paths: list[Path] | None) -> RoutingData | None:
    """The SW baseline's labelled neighbours: the train+validation splits of the given (or training) files."""
    if not paths:
        here = Path(__file__).resolve()
        found = next((p / "shared" / "data" / "model-routing" for p in (*here.parents, *Path.cwd().resolve().parents)
                      if (p / "shared" / "data" / "model-routing" / TRAINING_FILES[0]).exists()), None)
        if found is None:
            return None
        paths = [found / name for name in TRAINING_FILES]
    parts = []
    for path in paths:
        d = read_routing_csv(path)
        parts.append(d.subset(~split_mask(d, "test")))
    return concat(parts)
