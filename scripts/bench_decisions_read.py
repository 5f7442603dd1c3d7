"""What hiding the engines' addresses costs a `GET /v1/decisions?limit=1000` that is not an operator's (a tenant's key,
or any caller of a grid without keys): the read's own loop, routes.recent_decisions's
`[names.decision(r, servable) for r in records]`, over `--decisions` records of the shape DecisionRecord.to_dict()
writes, each with `--rejections` rejections (an unhealthy endpoint whose reason is its engine's connect error, an open
circuit, a full queue with its count, another model) and, for every `--failed-every`th, `--attempts` failed attempts
(engines' connect errors, refusals, cuts) on a grid of `--endpoints` engines (seeded). Prints ms per read, best and
median of `--reads`: `local` reads the same records each time (the worker's own log hands the same strings), `hub`
decodes them from JSON before each read (new strings each time, as the workers' hub answers), and `first` is the
first read on a fresh EngineNames. A benchmark that prints figures, never a timed assertion.

    .venv/bin/python scripts/bench_decisions_read.py --decisions 1000 --reads 7
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aigrid.gateway.engine_names import EngineNames  # noqa: E402

MODELS = ("smollm2-135m", "qwen2.5-1.5b", "llama3.1-8b")
ERRORS = (
    "{kind} engine at {url}: ConnectError: [Errno 111] Connection refused",
    "{kind} engine at {url}: ConnectError: All connection attempts failed",
    "{kind} engine at {url}: ReadTimeout: timed out after 30.0 s",
    "refused: {kind} engine at {url} answered 503: {{\"error\":{{\"message\":\"Loading model\","
    "\"type\":\"unavailable_error\",\"code\":503}}}}",
    "cut: RemoteProtocolError",
    "{kind} engine at {url}: cannot connect to {host}: [Errno 113] No route to host",
)


class _Engine:
    """What EngineNames reads of an engine: its base URL."""

    def __init__(self, kind: str, base_url: str) -> None:
        self.kind, self.base_url = kind, base_url


def grid(endpoints: int) -> dict[str, _Engine]:
    return {f"ep{i:02d}": _Engine("vllm" if i % 2 else "llamacpp", f"http://10.0.{i // 4}.{10 + i % 4}:{8000 + i % 3}")
            for i in range(endpoints)}


def engine_error(rng: random.Random, engine: _Engine) -> str:
    host = engine.base_url.split("//", 1)[1]
    return rng.choice(ERRORS).format(kind=engine.kind, url=engine.base_url, host=host)


def decisions(args: argparse.Namespace, engines: dict[str, _Engine]) -> list[dict[str, Any]]:
    rng = random.Random(7)
    ids = sorted(engines)
    out: list[dict[str, Any]] = []
    for n in range(args.decisions):
        picked = rng.sample(ids, min(len(ids), args.rejections + args.attempts + 1))
        rejected = []
        for eid in picked[:args.rejections]:
            kind = rng.randrange(4)
            reason = ("unhealthy: " + engine_error(rng, engines[eid]) if kind == 0
                      else "circuit breaker open after recent failures" if kind == 1
                      else f"queue full ({rng.randrange(8, 40)} waiting, limit 8)" if kind == 2
                      else f"serves {rng.choice(MODELS)}, not {MODELS[0]}")
            rejected.append({"endpoint": eid, "site": f"s{int(eid[2:]) // 4}",
                             "filter": ("health", "health", "capacity", "model")[kind], "reason": reason})
        failed = args.failed_every > 0 and n % args.failed_every == 0
        tried = picked[args.rejections:args.rejections + (args.attempts if failed else 0)]
        attempts = [{"endpoint": eid, "ok": False, "error": engine_error(rng, engines[eid]), "ms": 12.5}
                    for eid in tried]
        served = picked[-1]
        attempts.append({"endpoint": served, "ok": True, "ms": 80.1})
        out.append({"id": f"dec-{n:016x}", "policy": "balanced", "reason": "best score", "chosen": served,
                    "model_choice": None, "urgency": None, "candidates": [], "rejected": rejected,
                    "at": 1.0e9 + n, "tenant": "default", "model": MODELS[0], "client": None,
                    "attempts": attempts, "served_by": served, "ttft_ms": 80.1, "status": "ok"})
    return out


def read(names: EngineNames, records: list[dict[str, Any]], servable: dict[str, Any]) -> float:
    started = time.perf_counter()
    [names.decision(r, servable) for r in records]
    return time.perf_counter() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--decisions", type=int, default=1000, help="records a read answers (the API's limit is 1000)")
    ap.add_argument("--endpoints", type=int, default=12)
    ap.add_argument("--rejections", type=int, default=4, help="rejections per decision")
    ap.add_argument("--attempts", type=int, default=3, help="failed attempts of a decision that has any")
    ap.add_argument("--failed-every", type=int, default=1, help="every Nth decision has failed attempts (0: none)")
    ap.add_argument("--reads", type=int, default=7)
    args = ap.parse_args()
    engines = grid(args.endpoints)
    records = decisions(args, engines)
    texts = {r["reason"] for d in records for r in d["rejected"]} | {a["error"] for d in records
                                                                     for a in d["attempts"] if "error" in a}
    print(f"{len(records)} decisions, {sum(len(d['rejected']) for d in records)} rejections, "
          f"{sum('error' in a for d in records for a in d['attempts'])} failed attempts, "
          f"{len(texts)} distinct texts, {len(engines)} engines")
    encoded = orjson.dumps(records)
    first = read(EngineNames(engines), records, engines)  # type: ignore[arg-type]
    names = EngineNames(engines)  # type: ignore[arg-type]
    local = [read(names, records, engines) for _ in range(args.reads)]
    hub = [read(names, orjson.loads(encoded), engines) for _ in range(args.reads)]
    for label, took in (("first", [first]), ("local", local), ("hub", hub)):
        print(f"{label:>5}: best {min(took) * 1000:8.2f} ms, median {statistics.median(took) * 1000:8.2f} ms a read "
              f"({len(took)} reads; {min(took) / len(records) * 1e6:.1f} us a decision at best)")


if __name__ == "__main__":
    main()
