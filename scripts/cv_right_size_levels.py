#!/usr/bin/env python3
"""Repeated grouped cross-validation of the quality estimate on the TRAINING data, per cost level.

The held-out MT-Bench split has 22 questions (44 prompt-turns): one prompt moves a 10% level by 2 points, so
"below random at the 10% level" there says little. This measures the same thing out of fold on the training
split (train + validation; the test split is never read): MMLU 9,882 prompts, GSM8K 1,037, MT-Bench 116
prompt-turns of 58 questions, each scored by a model that never saw it, its MMLU subject, its MT-Bench
question or its GSM8K problem, with `--repeats` different fold assignments (5 folds grouped as
scripts/train_quality_estimator.py groups them; repeat 0 is the trainer's own assignment). Per repeat, the
shipped configuration is refitted fold by fold the way the trainer cross-validates it: the n-gram logit nested
inside each fold, the gain head (boosted trees, alpha 0.5, 300 rounds), the K nearest neighbours' win share,
their blend by rank (each fold's ranks among the other folds' out-of-fold values).

It prints, per benchmark, APGR and the PGR above random mixing (router PGR - share) at each 10% level of
large calls, as the mean and the standard deviation over repeats and the share of repeats below random; for
MT-Bench also per turn and per category kind (writing/roleplay/humanities/extraction/stem: "open"; math,
reasoning, coding: "closed"). `--variants` adds other routers made from the same out-of-fold parts (no
refit): `head` (the trees alone), `near` (the neighbours alone), `ngram` (the n-gram logit alone), and blends
`rank:b` / `rank:b:K`, `shape:b_choices:b_open[:K]` (one blend weight for multiple-choice prompts, another for
the rest); with `--scaled` the trees are also fitted on each benchmark's gain over its standard deviation
(`scaled-head`, `scaled-rank:b`); with `--large-head` the large model's quality head too, whose rank `cap:bn:bl`
blends in (weight bl) beside the neighbours' (bn). The out-of-fold parts are cached in `--cache` (a rerun with the same arguments only
reports). Needs the `train` extra. On this shared 2-core machine about 3 minutes per repeat (nice -n 10).
  python scripts/cv_right_size_levels.py [--data ../shared/data/model-routing] [--repeats 5] [--variants ...]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_quality_estimator import (  # noqa: E402  (a script beside this one)
    DENSE_NAMES,
    FILES,
    booster,
    dense_features,
    fold_ranks,
    ngram_fit,
    ngram_logits,
    ngram_matrix,
    out_of_fold_logits,
    source_weights,
)

from aigrid.rightsize.curve import router_curve  # noqa: E402
from aigrid.rightsize.routing_data import (  # noqa: E402
    RoutingData,
    read_routing_csv,
    split_mask,
    with_earlier_turns,
)
from aigrid.rightsize.static_embedding import StaticEmbedding  # noqa: E402
from aigrid.rightsize.sw_ranking import NeighbourScore, outcomes, quantize  # noqa: E402

FOLDS = 5
ROUNDS = 300
ALPHA = 0.5
KS = (50, 100, 200, 400)
LEVELS = tuple(round(0.1 * i, 1) for i in range(1, 10))
OPEN = {"writing", "roleplay", "humanities", "extraction", "stem"}


def load(folder: Path, turn_context: bool = False) -> tuple[RoutingData, np.ndarray, list[str]]:
    parts, sources = [], []
    for name, file in FILES.items():
        d = read_routing_csv(folder / file)
        d = d.subset(~split_mask(d, "test"))
        if turn_context:
            d = with_earlier_turns(d)
        parts.append(d)
        sources += [name] * len(d)
    data = RoutingData([p for d in parts for p in d.prompts], [g for d in parts for g in d.groups],
                       np.concatenate([d.small for d in parts]), np.concatenate([d.large for d in parts]),
                       parts[0].small_name, parts[0].large_name, turns=None)
    # MT-Bench's turn and category per prompt ("" elsewhere): the turn from the reader, the category from the file
    with (folder / FILES["mt_bench"]).open(encoding="utf-8") as f:
        category = {r["question_id"]: r["category"] for r in csv.DictReader(f)}
    kinds = [""] * (len(parts[0]) + len(parts[1]))
    mt = parts[2]
    assert mt.turns is not None
    kinds += [f"{category[q]}:{t}" for q, t in mt.turns]
    return data, np.array(sources), kinds


def compute(data: RoutingData, source: np.ndarray, repeats: int, scaled: bool = False,
            large_head: bool = False) -> dict[str, np.ndarray]:
    """Per repeat: the out-of-fold gain head, n-gram logit, and neighbour win share for each K. With `scaled`,
    also `head_scaled`: the same trees fitted on each benchmark's gain divided by its standard deviation (on
    the fold's training rows), so MT-Bench's judge-score gains (sd 0.2) weigh in the squared error as much
    as MMLU's 0/1 ones (sd 0.45). With `large_head`, also `head_large`: the large model's expected quality (the
    shipped estimate's `large` head), for the `cap` variant."""
    embedding = StaticEmbedding.load()
    t = time.perf_counter()
    base = np.stack([np.concatenate([embedding.vector(p), dense_features(p)]) for p in data.prompts])
    xs = ngram_matrix(data.prompts)
    vectors = base[:, :embedding.dimensions].astype(np.float32)
    won = outcomes(data.small, data.large).astype(np.float32)
    gain = data.large - data.small
    w = source_weights(source, ALPHA)
    print(f"features: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    out = {"fold": np.zeros((repeats, len(data)), np.int64), "head": np.zeros((repeats, len(data))),
           "ngram": np.zeros((repeats, len(data))), **{f"near{k}": np.zeros((repeats, len(data))) for k in KS}}
    if scaled:
        out["head_scaled"] = np.zeros((repeats, len(data)))
    if large_head:
        out["head_large"] = np.zeros((repeats, len(data)))
    for r in range(repeats):
        key = "cv" if r == 0 else f"cv{r}"
        fold = np.array([zlib.crc32(f"{key}:{s}:{g or p}".encode()) % FOLDS
                         for s, g, p in zip(source, data.groups, data.prompts, strict=True)])
        out["fold"][r] = fold
        for f in range(FOLDS):
            tr, te = fold != f, fold == f
            col = out_of_fold_logits(xs, gain, fold, tr)
            col[te] = ngram_logits(xs[te], ngram_fit(xs[tr], gain[tr]))
            out["ngram"][r, te] = col[te]
            model = booster(ROUNDS).fit(np.column_stack([base, col])[tr], gain[tr], sample_weight=w[tr])
            out["head"][r, te] = model.predict(np.column_stack([base, col])[te])
            if scaled:
                sd = {n: gain[tr & (source == n)].std() for n in FILES}
                unit = np.array([sd[n] for n in source])
                model = booster(ROUNDS).fit(np.column_stack([base, col])[tr], (gain / unit)[tr], sample_weight=w[tr])
                out["head_scaled"][r, te] = model.predict(np.column_stack([base, col])[te])
            if large_head:
                model = booster(ROUNDS).fit(np.column_stack([base, col])[tr], data.large[tr], sample_weight=w[tr])
                out["head_large"][r, te] = model.predict(np.column_stack([base, col])[te])
            for k in KS:
                out[f"near{k}"][r, te] = NeighbourScore(quantize(vectors[tr]), won[tr], k).scores(vectors[te])
            print(f"repeat {r} fold {f}: {time.perf_counter() - t:.0f} s", file=sys.stderr, flush=True)
    return out


def router(parts: dict[str, np.ndarray], r: int, variant: str) -> np.ndarray:
    """One repeat's out-of-fold router score for `variant`."""
    fold = parts["fold"][r]
    head = parts["head"][r]
    if variant.startswith("scaled-"):  # the head fitted on per-benchmark standardised gains (--scaled)
        variant, head = variant[len("scaled-"):], parts["head_scaled"][r]
    if variant == "head":
        return head
    if variant == "ngram":
        return parts["ngram"][r]
    if variant.startswith("near"):
        return parts[variant if variant != "near" else "near200"][r]
    how, *rest = variant.split(":")
    if how == "rank":
        b = np.full(fold.shape, float(rest[0]))
        k = rest[1:]
    elif how == "shape":  # shape:b_choices:b_open[:K]: one weight for multiple-choice prompts, one for the rest
        b = np.where(parts["choices"] > 0, float(rest[0]), float(rest[1]))
        k = rest[2:]
    elif how == "cap":  # cap:b_near:b_large[:K]: also the rank of the large model's expected quality
        b, bl, k = np.full(fold.shape, float(rest[0])), float(rest[1]), rest[2:]
        near = 2 * parts[f"near{k[0] if k else 200}"][r] - 1
        return ((1 - b - bl) * fold_ranks(head, fold) + b * fold_ranks(near, fold)
                + bl * fold_ranks(parts["head_large"][r], fold))
    else:
        raise SystemExit(f"unknown variant {variant!r}: head, ngram, near[K], rank:b[:K], shape:b_mc:b_open[:K], "
                         "cap:b_near:b_large[:K]")
    near = 2 * parts[f"near{k[0] if k else 200}"][r] - 1
    return (1 - b) * fold_ranks(head, fold) + b * fold_ranks(near, fold)


def levels(score: np.ndarray, small: np.ndarray, large: np.ndarray) -> tuple[float, np.ndarray]:
    """APGR and PGR - share at each of LEVELS (the curve's point with at most that share of large calls)."""
    c = router_curve("r", score, small, large)
    return c.apgr, np.array([c.at(s)[1] - c.share_large[np.searchsorted(c.share_large, s + 1e-12) - 1]
                             for s in LEVELS])


def report(parts: dict[str, np.ndarray], data: RoutingData, source: np.ndarray, kinds: list[str],
           variants: list[str]) -> None:
    kind = np.array(kinds)
    turn = np.array([k.split(":")[1] if k else "" for k in kinds])
    cat = np.array([k.split(":")[0] for k in kinds])
    slices = {n: source == n for n in FILES}
    slices["mt_bench turn 1"] = turn == "1"
    slices["mt_bench turn 2"] = turn == "2"
    slices["mt_bench open"] = np.isin(cat, list(OPEN))
    slices["mt_bench closed"] = (source == "mt_bench") & ~np.isin(cat, list(OPEN))
    del kind
    repeats = parts["fold"].shape[0]
    head = "| router | slice | n | APGR mean (sd) | " + " | ".join(f"{int(s * 100)}%" for s in LEVELS) + " |"
    print(head)
    print("|" + "---|" * (4 + len(LEVELS)))
    for v in variants:
        scores = [router(parts, r, v) for r in range(repeats)]
        for name, m in slices.items():
            res = [levels(s[m], data.small[m], data.large[m]) for s in scores]
            apgr = np.array([a for a, _ in res])
            lv = np.array([x for _, x in res])
            cells = [f"{lv[:, i].mean():+.3f} ({lv[:, i].std():.3f}){' <' if lv[:, i].mean() < 0 else ''}"
                     f"{f' [{np.mean(lv[:, i] < 0):.0%} below]' if np.any(lv[:, i] < 0) else ''}"
                     for i in range(len(LEVELS))]
            print(f"| {v} | {name} | {m.sum()} | {apgr.mean():.3f} ({apgr.std():.3f}) | " + " | ".join(cells) + " |",
                  flush=True)


def subsamples(parts: dict[str, np.ndarray], data: RoutingData, source: np.ndarray, variant: str, questions: int,
               draws: int = 1000) -> None:
    """How a held-out split of `questions` MT-Bench questions reads when the router is what it is out of fold:
    draws of that many of the training questions (both turns; without replacement, each repeat's scores in turn),
    per level the share of draws below random mixing, and APGR's 5-95% band."""
    rng = np.random.default_rng(0)
    m = np.flatnonzero(source == "mt_bench")
    groups = np.array([data.groups[i] for i in m])
    names = np.unique(groups)
    repeats = parts["fold"].shape[0]
    apgr, below = [], []
    for d in range(draws):
        pick = np.isin(groups, rng.choice(names, size=min(questions, len(names)), replace=False))
        score = router(parts, d % repeats, variant)[m][pick]
        a, lv = levels(score, data.small[m][pick], data.large[m][pick])
        apgr.append(a)
        below.append(lv < 0)
    b = np.mean(below, axis=0)
    print(f"\n{variant}, MT-Bench, {draws} draws of {questions} of the {len(names)} training questions: APGR 5-95% "
          f"{np.quantile(apgr, 0.05):.3f}-{np.quantile(apgr, 0.95):.3f} (mean {np.mean(apgr):.3f}, below 0.5 in "
          f"{np.mean(np.array(apgr) < 0.5):.0%}); below random in " + ", ".join(
              f"{int(s * 100)}%: {v:.0%}" for s, v in zip(LEVELS, b, strict=True))
          + f"; at least one level below in {np.mean(np.any(below, axis=1)):.0%}, four or more in "
          f"{np.mean(np.sum(below, axis=1) >= 4):.0%}")


def stale(parts: dict[str, np.ndarray], repeats: int, prompts: int, scaled: bool, large_head: bool,
          turn_context: bool) -> bool:
    """Must the cached out-of-fold parts be computed again? Too few repeats, another number of prompts (other
    --data), a head asked for that is not there, or another reading of MT-Bench's second turns (--turn-context:
    a cache of the other reading was read as this one's, its figures reported for it; a cache of before this check
    is of the plain reading)."""
    if not parts:
        return True
    return (parts["fold"].shape[0] < repeats or parts["fold"].shape[1] != prompts
            or (scaled and "head_scaled" not in parts) or (large_head and "head_large" not in parts)
            or bool(parts.get("turn_context", False)) != turn_context)


def main() -> None:
    warnings.filterwarnings("ignore", category=UserWarning)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model-routing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--variants", default="rank:0.5,head,near,ngram",
                    help="comma-separated routers from the out-of-fold parts: rank:b[:K], head, near[K], ngram")
    ap.add_argument("--questions", type=int, default=22, help="also: how held-out splits of this many MT-Bench "
                    "questions, drawn from the training questions, read for the first variant (0: not)")
    ap.add_argument("--scaled", action="store_true", help="also fit the gain head on per-benchmark standardised "
                    "gains (variants scaled-head, scaled-rank:b[:K])")
    ap.add_argument("--large-head", action="store_true", help="also fit the large model's quality head (variant "
                    "cap:b_near:b_large[:K]: its rank blended in, so prompts the large model is expected to fail too "
                    "rank lower)")
    ap.add_argument("--turn-context", action="store_true", help="read MT-Bench's second turns after their first, "
                    "as the trainer's --turn-context (a cache of the other reading is computed again: keep both with --cache)")
    ap.add_argument("--cache", type=Path, default=Path("out/cv_right_size_levels.npz"))
    args = ap.parse_args()
    data, source, kinds = load(args.data, args.turn_context)
    print("training data (test split not read): " + ", ".join(f"{n} {np.sum(source == n)}" for n in FILES),
          file=sys.stderr)
    parts: dict[str, np.ndarray] = {}
    if args.cache.exists():
        with np.load(args.cache) as z:
            parts = {k: z[k] for k in z.files}
    if stale(parts, args.repeats, len(data), args.scaled, args.large_head, args.turn_context):
        parts = compute(data, source, args.repeats, args.scaled, args.large_head)
        args.cache.parent.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, Any] = {**parts, "turn_context": np.array(args.turn_context)}
        np.savez_compressed(args.cache, **arrays)
    parts = {k: v[:args.repeats] for k, v in parts.items() if k != "turn_context"}
    parts["choices"] = np.array([dense_features(p)[DENSE_NAMES.index("choices")] for p in data.prompts])
    report(parts, data, source, kinds, args.variants.split(","))
    if args.questions:
        subsamples(parts, data, source, args.variants.split(",")[0], args.questions)


if __name__ == "__main__":
    main()
