"""`aigrid models eval --data FILE.csv`: the quality-vs-cost curve of aigrid's router and its baselines."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TaskID, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress

from aigrid.cli_error import print_error
from aigrid.errors import AigridError, ConfigError, InvalidRequest
from aigrid.outdir import prepare_dir, write_failed
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.evaluation import (
    SAME_PROMPT,
    Progress,
    curve_rows,
    embed,
    evaluate,
    markdown,
    summary_rows,
    write_plot,
)
from aigrid.rightsize.routing_data import SPLITS, RoutingData, concat, read_routing_csv, split_mask
from aigrid.spec.near import did_you_mean

app = typer.Typer(no_args_is_help=True, help="Right-sized models: the per-prompt quality estimate.")
console = Console(soft_wrap=True)


@app.command("eval")
def eval_command(
    data: Annotated[list[Path], typer.Option("--data", help="model-routing CSV (repeat for several)")],
    split: Annotated[str | None, typer.Option(help="only this fixed split of the file (train, validation, "
                                                   "test; the shipped estimate was trained on the first two)")] = None,
    small: Annotated[str | None, typer.Option(help="the small model's column or name (default: the weaker)")] = None,
    large: Annotated[str | None, typer.Option(help="the large model's column or name (default: the stronger)")] = None,
    plot: Annotated[Path | None, typer.Option(help="write the curves here, a .png (or .svg, .pdf); with several --data, "
                                                   "one per file, named PLOT-FILE.png (needs matplotlib)")] = None,
    reference: Annotated[list[Path] | None, typer.Option(
        help="labelled CSVs whose train+validation splits are the SW-ranking baseline's neighbours (default: "
             "the estimate's own training files, ../shared/data/model-routing, when present)")] = None,
    baseline: Annotated[bool, typer.Option(help="run the similarity-weighted ranking baseline")] = True,
    crossfit: Annotated[bool, typer.Option(help="also the SW baseline on the file's own labels, 5-fold "
                                                "cross-fitted (a ceiling, not a peer)")] = False,
    seed: Annotated[int, typer.Option(help="seed of the in-file baseline's folds")] = 0,
    drop_contaminated: Annotated[bool, typer.Option(help="leave out the prompts the file's `contaminated` column "
                                                         "flags, as RouteLLM's own evaluations do")] = False,
) -> None:
    """Print quality vs share of large-model calls, APGR and the calls needed for 50% / 80% of the gap."""
    try:
        if split is not None and split not in SPLITS:  # before reading any file; it said "split must be ..."
            raise InvalidRequest(f"--split {split}: must be one of {', '.join(SPLITS)}{did_you_mean(split, SPLITS)}",
                                 param="split")
        if plot is not None:
            plot = _plot_path(plot)  # before the evaluation, not after it
        estimator = QualityEstimator.load()
        ref = _reference(reference) if baseline else None
        if baseline and ref is None:
            console.print("no reference data for the SW-ranking baseline (pass --reference); skipped",
                          highlight=False, markup=False)
        written: set[Path] = set()
        ref_vectors = None  # embedded once for all the files
        files = []  # every file read and checked before the first (long) evaluation
        for path in data:
            d = read_routing_csv(path, small, large)
            notes = list(d.notes)
            if split is not None:
                d = d.subset(split_mask(d, split))
            flagged = 0 if d.contaminated is None else int(d.contaminated.sum())
            if drop_contaminated and d.contaminated is not None:
                notes.append(f"{flagged} of {len(d)} prompts flagged contaminated left out")
                d = d.subset(~d.contaminated)
            elif flagged:
                notes.append(f"{flagged} of {len(d)} prompts flagged contaminated, included (--drop-contaminated "
                             "leaves them out)")
            if len(d) < MIN_PROMPTS:
                where = " ".join(x for x in (f"in split {split}" if split else "",
                                             "not flagged contaminated" if drop_contaminated else "") if x)
                why = f"; reading the file: {'; '.join(d.notes)}" if d.notes else ""  # a long file's prompts not scored for both
                raise InvalidRequest(f"{path}: {len(d)} prompt{'' if len(d) == 1 else 's'}{' ' + where if where else ''}"
                                     f"; a curve needs at least {MIN_PROMPTS}{why}", param="data")
            files.append((path, d, notes))
        for path, d, notes in files:
            with _progress(path.name) as progress:
                if ref is not None and ref_vectors is None:
                    ref_vectors = embed(ref.prompts, estimator, "sw-ranking: embedding its reference prompts",
                                        progress)
                ev = evaluate(d, estimator, reference=ref, crossfit=crossfit, seed=seed, progress=progress,
                              reference_vectors=ref_vectors)
            name = path.name + (f" [{split}]" if split else "")
            console.print(f"\n## {name}: {len(d)} prompts, small = {d.small_name}, large = {d.large_name}",
                          highlight=False, markup=False)
            for note in notes:
                console.print(f"note: {note}", highlight=False, markup=False)
            if ev.near_training:
                console.print(f"note: {ev.near_training} of {len(d)} prompts are the estimate's own training prompts "
                              f"or nearly (cosine >= {SAME_PROMPT} of their vectors): on those aigrid's figures (and "
                              "sw-ranking's, with the default --reference) are in-sample" + ("" if split else " (on "
                              "the shipped files, --split test keeps to prompts neither saw)"),
                              highlight=False, markup=False)
            if not ev.has_gap:
                how = "equal to" if abs(ev.gap) <= 1e-12 else "below"
                console.print(f"note: no gap to recover: always-large's mean quality is {how} always-small's, so APGR "
                              "and the large calls for 50% / 80% of the gap are undefined (n/a)",
                              highlight=False, markup=False)
            console.print(markdown(["router", "APGR", "large calls for 50% of gap", "for 80%",
                                    "cost levels below random", "quality"],
                                   summary_rows(ev)), highlight=False, markup=False)
            console.print("\nquality by share of large-model calls:", highlight=False, markup=False)
            console.print(markdown(["large calls"] + [c.name for c in ev.curves], curve_rows(ev)), highlight=False, markup=False)
            console.print(f"\nestimate cost: {ev.estimate_ms:.3f} ms per prompt (mean, this process)", highlight=False, markup=False)
            if plot is not None:
                target = plot if len(data) == 1 else plot.with_name(f"{plot.stem}-{path.stem}{plot.suffix}")
                if target in written:  # two --data files of one name
                    target = target.with_name(f"{target.stem}-{len(written) + 1}{target.suffix}")
                written.add(target)
                try:
                    write_plot(ev, target, name)
                except OSError as e:
                    raise write_failed("--plot", target, e) from None
                console.print(f"plot: {target}", highlight=False, markup=False)
    except AigridError as e:
        print_error(console, e)
        raise typer.Exit(2) from None


MIN_PROMPTS = 10


def _plot_path(plot: Path) -> Path:
    """--plot checked before the evaluation: a file name (.png added when it has no suffix: matplotlib adds it
    itself, and the path printed was then not the file written) in a writable folder, a format matplotlib
    writes, and matplotlib installed."""
    if plot.is_dir():
        raise ConfigError(f"--plot {plot}: is a directory; give a file name, e.g. {plot / 'curve.png'}")
    if not plot.suffix:
        plot = plot.with_suffix(".png")
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.backend_bases import FigureCanvasBase
    except ImportError:
        raise ConfigError("--plot needs matplotlib (pip install 'aigrid[sim]')") from None
    formats = FigureCanvasBase.get_supported_filetypes()
    if plot.suffix[1:].lower() not in formats:
        raise ConfigError(f"--plot {plot}: {plot.suffix!r} is not an image format matplotlib writes "
                          f"({', '.join(sorted(formats))})")
    prepare_dir(plot.parent, "--plot")
    return plot


@contextmanager
def _progress(name: str) -> Iterator[Progress]:
    """Progress of the long steps on stderr (stdout keeps the tables): a bar on a terminal, else one line per step
    of 2,000 prompts or more (14,042 MMLU prompts take ~15 s on one core)."""
    err = Console(stderr=True, soft_wrap=True)
    if err.is_terminal:
        with RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                          console=err, transient=True) as bar:
            tasks: dict[str, TaskID] = {}

            def show(what: str, done: int, total: int) -> None:
                if what not in tasks:
                    tasks[what] = bar.add_task(f"{name}: {what}", total=total)
                bar.update(tasks[what], completed=done)

            yield show
        return
    started: set[str] = set()

    def log(what: str, done: int, total: int) -> None:
        if total >= 2000 and what not in started:
            started.add(what)
            err.print(f"{name}: {what} ({total} prompts)", highlight=False, markup=False)

    yield log


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
