"""CPU per audit record: typical request records appended through the real writer (AuditLog: its queue, its task,
its store thread, SQLite, the hash chain, the head file and the signed checkpoints) into a temporary folder, at a
gateway's pace, on uvloop as the gateway runs.

    .venv/bin/python scripts/bench_audit_append.py [--n 1500] [--rate 150] [--runs 5] [--profile]

CPU is `time.process_time` (every thread of the process, user + system), best of --runs:
- `encode`: AuditRecord.body() alone (what append() costs the request, before the queue), a tight loop;
- `writer`: a paced run (--rate records a second, in 10 ms ticks; 0: all at once) of --n records through the log
  (start, appends, flush, stop), less the same paced loop with a sink that only encodes: the queue, the writer task,
  its thread hand-offs, the chain's hashes, the inserts and commits, the head file and the checkpoints, per record.
At a gateway's rate the writer's lingering batch holds rate x linger_s records (~8 at 150/s), so per-batch costs (a
commit's fsync, the head file's signature and fsync) count as much as per-record ones.

Before/after a change of src/aigrid/audit/ alone: `--audit-src DIR` loads the package aigrid.audit from DIR (e.g.
`mkdir -p /tmp/au_old && git archive HEAD src/aigrid/audit | tar -x -C /tmp/au_old` then
`--audit-src /tmp/au_old/src/aigrid/audit`), the rest of aigrid from this tree; run old and new alternately.
`--profile`: a cProfile of one paced run, the event loop's thread and the store's thread apart.
The folder is under --dir (default: the working directory, the disk a gateway's .aigrid/ is on; /tmp may differ).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _load(audit_src: str | None) -> tuple[Any, Any, Any]:
    if audit_src:
        import aigrid.audit
        aigrid.audit.__path__[:] = [audit_src]  # its submodules from there, the rest of aigrid from this tree
    import aigrid.audit.log as log_module
    from aigrid.audit.log import AuditLog
    from aigrid.audit.record import AuditRecord
    from aigrid.audit.verify import verify
    print(f"aigrid.audit from {Path(log_module.__file__).parent}")
    return AuditLog, AuditRecord, verify


def _records(record_cls: Any, n: int) -> list[Any]:
    """n records shaped like the harness's streamed requests (~1 KB of body: two candidates, the abuse note)."""
    scores = {"affinity": 0.703095, "cost": 1.0, "headroom": 0.980469, "proximity": 1.0, "ttft": 0.959504}
    out = []
    for i in range(n):
        decision = {
            "policy": "balanced",
            "reason": f"chose emu{i % 2} at s{i % 2} (EU): total 0.938, predicted TTFT {80 + i % 9} ms; strongest axes "
                      "cost 1.00, proximity 1.00",
            "chosen": {"endpoint": f"emu{i % 2}", "site": f"s{i % 2}", "jurisdiction": "EU", "model": "emulated",
                       "total": 0.938361},
            "candidates": [{"endpoint": f"emu{k}", "site": f"s{k}", "jurisdiction": "EU", "total": 0.938361 - k / 1000,
                            "scores": dict(scores)} for k in range(2)],
            "candidates_total": 2, "rejected": {}}
        extra = {"route": "/v1/chat/completions", "abuse": {"action": "flag", "check": "abuse", "detail": "volume",
                                                            "message": f"{i} requests in the window (this process)",
                                                            "score": None},
                 "urgency": {"deadline_ms": None, "priority": "standard", "queued_ms": 0.0}, "cost_usd": 0.0}
        out.append(record_cls(ts=1796602714.2148485 + i / 100, request_id=f"dec-{i:016x}", tenant="default",
                              key_id="anonymous", model="emulated", decision=decision, firewall=[], outcome="ok",
                              prompt_tokens=32, completion_tokens=28, prompt_hmac="f65f151dc17e3441" * 4, extra=extra))
    return out


class _EncodeOnly:
    """The pacing loop's baseline: what append() costs before the queue (the record's encoding), nothing else."""

    async def append(self, record: Any, timeout: float | None = None) -> None:
        record.body().encode("utf-8")


async def _paced(sink: Any, records: list[Any], rate: float) -> None:
    """Append the records at `rate` a second by the clock (in 10 ms ticks, as many as are due at each: a loaded
    machine's late ticks do not slow the rate down), or all at once (rate 0)."""
    if rate <= 0:
        for r in records:
            await sink.append(r, timeout=2.0)
        return
    started, i = time.monotonic(), 0
    while i < len(records):
        due = min(len(records), int((time.monotonic() - started) * rate) + 1)
        while i < due:
            await sink.append(records[i], timeout=2.0)
            i += 1
        await asyncio.sleep(0.01)


async def _writer_run(log_cls: Any, records: list[Any], rate: float, folder: Path, key: Any,
                      profile: bool, linger: float | None = None) -> tuple[float, float, int, float, Any]:
    log = log_cls(folder / "audit.db", key, **({} if linger is None else {"linger_s": linger}))
    profiles: tuple[cProfile.Profile, cProfile.Profile] | None = None
    if profile:
        profiles = (cProfile.Profile(), cProfile.Profile())
    cpu, wall = time.process_time(), time.perf_counter()
    await log.start()
    if profiles is not None:
        await log._thread.call(profiles[1].enable)  # the store's one thread, profiled until disabled below
        profiles[0].enable()
    thread_cpu = await log._thread.call(time.thread_time)
    await _paced(log, records, rate)
    await log.flush()
    thread_cpu = await log._thread.call(time.thread_time) - thread_cpu
    if profiles is not None:
        profiles[0].disable()
        await log._thread.call(profiles[1].disable)
    written = log.store.last_seq  # to check that none was lost
    await log.stop()
    return time.process_time() - cpu, time.perf_counter() - wall, written, thread_cpu, profiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--rate", type=float, default=150.0, help="records a second (0: all at once)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--audit-src", default=None)
    ap.add_argument("--dir", default=".")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--linger", type=float, default=None, help="the writer's linger_s (default: AuditLog's own)")
    args = ap.parse_args()
    import uvloop
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    log_cls, record_cls, verify = _load(args.audit_src)
    key = Ed25519PrivateKey.generate()
    records = _records(record_cls, args.n)
    print(f"{args.n} records, {sum(len(r.body()) for r in records) / args.n:.0f} bytes of body each, "
          f"rate {args.rate:g}/s, linger {'default' if args.linger is None else args.linger} s, best of {args.runs}; load {Path('/proc/loadavg').read_text().split()[:3]}")

    best_encode = float("inf")
    for _ in range(args.runs):
        cpu = time.process_time()
        for r in records:
            r.body().encode("utf-8")
        best_encode = min(best_encode, time.process_time() - cpu)

    base, writer, wall, in_thread, system = float("inf"), float("inf"), 0.0, 0.0, 0.0
    for _ in range(args.runs):
        cpu = time.process_time()
        uvloop.run(_paced(_EncodeOnly(), records, args.rate))
        base = min(base, time.process_time() - cpu)
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-audit-") as folder:
            before = os.times()
            spent, took, written, thread_cpu, _ = uvloop.run(_writer_run(log_cls, records, args.rate, Path(folder),
                                                                         key, False, args.linger))
            after = os.times()
            report = verify(Path(folder) / "audit.db", key.public_key())
            if written != args.n or not report.ok:
                sys.exit(f"the log does not hold the {args.n} records whole: {written} written, {report.problems}")
        if spent < writer:
            writer, wall, in_thread, system = spent, took, thread_cpu, after.system - before.system
    print(f"encode (body()): {1e6 * best_encode / args.n:.1f} us CPU a record")
    print(f"writer (queue, task, thread, chain, SQLite, head, checkpoints): "
          f"{1e6 * (writer - base) / args.n:.1f} us CPU a record "
          f"(paced run {1e3 * writer:.0f} ms CPU in {wall:.1f} s, less the pacing loop's {1e3 * base:.0f} ms); "
          f"of the paced run, the store's thread {1e6 * in_thread / args.n:.1f} us a record and the system "
          f"(kernel) {1e6 * system / args.n:.1f} us a record")
    print(f"load after: {Path('/proc/loadavg').read_text().split()[:3]}")

    if args.profile:
        with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-audit-") as folder:
            _, _, _, _, profiles = uvloop.run(_writer_run(log_cls, records, args.rate, Path(folder), key, True,
                                                          args.linger))
        for name, prof in zip(("event loop thread", "store thread"), profiles, strict=True):
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(18)
            print(f"--- cProfile, {name} (tottime) ---")
            print("\n".join(line for line in out.getvalue().splitlines()[4:] if line.strip()))


if __name__ == "__main__":
    main()
