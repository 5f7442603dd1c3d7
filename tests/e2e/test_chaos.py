"""Chaos with real processes: llama.cpp engines, two gateways, Redis. Bounded in count and time.

Each test prints one `CHAOS` line with its figures; docs/reliability.md records them
(`.venv/bin/python -m pytest tests/e2e/test_chaos.py -s -q | grep CHAOS`).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.processes import Proc, engine_pid, start_gateway, start_node, wait_http, write_spec
from tests.engine_support import require_llama_server
from tests.security.redis_server import redis_server

pytestmark = pytest.mark.engine
CHAT = {"model": "smollm2-135m", "stream": True, "max_tokens": 16,
        "messages": [{"role": "user", "content": "Write one sentence about rivers."}]}


def report(name: str, **figures: object) -> None:
    print(f"\nCHAOS {name}: {json.dumps(figures)}")


@pytest.fixture(scope="module")
def started_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[Proc, str]]]:
    """Three `aigrid node` engines for the module's tests (each test starts its own gateways): started once, not
    once a test (three llama-servers loading took most of each test's time)."""
    require_llama_server()
    cwd = tmp_path_factory.mktemp("nodes")
    started: dict[str, tuple[Proc, str]] = {}
    try:
        for site in ("fra", "iad", "nrt"):
            started[site] = start_node(cwd, site)
        yield started
    finally:
        for proc, _ in started.values():
            proc.stop()


@pytest.fixture
def nodes(started_nodes: dict[str, tuple[Proc, str]]) -> dict[str, tuple[Proc, str]]:
    """The module's nodes once each answers /health: an engine a test killed -9 is started again by its node
    (`aigrid node` supervises it) before the next test uses it."""
    for proc, url in started_nodes.values():
        wait_http(url + "/health", timeout_s=120, proc=proc)
    return started_nodes


def stream(base: str, city: str, body: dict = CHAT, on_event=None) -> dict:  # type: ignore[no-untyped-def]
    """One streamed chat completion; returns text, events, headers. Raises httpx errors as they come. `on_event`
    is called with the count of events so far and the response's headers after each event."""
    text, events = [], []
    with httpx.stream("POST", base + "/v1/chat/completions", json=body, timeout=60,
                      headers={"x-aigrid-client-location": city}) as r:
        headers = dict(r.headers)
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            data = line[6:]
            events.append(data)
            if data != "[DONE]":
                obj = json.loads(data)
                for c in obj.get("choices", []):
                    text.append(c["delta"].get("content") or "")
            if on_event is not None:
                on_event(len(events), headers)
    return {"text": "".join(text), "events": events, "headers": headers, "status": r.status_code}


def test_kill9_engine_mid_stream_continues_on_another_site(nodes: dict, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, {s: url for s, (_, url) in nodes.items()})
    gw, base = start_gateway(tmp_path, spec, "a")
    try:
        before: list[str] = []
        killed: list[str] = []

        # the engine of the site the stream went to (nrt mostly; on these CPU engines a near tie, picked at random
        # within the tie, can send Tokyo elsewhere): what is checked is the continuation, not the first choice
        def kill_after_a_few(n: int, headers: dict[str, str]) -> None:
            if n == 6:
                killed.append(headers["x-aigrid-site"])
                os.kill(engine_pid(nodes[killed[0]][0]), 9)

        body = {**CHAT, "max_tokens": 200, "messages": [{"role": "user", "content": "Tell a long story about a river."}]}
        out = stream(base, "Tokyo", body, on_event=kill_after_a_few)
        d = httpx.get(f"{base}/v1/decisions/{out['headers']['x-aigrid-decision']}").json()
        before.append(out["text"][: d["attempts"][-1].get("continuation_after_chars", 0)])
        assert killed == [out["headers"]["x-aigrid-site"]]
        assert out["events"][-1] == "[DONE]" and not any('"error"' in e for e in out["events"])
        assert d["served_by"].startswith(f"{killed[0]}-smollm2 -> "), d
        prefix = before[0]
        assert len(prefix) > 0 and out["text"].startswith(prefix)
        if len(prefix) >= 12:  # the continuation did not start by repeating what was sent (llama.cpp's echo of
            # the prefilled turn); counting the prefix in the whole text failed when SmolLM2 looped on a phrase
            # ("The river was a river of dreams. ... The river was a river ...": 11 times, no echo)
            assert not out["text"][len(prefix):].lstrip().startswith(prefix.strip())
        ids = {json.loads(e)["id"] for e in out["events"] if e != "[DONE]"}
        assert len(ids) == 1
        report("engine-kill-mid-stream", streams=1, lost=0, duplicated_text=0,
               continued_on=d["served_by"].split(" -> ")[1], chars_before_kill=len(prefix),
               chars_total=len(out["text"]))
    finally:
        gw.stop()


def test_kill9_one_of_two_gateways_under_load(nodes: dict, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as rport:
        redis_url = f"redis://127.0.0.1:{rport}/0"
        spec = write_spec(tmp_path, {s: url for s, (_, url) in nodes.items()})
        a, a_url = start_gateway(tmp_path, spec, "a", redis_url)
        (tmp_path / "b").mkdir()  # its own working folder: each gateway writes its own audit log (one writer a log,
        b, b_url = start_gateway(tmp_path / "b", spec, "b", redis_url)  # 47aa1f2), as on two hosts
        counts = {"ok": 0, "failed_over": 0, "lost_mid_stream": 0, "lost_not_streaming": 0}
        lock = threading.Lock()
        done = threading.Event()

        def one(i: int) -> None:
            first, other = (a_url, b_url) if i % 2 == 0 else (b_url, a_url)
            city = ("Tokyo", "Frankfurt", "Ashburn")[i % 3]
            try:
                out = stream(first, city)
                # a gateway killed after its response headers but before the first event ends the stream empty
                key = "ok" if out["events"] and out["events"][-1] == "[DONE]" else "lost_mid_stream"
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                # like a load balancer: a connection that failed before any response goes to the other gateway
                started = isinstance(e, httpx.ReadError)
                if started:
                    key = "lost_mid_stream"
                else:
                    try:
                        out = stream(other, city)
                        key = "failed_over" if out["events"] and out["events"][-1] == "[DONE]" else "lost_not_streaming"
                    except httpx.HTTPError:
                        key = "lost_not_streaming"
            with lock:
                counts[key] += 1
                if sum(counts.values()) == 10:
                    done.set()

        try:
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(one, i) for i in range(30)]
                done.wait(timeout=120)
                a.kill9()
                for f in futures:
                    f.result(timeout=120)
            assert counts["lost_not_streaming"] == 0, counts
            assert counts["failed_over"] > 0 and sum(counts.values()) == 30, counts
            assert httpx.get(b_url + "/healthz").json()["shared_state"]["stale"] is False
            report("gateway-kill-under-load", requests=30, **counts)
        finally:
            a.stop()
            b.stop()


def test_redis_restart_under_load(nodes: dict, tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    (tmp_path / "r2").mkdir()
    spec = write_spec(tmp_path, {s: url for s, (_, url) in nodes.items()})
    with redis_server(tmp_path / "r1") as rport:
        redis_url = f"redis://127.0.0.1:{rport}/0"
        gw, base = start_gateway(tmp_path, spec, "a", redis_url)
        results = [stream(base, "Frankfurt")["events"][-1] == "[DONE]" for _ in range(3)]
    try:
        down = [stream(base, "Tokyo")["events"][-1] == "[DONE]" for _ in range(5)]  # Redis is gone
        stale = httpx.get(base + "/healthz").json()["shared_state"]
        with redis_server(tmp_path / "r2", port=rport):
            back = [stream(base, "Ashburn")["events"][-1] == "[DONE]" for _ in range(3)]
            deadline = time.monotonic() + 5
            while httpx.get(base + "/healthz").json()["shared_state"]["stale"] and time.monotonic() < deadline:
                time.sleep(0.2)
            recovered = not httpx.get(base + "/healthz").json()["shared_state"]["stale"]
        assert all(results) and all(down) and all(back)
        assert stale["stale"] is True and recovered
        report("redis-restart", requests=len(results) + len(down) + len(back), lost=0,
               served_while_redis_down=len(down), recovered_sync=recovered)
    finally:
        gw.stop()
