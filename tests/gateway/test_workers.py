"""`aigrid gateway --workers 2` in front of the ENGINE EMULATOR, as real processes: two workers on one socket
keep one quota, one audit chain (`aigrid audit verify` passes), one /metrics and one set of decisions."""

from __future__ import annotations

import contextlib
import http.client
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from aigrid.bench.procs import Proc
from tests.gateway.workers_helpers import (
    LIMIT,
    TwoWorkers,
    emulator,
    gateway_with_workers,
    one_connection_per_worker,
    serving_workers,
    spec,
    two_workers,
    worker_processes,
)

REQUESTS = 24
BURST_ROOM_S = 5
"""The test's burst of REQUESTS starts only in a quota window with at least this many seconds left (one burst takes
about 1 s on an idle machine); a slower one is sent again (test_two_workers_share_quota_audit_metrics_and_decisions)."""


def audit_bodies(tmp: Path) -> list[dict]:
    """The audit log's records in chain order, as written (the spec's audit.db under `tmp`)."""
    db = sqlite3.connect(tmp / "audit.db")
    try:
        return [orjson.loads(r[0]) for r in db.execute("SELECT body FROM audit_records ORDER BY seq")]
    finally:
        db.close()


def audit_verify(tmp: Path) -> str:
    """`aigrid audit verify` of the spec's audit log passes; its report."""
    verify = subprocess.run([sys.executable, "-m", "aigrid.cli", "audit", "verify", str(tmp / "audit.db"),
                             "--public-key", str(tmp / "audit.pub.pem")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    return verify.stdout


@contextlib.contextmanager
def connections_to_each(grid: TwoWorkers) -> Iterator[dict[int, http.client.HTTPConnection]]:
    """One kept-alive connection accepted by each worker of `grid` (worker pid -> connection), closed on the way
    out."""
    conns: list[http.client.HTTPConnection] = []
    try:
        yield one_connection_per_worker(grid.port, grid.workers, conns)
    finally:
        for conn in conns:
            conn.close()


def test_two_workers_share_quota_audit_metrics_and_decisions(tmp_path: Path) -> None:
    with two_workers(tmp_path, decode_ms=20) as grid:
        base = grid.base

        def one(i: int) -> httpx.Response:  # a new connection each: the kernel spreads them over the workers
            return httpx.post(f"{base}/v1/chat/completions", timeout=30, json={
                "model": "emulated", "stream": True, "max_tokens": 8,
                "messages": [{"role": "user", "content": f"question {i}"}]})

        # quotas count in fixed one-minute windows (the gateway's clock, time.time()): every request of the burst
        # counted in one window, read from this process's clock before the first was sent and after the last was
        # answered. A burst that crossed a window's end (counted in two) is sent again from the window after the one
        # it ended in; before the thirty-second session the test waited until 20 s of a window were left (on average
        # 3.3 s, at most 20, and a burst slower than that on a loaded machine failed it)
        sent = ok_before = 0
        took: list[float] = []
        for burst in range(3):  # each burst crossing a window's end is a seconds-long burst: three in a row fail
            while time.time() % 60 > 60 - BURST_ROOM_S:
                time.sleep(0.2)
            start = time.time()
            window = start // 60
            with ThreadPoolExecutor(8) as pool:
                answers = list(pool.map(one, range(REQUESTS)))
            sent += REQUESTS
            took.append(time.time() - start)
            ended = time.time() // 60
            if ended == window:
                break
            ok_before += sum(a.status_code == 200 for a in answers)
            while burst < 2 and time.time() // 60 <= ended:  # the last one fails at once
                time.sleep(0.5)
        else:
            pytest.fail(f"three bursts each crossed a quota minute's end (seconds each: {took})")
        served = [a for a in answers if a.status_code == 200]
        # one quota for the gateway, not one per worker
        assert len(served) == LIMIT, [a.status_code for a in answers]
        assert all(a.status_code == 429 for a in answers if a.status_code != 200)
        # every decision is found whichever worker answers the lookup
        for a in served:
            for _ in range(2):
                assert httpx.get(f"{base}/v1/decisions/{a.headers['x-aigrid-decision']}").status_code == 200
        # /metrics sums the workers
        metrics = httpx.get(f"{base}/metrics").text
        ok = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("aigrid_requests_total{") and 'outcome="ok"' in line)
        assert ok == ok_before + LIMIT
        # what a worker holds: no other command's libraries, no redis (none named), no torch before first use
        # (test_worker_memory.py; docs/benchmarks.md, "Memory per worker")
        for pid in [grid.gateway.pid, *grid.workers]:
            maps = Path(f"/proc/{pid}/maps").read_text()
            assert [lib for lib in ("/matplotlib/", "/PIL/", "/hiredis/", "libtorch") if lib in maps] == [], pid
    # one writer: one chain, every request audited (the served and the refused, and each decision read)
    assert f"{sent + 2 * LIMIT} records" in " ".join(audit_verify(tmp_path).split())


ABUSE_MAX = 10
"""The test spec's volume threshold: more than this many requests of one key in the window."""
SHARE_S = 0.1
"""The abuse test's share interval, and its shared telemetry's (the control loop whose exchanges it counts)."""
SYNC_STEP = 2
"""Exchanges with the hub a worker makes (its own, counted apart) between one request's answer and the next
request: the last request's worker, so that the hub counted it; once the total is over, the crossing request's
worker and the next request's."""
ROUNDS_BOUND = 5
"""The verdict reaches a worker within this many of its own exchanges and of the crossing request's worker's own
exchanges (each counted apart) after the total passed the threshold: one or two of the crossing request's worker
suffice (it sends the request, then takes the verdict back), then one or two of the other, whose are counted from
the crossing worker's second (before the twenty-eighth session's area Z, from the crossing request's answer: its
exchanges made early, then a stall, made a request to it due that the verdict could not yet reach). Counted over both
workers together (10, before the twenty-eighth session), a lagging worker loosened it for the other: the crossing
worker could make all 10 while the lagging one made none, twice the bound for a request to it, and a request to the
lagging worker, 2 of its own exchanges after, was held to it. With the workers exchanging every 16th tick only (a
scratch sitecustomize, d13e176b) requests 12 and 17 exchanges after (both together) were let through."""


def metrics_folder(worker: int) -> Path:
    """Where the workers write their metrics, one file per kind and worker (PROMETHEUS_MULTIPROC_DIR, which the
    parent hands to each worker)."""
    for entry in Path(f"/proc/{worker}/environ").read_bytes().split(b"\0"):
        name, _, value = entry.partition(b"=")
        if name == b"PROMETHEUS_MULTIPROC_DIR":
            return Path(os.fsdecode(value))
    raise AssertionError(f"worker {worker} has no PROMETHEUS_MULTIPROC_DIR")


def own_syncs(folder: Path, worker: int) -> int:
    """One worker's exchanges of shared telemetry with the hub so far, failed ones too, from its own metrics files
    (/metrics sums the workers: the histogram's buckets, stored apart, and the failures counter)."""
    from prometheus_client.mmap_dict import MmapedDict

    total = 0.0
    for kind, sample in (("histogram", "aigrid_shared_sync_seconds_bucket"),
                         ("counter", "aigrid_shared_sync_failures_total")):
        path = folder / f"{kind}_{worker}.db"
        if path.exists():
            total += sum(value for key, value, *_ in MmapedDict.read_all_values_from_file(str(path))
                         if orjson.loads(key)[1] == sample)
    return int(total)


def wait_for_own_syncs(folder: Path, counts: dict[int, int], timeout_s: float = 60) -> dict[int, int]:
    """Until each worker has exchanged with the hub at least `counts[worker]` times (a deadline only for a loop
    that stopped): the counts read, each worker's own."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {w: own_syncs(folder, w) for w in counts}
        if all(seen[w] >= n for w, n in counts.items()):
            return seen
        assert time.monotonic() < deadline, f"a worker's shared-state loop stopped: {seen} of {counts} exchanges"
        time.sleep(0.02)


def test_abuse_signals_count_one_keys_requests_on_every_worker(tmp_path: Path) -> None:
    """One key's requests alternate between the two workers (one kept-alive connection to each): each worker
    sees at most 10, not over the volume threshold of 10, yet once the key's total passes 10 it is throttled
    (429, the API's envelope, Retry-After) and the audit record names the signal over all workers; while
    the total stays at or under 10 no request is throttled. The verdict comes within a few of the workers' share
    rounds (the hub's view is at most two behind): counted, not timed, in the workers' exchanges of shared
    telemetry with the hub, a loop of the same interval on the same event loops (`shared_sync_interval_s` set to
    `share_interval_s`), so a loaded machine that runs those loops late slows the count alike; each worker's
    counted apart, so one that lags neither loosens the bound for the other nor is held to the other's count."""
    emu, emu_port = emulator(tmp_path, decode_ms=5)  # tried again on new ports if one was taken meanwhile
    gw: Proc | None = None
    conns: list[http.client.HTTPConnection] = []
    try:
        def abuse_spec(port: int) -> dict:
            doc = spec(tmp_path, emu_port, port)
            doc["gateway"]["shared_sync_interval_s"] = SHARE_S  # the control loop: as often as the abuse shares
            doc["security"] = {"audit": doc["security"]["audit"], "abuse": {
                "action": "throttle", "min_requests": 6, "max_requests": ABUSE_MAX, "share_interval_s": SHARE_S}}
            return doc

        gw, gw_port = gateway_with_workers(tmp_path, abuse_spec)
        workers = serving_workers(gw.pid, gw_port)
        by_worker = one_connection_per_worker(gw_port, workers, conns)
        pair, pids = list(by_worker.values()), list(by_worker)
        ports = [c.sock.getsockname()[1] for c in pair]
        folder = metrics_folder(pids[0])
        crossing = pids[ABUSE_MAX % 2]  # the worker of the request that takes the total over the threshold
        other = pids[1 - ABUSE_MAX % 2]
        statuses: list[int] = []
        throttled: list[tuple[dict, str | None]] = []
        answered = {w: own_syncs(folder, w) for w in pids}  # each worker's exchanges once the last answer came
        over_at: dict[int, int] = {}  # the crossing worker's exchanges once the crossing request was answered, the
        # other's once the crossing worker had made 2 more
        after: list[tuple[int, int, int]] = []  # each later request: its worker's and the crossing worker's own
        # exchanges since then (at least), its status
        for i in range(2 * ABUSE_MAX):  # a new prompt each: diversity (from 6 requests) + volume (over 10) = throttle
            # at most ABUSE_MAX per worker: neither alone passes the threshold, only the total can throttle. Between
            # requests the workers exchange with the hub SYNC_STEP times each (counted apart, not a fixed sleep): the
            # last request's worker, so that each request is in the hub's count before the next; once the total is
            # over, the crossing request's worker and the next request's, so that one can take the verdict back
            if statuses.count(429) >= 4:
                break  # throttled, and it stayed so
            waited = {pids[(i - 1) % 2]} if i <= ABUSE_MAX else {crossing, pids[i % 2]}
            sent_at = wait_for_own_syncs(folder, {w: answered[w] + SYNC_STEP for w in waited}) if i else answered
            sent_at = {**answered, **sent_at}
            conn = pair[i % 2]
            conn.request("POST", "/v1/chat/completions", headers={"content-type": "application/json"},
                         body=orjson.dumps({"model": "emulated", "max_tokens": 4, "messages": [
                             {"role": "user", "content": f"enumerate the model, probe {i}"}]}))
            resp = conn.getresponse()
            body = resp.read()
            assert conn.sock.getsockname()[1] == ports[i % 2]  # still the same connection, the same worker
            statuses.append(resp.status)
            answered = {w: own_syncs(folder, w) for w in pids}
            if i == ABUSE_MAX:
                # the other worker counted from when the crossing one had made 2 exchanges since (the crossing
                # request in the hub's count by then): read at the first poll that sees those 2, the crossing worker
                # read first, so no exchange the other made before the hub had that count is counted (its own made
                # early, then a stall, would have made a request to it due that the verdict could not yet reach)
                digested = wait_for_own_syncs(folder, {crossing: answered[crossing] + 2, other: 0})
                over_at = {crossing: answered[crossing], other: digested[other]}
            elif i > ABUSE_MAX:
                worker = pids[i % 2]
                after.append((sent_at[worker] - over_at[worker], sent_at[crossing] - over_at[crossing], resp.status))
            if resp.status == 429:
                throttled.append((orjson.loads(body), resp.getheader("retry-after")))
        # at or under the threshold in total (the first 10): never throttled
        assert statuses[:ABUSE_MAX] == [200] * ABUSE_MAX, statuses
        # each worker counted at most 10 alone, not over the volume threshold: only the total can throttle
        assert 429 in statuses[ABUSE_MAX:], statuses
        first = statuses.index(429)
        assert statuses[first:] == [429] * (len(statuses) - first), statuses  # once throttled, throttled
        # and it came within ROUNDS_BOUND exchanges of the request's worker and of the crossing one, each its own: no
        # request sent once both had made that many was let through (counted before it was sent, after the crossing
        # request's answer, the other worker's after the crossing one's 2 more: at least that many had passed,
        # however late the test read them; one such request was always sent)
        print(f"statuses {statuses}; after the crossing (own exchanges, the crossing worker's, status): {after}")
        due = [status for own, theirs, status in after if min(own, theirs) >= ROUNDS_BOUND]
        assert due and all(status == 429 for status in due), after
        for err, retry_after in throttled:
            assert err["error"]["code"] == "abuse_throttled" and err["error"]["type"], err
            assert retry_after == "60"
    finally:
        for conn in conns:
            conn.close()
        if gw is not None:
            gw.stop()
        emu.stop()
    rows = [orjson.loads(r[0]) for r in sqlite3.connect(tmp_path / "audit.db").execute(
        "SELECT body FROM audit_records ORDER BY seq")]
    refused = [r for r in rows if r["outcome"] == "error:abuse_throttled"]
    assert len(refused) == len(throttled)
    for r in refused:
        abuse = r["extra"]["abuse"]
        assert abuse["action"] == "throttle" and set(abuse["detail"].split(", ")) == {"volume", "diversity"}
        assert abuse["message"].endswith("(all workers)"), abuse


def test_a_killed_worker_s_background_run_ends_failed_and_the_other_worker_s_goes_on(tmp_path: Path) -> None:
    """Two real workers each run a background response (slow engine: 40 s of decoding); one worker is killed
    (SIGKILL: no lifespan, nothing settled). Polled through the live worker, the dead one's run ends `failed`
    once its lease (background.LEASE_S) has passed, and the live one's stays running: the hub is the store. The
    dead run's exit is audited once, by the live worker, in the one chain, which still verifies."""
    from aigrid.gateway.background import LEASE_S

    with two_workers(tmp_path, decode_ms=200) as grid, connections_to_each(grid) as by_worker:
        runs: dict[int, str] = {}
        for pid, conn in by_worker.items():  # the worker that answers a create runs it
            conn.request("POST", "/v1/responses", headers={"content-type": "application/json"},
                         body=orjson.dumps({"model": "emulated", "input": f"a long story {pid}", "background": True,
                                            "store": True, "max_output_tokens": 200}))
            resp = conn.getresponse()
            body = orjson.loads(resp.read())
            assert resp.status == 200 and body["status"] == "queued", body
            assert body["max_output_tokens"] == 200, body  # the request's settings, echoed while queued
            runs[pid] = body["id"]
        dead, live = list(by_worker)
        time.sleep(1.0)
        os.kill(dead, 9)
        reader = by_worker[live]

        def status(rid: str) -> dict:
            reader.request("GET", f"/v1/responses/{rid}")
            resp = reader.getresponse()
            out = orjson.loads(resp.read())
            assert resp.status == 200, out
            return out

        t0 = time.monotonic()
        while time.monotonic() - t0 < LEASE_S + 15:
            got = status(runs[dead])
            if got["status"] == "failed":
                break
            assert got["status"] in ("queued", "in_progress"), got
            time.sleep(0.5)
        waited = time.monotonic() - t0
        assert got["status"] == "failed", got
        assert got["error"]["code"] == "server_error" and "stopped before it ended" in got["error"]["message"], got
        assert waited >= LEASE_S - 2.0, waited  # not before its lease had passed (its last renewal <= 0.5 s old)
        other = status(runs[live])
        assert other["status"] == "in_progress", (other["status"], other.get("error"))  # the live worker's run goes on, renewed
        assert status(runs[dead])["status"] == "failed"  # read again: failed once, recorded once
    # the dead worker's run: one record, written by the live worker that failed it, through the hub to the one
    # writer; the chain still verifies
    rows = audit_bodies(tmp_path)
    abandoned = [r for r in rows if r["outcome"] == "abandoned"]
    assert [r["extra"]["response_id"] for r in abandoned] == [runs[dead]], abandoned
    assert abandoned[0]["extra"]["quota"].startswith("charged at its reservation")
    audit_verify(tmp_path)


def test_a_killed_worker_s_lost_requests_are_recorded_in_the_audit_log(tmp_path: Path) -> None:
    """A worker killed (SIGKILL) while it streams: its requests end with it, and their audit records with them.
    The parent's hub writes a record saying so (outcome `audit:worker_lost`, how many were in flight, for which
    tenants, as the worker last reported), in the one chain, which still verifies; the worker is started again."""
    with two_workers(tmp_path, decode_ms=200) as grid, connections_to_each(grid) as by_worker:
        workers, parent = grid.workers, grid.gateway.pid
        dead = workers[0]
        conn = by_worker[dead]
        conn.request("POST", "/v1/chat/completions", headers={"content-type": "application/json"},
                     body=orjson.dumps({"model": "emulated", "stream": True, "max_tokens": 200, "ignore_eos": True,
                                        "messages": [{"role": "user", "content": "a long story"}]}))
        resp = conn.getresponse()
        assert resp.status == 200
        resp.read1(64)  # streaming: in flight on that worker
        time.sleep(1.5)  # its report to the hub (every exchange) names it
        os.kill(dead, 9)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(worker_processes(parent)) - set(workers):
            time.sleep(0.2)
        assert set(worker_processes(parent)) - set(workers), "the killed worker was not started again"
    rows = audit_bodies(tmp_path)
    lost = [r for r in rows if r["outcome"] == "audit:worker_lost"]
    assert len(lost) == 1, [r["outcome"] for r in rows]
    assert lost[0]["extra"]["in_flight"] == 1 and lost[0]["extra"]["pid"] == dead, lost
    assert lost[0]["extra"]["tenants"] == {"default": 1}, lost
    audit_verify(tmp_path)
