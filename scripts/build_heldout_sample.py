"""Rebuild data/model-routing/heldout_sample.csv: labelled prompts the simulator's right-sized tenants draw.

    python scripts/build_heldout_sample.py --data ../shared/data/model-routing

Only the fixed held-out test split (aigrid.rightsize.routing_data.split_of; the shipped estimate never saw
it): 1,000 MMLU questions drawn at random (seed 0) from the 11 test subjects, and every GSM8K test problem.
Columns: subject (MMLU's; empty for GSM8K, whose split is by prompt), prompt, and whether the mid-size
(Mixtral-8x7B-Instruct) and the large (gpt-4-1106-preview) model answered correctly.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from aigrid.rightsize.routing_data import read_routing_csv, split_mask

OUT = Path(__file__).resolve().parents[1] / "data" / "model-routing" / "heldout_sample.csv"
MMLU_ROWS = 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True, help="the model-routing directory")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows: list[tuple[str, str, int, int]] = []
    mmlu = read_routing_csv(args.data / "mmlu_mixtral_vs_gpt4.csv")
    test = np.flatnonzero(split_mask(mmlu, "test"))
    pick = np.sort(np.random.default_rng(0).choice(test, size=min(MMLU_ROWS, len(test)), replace=False))
    rows += [(mmlu.groups[i], mmlu.prompts[i], int(mmlu.small[i]), int(mmlu.large[i])) for i in pick]
    gsm = read_routing_csv(args.data / "gsm8k_mixtral_vs_gpt4.csv")
    rows += [("", gsm.prompts[i], int(gsm.small[i]), int(gsm.large[i])) for i in np.flatnonzero(split_mask(gsm, "test"))]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["subject", "prompt", "mixtral_8x7b_instruct_correct", "gpt_4_1106_preview_correct"])
        w.writerows(rows)
    print(f"wrote {args.out}: {len(pick)} MMLU + {len(rows) - len(pick)} GSM8K test-split prompts")


if __name__ == "__main__":
    main()
