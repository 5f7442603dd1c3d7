"""A tool loop runs its later model turns only while its caller may still ask: a key revoked while its loop runs (a
live request's, a background Response's) ends the loop before its next turn (stop "revoked"), as a batch's next
line is refused (batch_line.line_caller). Before (thirty-seventh session, brief ATK8) the key was checked once, at
the request's start: a background Response of a revoked key ran its server-side tools and model turns on to
aigrid_max_steps, each charged to the tenant."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway
from aigrid.gateway.background import BACKGROUND_ROUTE
from aigrid.security.keys import KeyRing
from aigrid.spec.load import load_spec
from tests.agents.scripted_engine import USAGE, ScriptedEngine, call
from tests.gateway.conftest import audit_rows, serving
from tests.gateway.keyed_grid import SECRET, SPEC, enforced

REVOKE_AFTER = 2
"""The model turns that run before the key is revoked (by the engine, as its second turn is asked)."""
ASK = {"model": "small-1b", "messages": [{"role": "user", "content": "Add one, sixteen times."}],
       "tools": [{"type": "function", "function": {"name": "calculator"}}], "aigrid_max_steps": 16, "max_tokens": 40}


class RevokingEngine(ScriptedEngine):
    """Every model turn asks for the calculator again; at its REVOKE_AFTER-th turn the key is revoked."""

    def __init__(self) -> None:
        super().__init__([])
        self.revoke: Any = None

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.replies.append(call("calculator", expression="1 + 1"))
        if len(self.received) + 1 == REVOKE_AFTER and self.revoke is not None:
            self.revoke()
        async with super().open(path, body) as upstream:
            yield upstream


@asynccontextmanager
async def keyed(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway, RevokingEngine, dict[str, str]]]:
    ring = KeyRing(SECRET.encode())
    issued = ring.issue("default")
    spec = enforced(load_spec(SPEC), load_spec(SPEC).tenants, ring, tmp_path)
    engine = RevokingEngine()
    async with serving(spec, {e.id: engine for e in spec.endpoints}) as (client, gw):
        engine.revoke = lambda: gw.guard.authenticator.keys.revoke(issued.record.key_id)
        yield client, gw, engine, {"authorization": f"Bearer {issued.api_key}"}


def turns(engine: RevokingEngine) -> int:
    return len(engine.received)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_chat_loop_ends_when_its_key_is_revoked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         stream: bool) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    async with keyed(tmp_path) as (client, gw, engine, auth):
        r = await client.post("/v1/chat/completions", json={**ASK, "stream": stream}, headers=auth)
        assert r.status_code == 200, r.text
        assert turns(engine) == REVOKE_AFTER  # before: 17 (every step to aigrid_max_steps, and the last turn)
        assert '"stop":"revoked"' in r.text.replace(" ", ""), r.text[-600:]
        # ended as a token_budget cut ends (docs/agents.md): `length`, a clean end of the stream, no error event
        if stream:
            assert r.text.rstrip().endswith("data: [DONE]") and '"error":' not in r.text, r.text[-600:]
            assert '"finish_reason":"length"' in r.text.replace(" ", ""), r.text[-600:]
        else:
            assert r.json()["choices"][0]["finish_reason"] == "length" and r.json()["usage"]["completion_tokens"] > 0
        records = await audit_rows(gw)
        assert len(records) == 1 and records[0]["outcome"] == "ok"
        assert records[0]["extra"]["loop_stop"] == "revoked"  # told from a loop that answered (brief AUDSTOP)
        again = await client.post("/v1/chat/completions", json=ASK, headers=auth)
        assert again.status_code == 401


async def test_a_background_response_ends_when_its_key_is_revoked(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    async with keyed(tmp_path) as (client, gw, engine, auth):
        body = {"model": "small-1b", "input": "Add one, sixteen times.", "background": True,
                "tools": [{"type": "function", "name": "calculator"}], "aigrid_max_steps": 16,
                "max_output_tokens": 40}
        r = await client.post("/v1/responses", json=body, headers=auth)
        assert r.status_code == 200, r.text
        for _ in range(200):
            if not gw.background.owns(r.json()["id"]):
                break
            await asyncio.sleep(0.01)
        assert turns(engine) == REVOKE_AFTER  # before: 17
        records = [row for row in await audit_rows(gw) if row["extra"].get("route") == BACKGROUND_ROUTE]
        assert len(records) == 1, records  # the run's record: its tenant, model, site and the two turns it was charged
        (record,) = records
        assert (record["tenant"], record["model"], record["decision"]["chosen"]["site"]) == ("default", "small-1b", "fra")
        assert record["prompt_tokens"] + record["completion_tokens"] == REVOKE_AFTER * USAGE["total_tokens"]
        assert (record["outcome"], record["extra"]["loop_stop"]) == ("ok", "revoked")
        stored = gw.responses.get("default", r.json()["id"])
        assert stored is not None and stored.response["status"] == "incomplete"
        assert stored.response["incomplete_details"] == {"reason": "max_output_tokens", "aigrid_stop": "revoked"}
