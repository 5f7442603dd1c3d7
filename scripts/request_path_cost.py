"""The gateway's CPU per streamed chat request, in-process: from the ASGI call to the engine's request and back.

The side-by-side harness's spec (`aigrid.bench.compare.aigrid_spec`: two `engine: vllm` endpoints, firewall and
audit log at their defaults), its audit log, keys and batch files in a temporary folder, each endpoint an
in-process engine that answers every request with the same emulator-shaped stream (a role chunk, TOKENS token
chunks, the finish chunk, the usage chunk, [DONE]; one read each). The app is called as a server calls it (a
plain ASGI `receive` / `send`, no HTTP, no sockets), one request at a time, the bench's prompt (32 tokens) each
time. No network, no other process: what is timed is the gateway's own Python per request, the audit writer's
thread aside (its records are written as they are in `aigrid up`).

Per tree: ROUNDS rounds of REQUESTS requests after a warm-up; a round's figure is the event loop thread's CPU
(`time.thread_time`) per request, and the process's (`time.process_time`, the audit writer's thread included);
the best round of each is printed. With several trees (NAME=SRC, each a `src` folder), each round runs every tree
in its own process, the trees alternating round by round, so that the machine's load falls on all of them alike.

    .venv/bin/python scripts/request_path_cost.py [--requests 400] [--rounds 7] [--tokens 24] [NAME=SRC ...]
    .venv/bin/python scripts/request_path_cost.py --profile [--requests 500]   # cProfile call counts per request
    .venv/bin/python scripts/request_path_cost.py --cuts   # each cut of the thirty-second session, old and new forms

`--cuts` times, in one process, the old and the new form of each per-request step the thirty-second session cut
(the old form reproduced here), alternating old and new ROUNDS times, least `process_time` of each.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import gc
import json
import os
import pstats
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

OPENED = [0.0]
PROMPT = " ".join(["word"] * 31) + " end"  # the bench's prompt is 32 tokens


def _chunks(tokens: int) -> list[bytes]:
    """An emulated vLLM's streamed answer to every request, one read a chunk."""
    import orjson

    head = {"id": "chatcmpl-emu", "object": "chat.completion.chunk", "created": 1, "model": "emulated"}

    def event(obj: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps({**head, **obj}) + b"\n\n"

    out = [event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
    out += [event({"choices": [{"index": 0, "delta": {"content": f" t{i}"}, "finish_reason": None}]})
            for i in range(tokens)]
    out.append(event({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    out.append(event({"choices": [], "usage": {"prompt_tokens": 32, "completion_tokens": tokens,
                                               "total_tokens": 32 + tokens}}))
    out.append(b"data: [DONE]\n\n")
    return out


class EmulatedEngine:
    """An engine of the Engine protocol that answers from memory (no parse of the request, no timing)."""

    kind = "vllm"

    def __init__(self, name: str, chunks: list[bytes]) -> None:
        self.base_url = f"http://emulated-{name}"
        self.chunks = chunks
        self.requests = 0

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[Any]:
        from aigrid.engines.protocol import UpstreamResponse

        self.requests += 1
        OPENED[0] = time.thread_time()  # the request's CPU before the engine ends here
        yield UpstreamResponse(200, {"content-type": "text/event-stream"}, self._stream())

    async def _stream(self) -> AsyncIterator[bytes]:
        for c in self.chunks:
            yield c

    async def health(self) -> bool:
        return True

    async def stats(self) -> Any:
        from aigrid.engines.protocol import EngineStats

        return EngineStats(running=0, waiting=0)

    async def aclose(self) -> None:
        return None


async def _run(requests: int, rounds: int, tokens: int, profile: bool) -> dict[str, Any]:
    from aigrid.bench.compare import MODEL, aigrid_spec
    from aigrid.gateway.app import build_app, build_gateway
    from aigrid.gateway.heap import settle
    from aigrid.spec.load import load_spec
    from aigrid.spec.models import AuditSpec, BatchSpec

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        aigrid_spec(tmp / "aigrid.yaml", [9900, 9901])
        spec = load_spec(tmp / "aigrid.yaml")
        sec = spec.security.model_copy(update={
            "keys_file": str(tmp / "keys.json"),
            "audit": AuditSpec(path=str(tmp / "audit.db"), signing_key=str(tmp / "audit.pem"))})
        gw_spec = spec.gateway.model_copy(update={"batch": BatchSpec(dir=str(tmp / "batches"))})
        spec = spec.model_copy(update={"security": sec, "gateway": gw_spec})
        chunks = _chunks(tokens)
        engines = {e.id: EmulatedEngine(e.id, chunks) for e in spec.endpoints}
        gw = build_gateway(spec, engines, rng=random.Random(7))
        await gw.scraper.scrape_once()
        app = build_app(gw)
        await gw.guard.start()
        body = json.dumps({"model": MODEL, "stream": True, "max_tokens": tokens,
                           "messages": [{"role": "user", "content": PROMPT}]}).encode()
        headers = [(b"host", b"127.0.0.1:9910"), (b"user-agent", b"aigrid-bench"), (b"accept", b"*/*"),
                   (b"content-type", b"application/json"), (b"authorization", b"Bearer unused"),
                   (b"content-length", str(len(body)).encode())]
        scope_base = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                      "server": ("127.0.0.1", 9910), "client": ("127.0.0.1", 50000), "scheme": "http",
                      "method": "POST", "root_path": "", "path": "/v1/chat/completions",
                      "raw_path": b"/v1/chat/completions", "query_string": b"", "headers": headers, "state": {}}
        expected = len(chunks) - 1  # every chunk but the usage chunk the gateway asked for itself
        loop = asyncio.get_running_loop()
        before = [0.0]

        async def one() -> None:
            sent = False
            never: asyncio.Future[None] = loop.create_future()

            async def receive() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await never
                return {"type": "http.disconnect"}

            status, parts = 0, 0

            async def send(message: MutableMapping[str, Any]) -> None:
                nonlocal status, parts
                if message["type"] == "http.response.start":
                    status = message["status"]
                elif message.get("body"):
                    parts += 1

            t0 = time.thread_time()
            await app(dict(scope_base), receive, send)
            never.cancel()
            before[0] += OPENED[0] - t0
            if status != 200 or parts < expected:
                raise SystemExit(f"request answered {status} with {parts} parts (expected 200, >= {expected})")

        for _ in range(50):  # warm-up: imports, caches, the first records
            await one()
        settle()  # as the gateway does once it serves (heap.py)
        out: dict[str, Any] = {"thread_us": [], "process_us": [], "before_us": []}
        if profile:
            prof = cProfile.Profile(time.thread_time)  # CPU, not wall: the machine is shared
            prof.enable()
            for _ in range(requests):
                await one()
            prof.disable()
            out["profile"] = prof
        else:
            for _ in range(rounds):
                await asyncio.sleep(0.06)  # the audit writer's batch out of the way (it lingers 50 ms)
                before[0] = 0.0
                t0, p0 = time.thread_time(), time.process_time()
                for _ in range(requests):
                    await one()
                t1, p1 = time.thread_time(), time.process_time()
                out["before_us"].append(before[0] * 1e6 / requests)
                out["thread_us"].append((t1 - t0) * 1e6 / requests)
                out["process_us"].append((p1 - p0) * 1e6 / requests)
        await gw.guard.stop()
        out["served"] = sum(e.requests for e in engines.values())
        return out


def _cuts(rounds: int, number: int = 20_000) -> None:
    """The thirty-second session's cuts, each step in its old form and its new, alternating; and the thirty-fourth's
    proxy layer (uvicorn's, mounted on every request before gateway.forwarded_allow_ips: its call around an app
    that returns at once against the app's alone)."""
    import timeit
    from dataclasses import replace

    from aigrid.core.types import RequestInfo
    from aigrid.gateway import browsers
    from aigrid.security.authorize import scope_request
    from aigrid.security.principal import Principal, Scopes

    scope = {"headers": [(b"host", b"127.0.0.1:9910"), (b"user-agent", b"aigrid-bench"), (b"accept", b"*/*"),
                         (b"content-type", b"application/json")], "server": ("127.0.0.1", 9910)}
    guard = browsers.BrowserGuard()
    cached = browsers.is_loopback

    def check_old() -> None:  # every answer an ipaddress parse (before the memo)
        browsers.is_loopback = browsers._loopback
        try:
            guard.check(scope)
        finally:
            browsers.is_loopback = cached

    def check_new() -> None:
        browsers.is_loopback = cached
        guard.check(scope)

    from aigrid.gateway import model_texts

    class _Always:  # the walks before the key checks: every message and the body walked (one call more here)
        def isdisjoint(self, other: object) -> bool:
            return False

    body = {"model": MODEL_NAME, "stream": True, "max_tokens": 24, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": PROMPT}]}
    checked = (model_texts.TEXT_BESIDE_CONTENT_KEYS, model_texts.TEXT_BESIDE_MESSAGES_KEYS)

    def texts_old() -> None:
        model_texts.TEXT_BESIDE_CONTENT_KEYS = model_texts.TEXT_BESIDE_MESSAGES_KEYS = _Always()  # type: ignore[assignment]
        try:
            model_texts.chat_texts(body)
        finally:
            model_texts.TEXT_BESIDE_CONTENT_KEYS, model_texts.TEXT_BESIDE_MESSAGES_KEYS = checked

    def texts_new() -> None:
        model_texts.chat_texts(body)

    from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    layer = ProxyHeadersMiddleware(app, "127.0.0.1,::1")  # as uvicorn mounted it before gateway.forwarded_allow_ips
    http = {**scope, "type": "http", "client": ("127.0.0.1", 51234)}

    def through(call: Any) -> Callable[[], None]:
        def one() -> None:
            with contextlib.suppress(StopIteration):
                call(http, None, None).send(None)
        return one

    principal = Principal("default", "anonymous", Scopes())
    asked = RequestInfo("dec-0123456789abcdef", MODEL_NAME, 40, 24, prefix_hash="0" * 24)
    steps = {
        "BrowserGuard.check (Host 127.0.0.1:9910)": (check_old, check_new),
        "scope_request + the urgency's fields": (
            lambda: replace(scope_request(principal, asked), priority=5, deadline_ms=None),
            lambda: scope_request(principal, asked, priority=5, deadline_ms=None)),
        "chat_texts (one user message)": (texts_old, texts_new),
        "uvicorn's ProxyHeadersMiddleware (34th)": (through(layer), through(app)),
    }
    print(f"load {os.getloadavg()[0]:.2f}; least process_time of {rounds} alternating rounds of {number:,} calls")
    for name, (old, new) in steps.items():
        best = {"old": float("inf"), "new": float("inf")}
        for _ in range(rounds):
            for label, f in (("old", old), ("new", new)):
                best[label] = min(best[label], timeit.timeit(f, number=number, timer=time.process_time) / number)
        print(f"{name:45s} old {best['old'] * 1e6:6.2f} us, new {best['new'] * 1e6:6.2f} us")
    print(f"load {os.getloadavg()[0]:.2f}")


MODEL_NAME = "emulated"


def _child(args: argparse.Namespace) -> None:
    gc.collect()
    out = asyncio.run(_run(args.requests, args.rounds, args.tokens, args.profile))
    if args.profile:
        stats = pstats.Stats(out["profile"])
        rows = []
        for (file, line, name), (_cc, nc, tt, ct, _) in stats.stats.items():  # type: ignore[attr-defined]
            rows.append((tt, nc, ct, f"{Path(file).name}:{line}({name})"))
        rows.sort(reverse=True)
        print(f"cProfile, {args.requests} requests, {args.tokens} tokens: per request, by self time")
        print(f"{'self us':>8} {'cum us':>8} {'calls':>7}  function")
        for tt, nc, ct, where in rows[:args.top]:
            print(f"{tt * 1e6 / args.requests:8.1f} {ct * 1e6 / args.requests:8.1f} {nc / args.requests:7.2f}  {where}")
        return
    print(json.dumps({k: out[k] for k in ("thread_us", "before_us", "process_us", "served")}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trees", nargs="*", help="NAME=SRC: a source tree's src folder (default: this process's aigrid)")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--profile", action="store_true", help="cProfile's call counts per request instead of times")
    ap.add_argument("--top", type=int, default=60)
    ap.add_argument("--cuts", action="store_true", help="the old and new form of each cut, alternating")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.cuts:
        _cuts(args.rounds)
        return
    if args.child or not args.trees:
        _child(args)
        return
    trees = dict(t.split("=", 1) for t in args.trees)
    best: dict[str, dict[str, list[float]]] = {n: {"thread_us": [], "before_us": [], "process_us": []} for n in trees}
    print(f"load {os.getloadavg()[0]:.2f}; {args.rounds} rounds x {args.requests} requests, {args.tokens} tokens")
    for r in range(args.rounds):
        order = list(trees) if r % 2 == 0 else list(reversed(trees))
        for name in order:
            env = {**os.environ, "PYTHONPATH": str(Path(trees[name]).resolve())}
            res = subprocess.run([sys.executable, __file__, "--child", "--rounds", "3", "--requests",
                                  str(args.requests), "--tokens", str(args.tokens)], env=env, check=True,
                                 capture_output=True, text=True)
            figures = json.loads(res.stdout.strip().splitlines()[-1])
            for k in ("thread_us", "before_us", "process_us"):
                best[name][k].append(min(figures[k]))
            print(f"round {r + 1} {name:>8}: loop thread {min(figures['thread_us']):7.1f} us (before the engine "
                  f"{min(figures['before_us']):6.1f}), process "
                  f"{min(figures['process_us']):7.1f} us a request (load {os.getloadavg()[0]:.2f})", flush=True)
    for name, f in best.items():
        print(f"{name:>8}: loop thread best {min(f['thread_us']):7.1f} us, median {_median(f['thread_us']):7.1f}; "
              f"before the engine best {min(f['before_us']):6.1f}, median {_median(f['before_us']):6.1f}; "
              f"process best {min(f['process_us']):7.1f} us")


def _median(xs: list[float]) -> float:
    return sorted(xs)[len(xs) // 2]


if __name__ == "__main__":
    main()
