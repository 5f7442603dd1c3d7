#!/usr/bin/env python3
"""Cost of the per-prompt quality estimate on one core: load time, and per-prompt latency percentiles over
real prompts (MMLU, GSM8K, MT-Bench from ../shared/data/model-routing), the way the gateway calls it.
Wall time (what a request waits) and CPU time of the calling thread (steadier on a shared machine), with the
tokenizer's word cache warm (a gateway that has served a while) and cold (cleared before every prompt).
Where Hugging Face `tokenizers` is installed (the `embeddings` extra), also aigrid's WordPiece against it on the
same prompts: the time per prompt and whether the tokens are identical (why wordpiece.py is hand-written).
Usage: taskset -c 1 python scripts/bench_quality_estimate.py [--data DIR] [--n 3000]"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.features import prompt_features
from aigrid.rightsize.routing_data import read_routing_csv
from aigrid.rightsize.static_embedding import clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/model-routing")
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    t = time.perf_counter()
    est = QualityEstimator.load()
    load_ms = (time.perf_counter() - t) * 1000
    prompts: list[str] = []
    for name in ("mmlu_mixtral_vs_gpt4.csv", "gsm8k_mixtral_vs_gpt4.csv", "mt_bench_mixtral_vs_gpt4.csv"):
        prompts += read_routing_csv(args.data / name).prompts
    rng = np.random.default_rng(0)
    sample = [prompts[i] for i in rng.choice(len(prompts), min(args.n, len(prompts)), replace=False)]
    long = "Summarise this document.\n" + " ".join(sample[:200])  # a long prompt: only 4,000 chars are read
    for p in sample:
        est.estimate(p)  # warm-up: the word cache fills
    chars = np.array([len(p) for p in sample])
    print(f"cpus allowed: {sorted(os.sched_getaffinity(0))}; load {load_ms:.1f} ms; "
          f"{len(sample)} prompts, median {int(np.median(chars))} chars; load average {os.getloadavg()[0]:.1f}")
    for cache in ("warm", "cold"):
        wall, cpu = [], []
        for p in sample:
            if cache == "cold":
                est.embedding.tokenizer.clear_cache()
            t, c = time.perf_counter_ns(), time.thread_time_ns()
            est.estimate(p)
            cpu.append((time.thread_time_ns() - c) / 1e6)
            wall.append((time.perf_counter_ns() - t) / 1e6)
        ms = np.array(wall)
        print(f"{cache} word cache: wall p50 {np.percentile(ms, 50):.3f} ms, p90 {np.percentile(ms, 90):.3f} ms, "
              f"p99 {np.percentile(ms, 99):.3f} ms, mean {ms.mean():.3f} ms; CPU mean {np.mean(cpu):.3f} ms")
    est.estimate(long)
    t, c = time.perf_counter_ns(), time.thread_time_ns()
    for _ in range(50):
        est.estimate(long)
    print(f"a {len(long):,}-character prompt (warm): wall {(time.perf_counter_ns() - t) / 1e6 / 50:.3f} ms, "
          f"CPU {(time.thread_time_ns() - c) / 1e6 / 50:.3f} ms")
    if est.neighbours is not None:
        vectors = [est.embedding.vector(p) for p in sample]
        c = time.thread_time_ns()
        for v in vectors:
            est.neighbours.score(v)
        print(f"of which the neighbour score ({len(est.neighbours.won):,} labelled vectors, k = {est.neighbours.k}): "
              f"CPU {(time.thread_time_ns() - c) / 1e6 / len(vectors):.3f} ms")
    if est.judged is not None:  # the prior of MT-Bench-like prompts: the gate on every prompt, the prior on gated ones
        mt = read_routing_csv(args.data / "mt_bench_mixtral_vs_gpt4.csv").prompts
        for name, group in (("the sample", sample), ("MT-Bench", mt)):
            xs = [prompt_features(p, est.embedding, est.ngram) for p in group]
            gated = int(sum(est.judged.gated(x[None, :])[0] for x in xs))
            c = time.thread_time_ns()
            for x in xs:
                est.judged.adjust_one(0.0, x, est.embedding.dimensions)
            print(f"of which the judged prior on {name} ({gated} of {len(xs)} gated, table of "
                  f"{len(est.judged.gains)}, k = {est.judged.k}): CPU {(time.thread_time_ns() - c) / 1e3 / len(xs):.1f} us")
    against_tokenizers(est, [clip(p) for p in sample])


def against_tokenizers(est: QualityEstimator, prompts: list[str]) -> None:
    try:
        from tokenizers import BertWordPieceTokenizer
    except ImportError:
        print("tokenizers is not installed: WordPiece comparison skipped")
        return
    ours = est.embedding.tokenizer
    vocab = {t: i for t, i in ours.ids.items()}
    hf = BertWordPieceTokenizer(vocab, lowercase=True, strip_accents=True, clean_text=True, handle_chinese_chars=True)
    for name, encode in (("aigrid wordpiece, cold word cache", lambda p: (ours.clear_cache(), ours.encode(p))[1]),
                         ("aigrid wordpiece, warm word cache", ours.encode),
                         ("tokenizers (Rust), one call per prompt", lambda p: hf.encode(p, add_special_tokens=False).ids)):
        c = time.thread_time_ns()
        for p in prompts:
            encode(p)
        print(f"{name}: {(time.thread_time_ns() - c) / 1e3 / len(prompts):.0f} us CPU per prompt")
    same = sum(ours.encode(p) == hf.encode(p, add_special_tokens=False).ids for p in prompts)
    print(f"identical tokens: {same} of {len(prompts)} prompts")


if __name__ == "__main__":
    main()
