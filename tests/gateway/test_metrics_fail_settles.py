"""A metrics write that fails (a prometheus multiprocess file that cannot grow on a full disk: an OSError from mmap)
never stops a request's settlement (routes.close_exchange, proxy.Proxy.finish through observe.MetricsWrites): the
quota settled with the engine's usage, the audit record written, nothing left in flight, the client answered, and
the failure logged as a WARNING. Until the thirtieth session the OSError of observe() skipped Guard.finish."""

from __future__ import annotations

import errno
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.errors import QuotaUnavailable
from aigrid.gateway.app import Gateway, build_app
from aigrid.gateway.observe import MetricsWrites
from aigrid.spec.models import QuotaSpec
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.metered_gateway import TENANT, balance, inflight, metered_gateway, the_one_record

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}

BROKEN = ("genai_duration", "genai_ttft", "genai_tokens", "genai_tpot", "tpot", "ttft", "ttft_ratio", "requests",
          "tokens", "audit_lost", "audit_waiting", "audit_limit", "quota_unsettled", "retries", "rejected", "hedges",
          "hedge_wins", "continuations")
"""The metrics a request's close and its engine attempts write (close_exchange; Proxy: forward, finish, _fail...)."""


class FullDisk:
    """A metric whose every write raises as a multiprocess metrics file that cannot grow does."""

    writes = 0

    def labels(self, *_: Any) -> FullDisk:
        return self

    def _raise(self, *_: Any) -> None:
        FullDisk.writes += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    inc = dec = set = observe = _raise


@pytest.fixture
async def broken(tmp_path: Path, fakes: dict[str, FakeEngine],
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Gateway]:
    gw = await metered_gateway(tmp_path, fakes, QuotaSpec(requests_per_min=1000, tokens_per_min=1_000_000))
    for name in BROKEN:
        monkeypatch.setattr(gw.metrics, name, FullDisk())
    gw.metrics._audit_written = None  # the backlog gauges written at the request's close
    FullDisk.writes = 0
    yield gw
    await gw.guard.stop()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
async def test_a_failing_metrics_write_still_settles_audits_and_answers(
        broken: Gateway, stream: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        if stream:
            async with c.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}, headers=TENANT) as r:
                assert r.status_code == 200
                assert b"[DONE]" in b"".join([chunk async for chunk in r.aiter_raw()])
        else:
            r = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"]
    row = await the_one_record(broken)
    assert row["outcome"] == "ok" and (row["prompt_tokens"], row["completion_tokens"]) == (5, 4)
    assert await balance(broken) == 9  # settled with the engine's usage, not the reservation
    assert inflight(broken) == 0
    assert FullDisk.writes >= 3  # the booking, the close's GenAI metrics and its backlog gauges were tried
    warnings = [r.getMessage() for r in caplog.records if "were not written" in r.getMessage()]
    assert warnings and "No space left on device" in warnings[0]


async def test_a_failing_metrics_write_still_releases_failed_attempts(
        broken: Gateway, fakes: dict[str, FakeEngine], caplog: pytest.LogCaptureFixture) -> None:
    """Every engine down: each failed attempt's count (Proxy._fail) and the refusal's (aigrid_rejected) fail too; the
    client reads the gateway's 502, each attempt released, the record written, nothing charged."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    for f in fakes.values():
        f.down = True
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=CHAT, headers=TENANT)
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_failed"
    row = await the_one_record(broken)
    assert row["outcome"] == "error:upstream_failed"
    assert await balance(broken) == 0 and inflight(broken) == 0
    assert any("were not written" in r.getMessage() for r in caplog.records)


def test_failed_writes_are_logged_once_per_warn_every(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    monkeypatch.setattr("aigrid.gateway.observe.WARN_EVERY", 10)
    written, done = MetricsWrites(), []

    def fail() -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    for _ in range(25):
        written("/v1/chat/completions", fail)
    written("/v1/chat/completions", lambda: done.append(1))
    assert written.failed == 25 and done == [1]
    assert [r.getMessage().split("(")[1].split(" ")[0] for r in caplog.records] == ["1", "11", "21"]


async def test_a_failing_rejected_count_still_answers_the_error_in_its_envelope(
        broken: Gateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """routes.Audited counts a refusal (503) and a bug's 500 in aigrid_requests_rejected_total before answering it:
    a write that raised left the except block with no answer (Starlette's plain-text 500, no envelope, no
    x-request-id). Written through MetricsWrites: the error's own envelope, the failure logged."""
    caplog.set_level(logging.WARNING, "aigrid.gateway")
    monkeypatch.setattr(broken.metrics, "rejected", FullDisk())

    async def bug(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug")

    async def busy(*args: object, **kwargs: object) -> None:
        raise QuotaUnavailable("the quota store is unreachable")

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(broken)), base_url="http://gw") as c:
        for admit_call, status, code in ((bug, 500, "internal_error"), (busy, 503, QuotaUnavailable.code)):
            monkeypatch.setattr(broken.guard, "admit_call", admit_call)
            r = await c.get("/v1/models", headers=TENANT)
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
            assert r.headers["x-request-id"]
    assert FullDisk.writes >= 2  # the two counts tried (and the close's own writes)
    assert [m for m in (r.getMessage() for r in caplog.records) if "were not written" in m]
