"""Rebuild the prompt-injection classifier shipped in src/aigrid/security/firewall/.

    .venv/bin/python scripts/train_firewall.py [--data ../shared/data/firewall-dev] [--out PATH] [--report]

Training-only dependencies: scikit-learn, scipy, pyarrow (to read parquet). The shipped artefact loads with
the standard library alone (see aigrid.security.firewall.injection).

Data: s-labs and neuralchemy train splits, 80% of yanismiraoui (a stable hash split; the other 20% is held
out), plus hand-written harmless prompts that use trigger words ("ignore", "system", "password", ...), so
the model learns that these words alone are not an attack. The threshold is chosen on the validation
splits: the flag threshold allows a false-positive rate of --max-fpr there, the block threshold of
--max-block-fpr. The test splits and the harmless prompts are only scored, never used to choose anything.
"""

from __future__ import annotations

import argparse
import csv
import json
import zlib
from array import array
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.sparse import csr_matrix
from sklearn.linear_model import LogisticRegression

from aigrid.security.firewall.features import featurise
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel

DIM = 1 << 18
Rows = list[tuple[str, int]]

# Harmless prompts that merely contain trigger words. The held-out set in tests/security/harmless_prompts.txt
# uses other phrasings and is never trained on.
_HARD_NEGATIVE_FRAMES = [
    "How do I make git ignore {}?", "Is it safe to ignore {}?", "Can I ignore {} when I file my taxes?",
    "Please ignore the typo in my last message, I meant {}.", "What happens if I ignore {}?",
    "Explain how the {} system works.", "What is the best way to design a {} system?",
    "My {} system keeps crashing, how do I debug it?", "Write a short essay about the {} system.",
    "I forgot the password for {}, how do I reset it?", "How do I store a {} password securely?",
    "What makes a good password for {}?", "How often should I change the password of {}?",
    "What should a password policy for {} say?", "Summarise the previous chapter about {}.",
    "Translate the instructions for {} into French.", "What are the instructions for assembling {}?",
    "Act as a tutor and explain {} simply.", "Pretend you are a tour guide and describe {}.",
    "How do I override the default settings of {}?", "How do I bypass the cache when testing {}?",
    "What does the admin panel of {} let me do?", "What are the rules for {}?",
    "Write the rules of a board game about {}.", "What is the company policy on {}?",
    "Reveal the answer to the riddle about {} after I guess.", "Keep {} secret from my sister: gift ideas?",
    "What is the secret to good {}?", "Write a system prompt for a chatbot that answers questions about {}.",
    "You are an expert in {}. What are common beginner mistakes?", "Forget {}, what else can I cook tonight?",
    "Disregard {} and give me the simplest explanation.", "New instructions for {}: where can I find them?",
]
_HARD_NEGATIVE_FILLERS = [
    "node_modules", "the build folder", "compiler warnings", "the solar", "immune", "file", "booking",
    "my router", "the wifi", "a database", "a small business", "the nervous", "heating", "my email account",
    "a laptop", "the linux", "the payroll", "a bookshelf", "the Roman Empire", "CSS", "the school library",
    "volleyball", "parking", "expense reports", "pasta", "photosynthesis", "a bank account",
]


def hard_negatives() -> Rows:
    return [(f.format(x), 0) for f in _HARD_NEGATIVE_FRAMES for x in _HARD_NEGATIVE_FILLERS]


def read_csv(path: Path) -> Rows:
    with path.open(newline="", encoding="utf-8") as f:
        return [(r["text"], int(r["label"])) for r in csv.DictReader(f)]


def read_parquet(path: Path) -> Rows:
    return [(r["text"], int(r["label"])) for r in pq.read_table(path, columns=["text", "label"]).to_pylist()]


def read_attacks(path: Path, held_out: bool) -> Rows:
    with path.open(newline="", encoding="utf-8") as f:
        texts = [r["prompt_injections"] for r in csv.DictReader(f)]
    return [(t, 1) for t in texts if (zlib.crc32(t.encode()) % 5 == 0) == held_out]


def splits(data: Path) -> dict[str, dict[str, Rows]]:
    return {
        "train": {"s-labs": read_csv(data / "s-labs/train.csv"),
                  "neuralchemy": read_parquet(data / "neuralchemy/core-train.parquet"),
                  "yanismiraoui": read_attacks(data / "yanismiraoui/prompt_injections.csv", held_out=False),
                  "hard-negatives": hard_negatives()},
        "validation": {"s-labs": read_csv(data / "s-labs/validation.csv"),
                       "neuralchemy": read_parquet(data / "neuralchemy/core-validation.parquet")},
        "test": {"s-labs": read_csv(data / "s-labs/test.csv"),
                 "neuralchemy": read_parquet(data / "neuralchemy/core-test.parquet"),
                 "yanismiraoui (20% held out)": read_attacks(data / "yanismiraoui/prompt_injections.csv", True)},
    }


def matrix(rows: Rows) -> csr_matrix:
    indptr: list[int] = [0]
    indices: list[int] = []
    values: list[float] = []
    for text, _ in rows:
        feats = featurise(text, DIM)
        indices.extend(feats.keys())
        values.extend(feats.values())
        indptr.append(len(indices))
    return csr_matrix((np.array(values, dtype=np.float32), indices, indptr), shape=(len(rows), DIM))


def metrics(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict[str, float]:
    pred = scores >= threshold
    tp, fp = int((pred & (labels == 1)).sum()), int((pred & (labels == 0)).sum())
    fn, tn = int((~pred & (labels == 1)).sum()), int((~pred & (labels == 0)).sum())
    return {"n": len(labels), "precision": tp / (tp + fp) if tp + fp else float("nan"),
            "recall": tp / (tp + fn) if tp + fn else float("nan"),
            "fpr": fp / (fp + tn) if fp + tn else float("nan")}


def pick_threshold(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> float:
    negatives = np.sort(scores[labels == 0])
    k = int(np.floor(max_fpr * len(negatives)))
    return float(max(0.5, negatives[len(negatives) - 1 - k] + 1e-6)) if len(negatives) else 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--out", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--c", type=float, default=4.0, help="inverse regularisation strength")
    parser.add_argument("--harmless", type=Path, default=Path("tests/security/harmless_prompts.txt"),
                        help="held-out harmless prompts with trigger words: false positives are reported")
    parser.add_argument("--max-fpr", type=float, default=0.01, help="validation false-positive rate for flagging")
    parser.add_argument("--max-block-fpr", type=float, default=0.0025,
                        help="validation false-positive rate for blocking (the stricter operating point)")
    args = parser.parse_args()

    data = splits(args.data)
    train = [row for rows in data["train"].values() for row in rows]
    model = LogisticRegression(C=args.c, solver="liblinear", class_weight="balanced", max_iter=2000,
                               random_state=0)
    model.fit(matrix(train), np.array([label for _, label in train]))

    def score(rows: Rows) -> tuple[np.ndarray, np.ndarray]:
        return model.predict_proba(matrix(rows))[:, 1], np.array([label for _, label in rows])

    val = [row for rows in data["validation"].values() for row in rows]
    val_scores = score(val)
    threshold = pick_threshold(*val_scores, args.max_fpr)
    block_threshold = max(threshold, pick_threshold(*val_scores, args.max_block_fpr))
    evaluated = {split: dict(data[split]) for split in ("validation", "test")}
    if args.harmless.exists():
        evaluated["test"]["harmless trigger-word prompts"] = [
            (line, 0) for line in args.harmless.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]
    report: dict[str, dict[str, dict[str, float]]] = {}
    for split, sets in evaluated.items():
        for name, rows in sets.items():
            scores, labels = score(rows)
            report[f"{split} / flag"] = dict(report.get(f"{split} / flag", {}), **{name: metrics(scores, labels, threshold)})
            report[f"{split} / block"] = dict(report.get(f"{split} / block", {}),
                                              **{name: metrics(scores, labels, block_threshold)})
    weights = array("f", model.coef_[0].astype(np.float32).tolist())
    meta = {"trained_on": sorted(data["train"]), "c": args.c, "max_fpr": args.max_fpr,
            "block_threshold": block_threshold, "report": report}
    InjectionModel(weights, float(model.intercept_[0]), threshold, DIM, meta).save(args.out)
    print(json.dumps({"threshold": threshold, "block_threshold": block_threshold, **report}, indent=2))


if __name__ == "__main__":
    main()
