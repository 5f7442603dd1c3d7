"""Rebuild the prompt-injection classifier shipped in src/aigrid/security/firewall/.

    .venv/bin/python scripts/train_firewall.py [--data ../shared/data/firewall-dev] [--out PATH]
    .venv/bin/python scripts/eval_firewall.py          # held-out recall and false positives per family

Training-only dependencies: scikit-learn, scipy, pyarrow (the `train` extra). The shipped artefact loads
with the standard library and numpy (aigrid.security.firewall.injection).

Data (scripts/firewall_data.py): the train splits of s-labs, neuralchemy and yanismiraoui; hand-written
harmless prompts with trigger words and role-play openings (train frames only); ordinary questions (MMLU,
GSM8K, MT-Bench except writing and role-play); and documents: windows of the train e-mails and code
contexts of BIPIA, clean, and with attacks hidden in them (BIPIA attacks of the train categories, and the
train attacks of the other sets), so the model learns instructions addressed to the assistant inside data.
Operating points are chosen on the validation splits only: for prompts, a flag threshold at --max-fpr and a
block threshold at --max-block-fpr false positives; for documents the same on validation documents. The test
splits are never used to train or choose anything (scripts/eval_firewall.py reads them).
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
from firewall_data import (  # noqa: E402
    Corpus,
    Rows,
    benign_windows,
    documents_with_attacks,
    indirect_instructions,
    pseudo_documents,
    role_prompts,
    trigger_prompts,
)

from aigrid.security.firewall.features import buckets  # noqa: E402
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel  # noqa: E402

DIM = 1 << 18


def training_rows(c: Corpus, rng: random.Random) -> dict[str, Rows]:
    attacks = [t for t, y in c.slabs["train"] + c.neural_rows("train") + c.yanis["train"] if y == 1]
    benign = [t for t, y in c.slabs["train"] + c.neural_rows("train") if y == 0] + [t for t, _ in c.ordinary["train"]]
    contexts = c.emails["train"] + c.code["train"] + pseudo_documents(benign, rng, 400)
    data_contexts = contexts
    return {
        "s-labs": c.slabs["train"], "neuralchemy": c.neural_rows("train"), "yanismiraoui": c.yanis["train"],
        "trigger words": trigger_prompts("train"), "role-play": role_prompts("train", rng),
        "ordinary": rng.sample(c.ordinary["train"], min(4000, len(c.ordinary["train"]))),
        "documents, clean": benign_windows(contexts, rng, 4000),
        "documents, BIPIA attacks": documents_with_attacks(contexts, c.bipia_attacks["train"], rng, 1500, True),
        "documents, other attacks": documents_with_attacks(data_contexts, attacks, rng, 1500, True),
        "documents, hand-written indirect": documents_with_attacks(contexts, indirect_instructions("train"), rng,
                                                                   1500, True),
    }


def validation_rows(c: Corpus, rng: random.Random) -> tuple[Rows, Rows]:
    """(prompts, documents) of the validation splits."""
    prompts = (c.slabs["validation"] + c.neural_rows("validation") + c.yanis["validation"]
               + trigger_prompts("validation") + role_prompts("validation", rng)
               + rng.sample(c.ordinary["validation"], min(1500, len(c.ordinary["validation"]))))
    benign = [t for t, y in c.slabs["validation"] + c.neural_rows("validation") if y == 0]
    contexts = c.emails["validation"] + c.code["validation"]
    pseudo = pseudo_documents(benign + [t for t, _ in c.ordinary["validation"]], rng, 300)
    documents = (benign_windows(contexts, rng, 600) + benign_windows(pseudo, rng, 1200) + [(t, 0) for t in contexts]
                 + documents_with_attacks(contexts, c.bipia_attacks["validation"], rng, 300, False)
                 + documents_with_attacks(contexts, indirect_instructions("validation"), rng, 300, False))
    return prompts, documents


def matrix(rows: Rows) -> csr_matrix:
    feats = [buckets(text, DIM) for text, _ in rows]
    indptr = np.cumsum([0] + [len(f) for f in feats])
    indices = np.concatenate(feats) if feats else np.zeros(0, np.int64)
    values = np.concatenate([np.full(len(f), 1 / np.sqrt(len(f)), np.float32) for f in feats if len(f)]
                            or [np.zeros(0, np.float32)])
    return csr_matrix((values, indices, indptr), shape=(len(rows), DIM))


def pick_threshold(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> float:
    negatives = np.sort(scores[labels == 0])
    k = int(np.floor(max_fpr * len(negatives)))
    return float(max(0.5, negatives[len(negatives) - 1 - k] + 1e-6)) if len(negatives) else 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    parser.add_argument("--max-fpr", type=float, default=0.01, help="validation false positives when flagging")
    parser.add_argument("--max-block-fpr", type=float, default=0.0025, help="... when blocking")
    # per WINDOW of a validation document: a document of ~1,000 characters has ~8 windows, so these are about
    # 1.6% and 0.8% per document
    parser.add_argument("--max-doc-fpr", type=float, default=0.002, help="... per document window, flagging")
    parser.add_argument("--max-doc-block-fpr", type=float, default=0.001, help="... per document window, blocking")
    args = parser.parse_args()

    corpus = Corpus(args.data, args.routing)
    rng = random.Random(12)
    sets = training_rows(corpus, rng)
    train = [row for rows in sets.values() for row in rows]
    clf = LogisticRegression(C=args.c, solver="liblinear", class_weight="balanced", max_iter=3000, random_state=0)
    clf.fit(matrix(train), np.array([y for _, y in train]))
    weights = clf.coef_[0].astype(np.float32)
    model = InjectionModel(weights, float(clf.intercept_[0]), 0.5, DIM, {})

    prompts, documents = validation_rows(corpus, rng)
    p_scores = np.array([model.score(t).probability for t, _ in prompts])
    p_labels = np.array([y for _, y in prompts])
    d_scores = np.array([model.score(t, document=True).probability for t, _ in documents])
    d_labels = np.array([y for _, y in documents])
    flag = pick_threshold(p_scores, p_labels, args.max_fpr)
    meta = {
        "trained_on": {name: len(rows) for name, rows in sets.items()}, "c": args.c,
        "block_threshold": max(flag, pick_threshold(p_scores, p_labels, args.max_block_fpr)),
        "document_threshold": pick_threshold(d_scores, d_labels, args.max_doc_fpr),
        "document_block_threshold": pick_threshold(d_scores, d_labels, args.max_doc_block_fpr),
        "validation": {"prompts": len(prompts), "documents": len(documents)},
    }
    InjectionModel(weights, float(clf.intercept_[0]), flag, DIM, meta).save(args.out)
    print(json.dumps({"threshold": flag, **meta}, indent=2))


if __name__ == "__main__":
    main()
