"""`aigrid gateway --workers 2` as real processes, walked as an attacker would: what one worker writes another reads,
two workers writing one conversation at once lose and interleave nothing, a revoked key is refused by every worker,
and a limit that is per worker by design (docs/reliability.md, "Several workers") is exactly that.

One grid for the module (keys enforced, two emulated engines); each test pins its requests to a worker by holding a
kept-alive connection that worker accepted (workers_helpers.one_connection_per_worker)."""

from __future__ import annotations

import contextlib
import http.client
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection, connect

from aigrid.security.keys import KeyRing
from tests.gateway.workers_helpers import (
    emulator,
    gateway_with_workers,
    one_connection_per_worker,
    serving_workers,
    spec,
)

SECRET = "workers-state-secret-0123456789"
SOCKETS_PER_TENANT = 1


@dataclass
class Grid:
    port: int
    workers: list[int]
    keys: Path
    key: str
    conns: list[http.client.HTTPConnection]

    def pinned(self) -> list[http.client.HTTPConnection]:
        """One new kept-alive connection on each worker, in the order of `workers`."""
        by_worker = one_connection_per_worker(self.port, self.workers, self.conns)
        return [by_worker[pid] for pid in self.workers]


@pytest.fixture(scope="module")
def grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Grid]:
    tmp = tmp_path_factory.mktemp("workers_state")
    keys = tmp / "keys.json"
    ring = KeyRing(SECRET.encode())
    key = ring.issue("t1").api_key
    ring.save(keys)
    with pytest.MonkeyPatch.context() as mp, contextlib.ExitStack() as undo:  # stopped last to first
        mp.setenv("AIGRID_KEY_SECRET", SECRET)  # the gateway's processes inherit it
        emu, emu_port = emulator(tmp, decode_ms=5)
        undo.callback(emu.stop)

        def doc(port: int) -> dict:
            d = spec(tmp, emu_port, port)
            d["security"] = {"audit": d["security"]["audit"], "enforce": True, "keys_file": str(keys)}
            d["tenants"] = {"t1": {}}
            d["gateway"]["max_sockets_per_tenant"] = SOCKETS_PER_TENANT
            return d

        gw, port = gateway_with_workers(tmp, doc)
        undo.callback(gw.stop)
        conns: list[http.client.HTTPConnection] = []
        undo.callback(lambda: [conn.close() for conn in conns])
        yield Grid(port, serving_workers(gw.pid, port), keys, key, conns)


def call(conn: http.client.HTTPConnection, key: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    conn.request(method, path, body=None if body is None else orjson.dumps(body),
                 headers={"content-type": "application/json", "authorization": f"Bearer {key}"})
    resp = conn.getresponse()
    raw = resp.read()
    return resp.status, orjson.loads(raw) if raw else None


def test_a_conversation_written_through_both_workers_at_once_keeps_every_turn_whole(grid: Grid) -> None:
    """Twelve turns sent at once into one conversation, six through each worker: the hub applies each turn's
    input and answer as one append, so the conversation holds all 24 items, every input once, each followed by
    its own answer (none lost, none interleaved with another turn's), read the same through either worker."""
    first, second = grid.pinned()
    status, conv = call(first, grid.key, "POST", "/v1/conversations", {})
    assert status == 200, conv
    lanes = [grid.pinned() for _ in range(3)]  # three connections on each worker
    per_lane = [(conn, [f"turn {i}-{j}" for j in range(2)]) for i, conn in enumerate(c for pair in lanes for c in pair)]

    def send(lane: tuple[http.client.HTTPConnection, list[str]]) -> list[int]:
        conn, texts = lane
        return [call(conn, grid.key, "POST", "/v1/responses", {"model": "emulated", "input": text,
                                                               "conversation": conv["id"], "max_output_tokens": 4})[0]
                for text in texts]

    with ThreadPoolExecutor(len(per_lane)) as pool:
        statuses = [s for got in pool.map(send, per_lane) for s in got]
    assert statuses == [200] * 12, statuses
    pages = [call(conn, grid.key, "GET", f"/v1/conversations/{conv['id']}/items?limit=100&order=asc")
             for conn in (first, second)]
    assert pages[0] == pages[1], "the two workers read the conversation differently"
    status, page = pages[0]
    items = page["data"]
    assert status == 200 and len(items) == 24, (status, len(items))
    inputs = [items[i]["content"][0]["text"] for i in range(0, 24, 2)]
    assert sorted(inputs) == sorted(t for _, texts in per_lane for t in texts), inputs
    for i in range(0, 24, 2):  # each input followed by an answer
        assert (items[i]["role"], items[i + 1]["role"]) == ("user", "assistant"), items[i:i + 2]


def test_what_one_worker_stores_the_other_reads_and_deletes(grid: Grid) -> None:
    """A stored response continued (previous_response_id) and deleted through the other worker; a conversation's
    items added through one and listed through the other; a file uploaded through one read through the other."""
    first, second = grid.pinned()
    status, made = call(first, grid.key, "POST", "/v1/responses",
                        {"model": "emulated", "input": "hello", "store": True, "max_output_tokens": 4})
    assert status == 200, made
    status, follow = call(second, grid.key, "POST", "/v1/responses", {
        "model": "emulated", "input": "and then?", "previous_response_id": made["id"], "max_output_tokens": 4})
    assert status == 200 and follow["previous_response_id"] == made["id"], follow
    assert call(second, grid.key, "DELETE", f"/v1/responses/{made['id']}")[0] == 200
    status, gone = call(first, grid.key, "GET", f"/v1/responses/{made['id']}")
    assert status == 404, gone

    status, conv = call(second, grid.key, "POST", "/v1/conversations", {})
    item = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "kept"}]}
    assert call(second, grid.key, "POST", f"/v1/conversations/{conv['id']}/items", {"items": [item]})[0] == 200
    status, page = call(first, grid.key, "GET", f"/v1/conversations/{conv['id']}/items")
    assert status == 200 and [i["content"][0]["text"] for i in page["data"]] == ["kept"], page

    boundary = uuid.uuid4().hex
    line = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
                         "body": {"model": "emulated", "messages": [{"role": "user", "content": "x"}]}})
    body = (f"--{boundary}\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--{boundary}\r\n"
            "content-disposition: form-data; name=\"file\"; filename=\"a.jsonl\"\r\n"
            "content-type: application/jsonl\r\n\r\n").encode() + line + f"\n\r\n--{boundary}--\r\n".encode()
    first.request("POST", "/v1/files", body=body, headers={
        "content-type": f"multipart/form-data; boundary={boundary}", "authorization": f"Bearer {grid.key}"})
    resp = first.getresponse()
    uploaded = orjson.loads(resp.read())
    assert resp.status == 200, uploaded
    status, found = call(second, grid.key, "GET", f"/v1/files/{uploaded['id']}")
    assert status == 200 and found["bytes"] == len(line) + 1, found


def test_a_revoked_key_is_refused_by_every_worker(grid: Grid) -> None:
    """Each worker watches the key file (KeyRing.watching, every second): a key revoked with `aigrid keys revoke`
    is refused by both within a few seconds, not only by the worker that happens to reread first."""
    ring = KeyRing.load(grid.keys, SECRET.encode())
    doomed = ring.issue("t1")
    ring.save(grid.keys)
    pair = grid.pinned()
    deadline = time.monotonic() + 10
    while [call(c, doomed.api_key, "GET", "/v1/models")[0] for c in pair] != [200, 200]:
        assert time.monotonic() < deadline, "the new key was never taken by both workers"
        time.sleep(0.2)
    ring = KeyRing.load(grid.keys, SECRET.encode())
    assert ring.revoke(doomed.record.key_id)
    ring.save(grid.keys)
    deadline = time.monotonic() + 10
    while (got := [call(c, doomed.api_key, "GET", "/v1/models")[0] for c in pair]) != [401, 401]:
        assert 200 in got and time.monotonic() < deadline, got
        time.sleep(0.2)


def test_websocket_caps_are_per_worker_as_documented(grid: Grid) -> None:
    """`gateway.max_sockets_per_tenant` (1 here) bounds the sockets a tenant holds on one process: with two workers
    the tenant holds exactly two (one on each), as docs/responses-api.md and docs/reliability.md say; every one more is
    refused, 429."""
    held: list[ClientConnection] = []
    refused = 0
    try:
        for _ in range(60):  # the kernel hands each connection to either worker
            try:
                held.append(connect(f"ws://127.0.0.1:{grid.port}/v1/responses", open_timeout=10,
                                    additional_headers={"authorization": f"Bearer {grid.key}"}))
            except InvalidStatus as e:
                assert e.response.status_code == 429, e.response.status_code
                refused += 1
            if len(held) == 2 and refused >= 2:
                break
        assert len(held) == 2 * SOCKETS_PER_TENANT and refused >= 2, (len(held), refused)
    finally:
        for ws in held:
            with contextlib.suppress(Exception):
                ws.close()

