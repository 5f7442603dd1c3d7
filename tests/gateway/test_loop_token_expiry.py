"""A live tool loop (chat or Responses, whole or streamed) of a caller with a JWT bearer token ends before its next
model turn once the token has expired, as a revoked key's loop does (stop "revoked"): the request's own
Authorization header is verified again before each turn (Authenticator.again's `authorization`). Before (thirty-
seventh session, brief AUDSTOP) the per-turn check could not read a token's `exp`, and the loop ran on to
aigrid_max_steps. A background run keeps no token to verify again: it runs on, as documented."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import httpx
import jwt
import jwt.api_jwt
import pytest

from aigrid.engines.protocol import UpstreamResponse
from aigrid.gateway.app import Gateway
from aigrid.gateway.background import BACKGROUND_ROUTE
from aigrid.spec.models import JwtSpec
from tests.agents.scripted_engine import ScriptedEngine, call
from tests.gateway.conftest import audit_rows, serving, spec_in

SECRET = "expiry-secret-0123456789abcdef"
JWT_SECRET = "e" * 32
LIFETIME_S = 600
EXPIRE_AFTER = 2
"""The model turns that run before the token's exp has passed (the engine moves the clock the token is read by)."""
STEPS = 16
CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Add one, sixteen times."}],
        "tools": [{"type": "function", "function": {"name": "calculator"}}], "aigrid_max_steps": STEPS,
        "max_tokens": 40}
RESPONSE = {"model": "smollm2-135m", "input": "Add one, sixteen times.", "aigrid_max_steps": STEPS,
            "tools": [{"type": "function", "name": "calculator"}], "max_output_tokens": 40}


class Later(datetime):
    """datetime, `ahead` seconds later: the clock PyJWT reads a token's exp by (jwt.api_jwt.datetime)."""

    ahead = 0.0

    @classmethod
    def now(cls, tz: tzinfo | None = None) -> Later:
        return cls.fromtimestamp(time.time() + cls.ahead, tz)


class Expiring(ScriptedEngine):
    """Every model turn asks for the calculator again; as its EXPIRE_AFTER-th turn is asked, the token has expired."""

    def __init__(self) -> None:
        super().__init__([])

    @asynccontextmanager
    async def open(self, path: str, body: bytes) -> AsyncIterator[UpstreamResponse]:
        self.replies.append(call("calculator", expression="1 + 1"))
        if len(self.received) + 1 == EXPIRE_AFTER:
            Later.ahead = 2 * LIFETIME_S
        async with super().open(path, body) as upstream:
            yield upstream


@pytest.fixture
async def grid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[httpx.AsyncClient, Gateway,
                                                                                        Expiring, dict[str, str]]]:
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    monkeypatch.setenv("JWT_SECRET", JWT_SECRET)
    monkeypatch.setattr(Later, "ahead", 0.0)
    monkeypatch.setattr(jwt.api_jwt, "datetime", Later)
    spec = spec_in(tmp_path, enforce=True, jwt=JwtSpec(issuer="idp", audience="aigrid", secret_env="JWT_SECRET"))
    engine = Expiring()
    claims = {"iss": "idp", "aud": "aigrid", "sub": "alice", "tenant": "default", "exp": int(time.time()) + LIFETIME_S}
    auth = {"authorization": "Bearer " + jwt.encode(claims, JWT_SECRET, algorithm="HS256")}
    async with serving(spec, {e.id: engine for e in spec.endpoints}) as (c, gw):
        yield c, gw, engine, auth


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", CHAT), ("/v1/chat/completions", {**CHAT, "stream": True}),
    ("/v1/responses", RESPONSE), ("/v1/responses", {**RESPONSE, "stream": True})],
    ids=["chat", "chat-stream", "responses", "responses-stream"])
async def test_a_live_loop_ends_when_its_bearer_token_expires(
        grid: tuple[httpx.AsyncClient, Gateway, Expiring, dict[str, str]], path: str, body: dict[str, Any]) -> None:
    c, gw, engine, auth = grid
    r = await c.post(path, json=body, headers=auth)
    assert r.status_code == 200, r.text
    assert len(engine.received) == EXPIRE_AFTER  # before: 17 (every step to aigrid_max_steps, and the last turn)
    assert '"revoked"' in r.text.replace(" ", ""), r.text[-600:]
    (record,) = [row for row in await audit_rows(gw) if row["extra"].get("route") == path]
    assert (record["outcome"], record["extra"].get("loop_stop")) == ("ok", "revoked"), record
    again = await c.post(path, json=body, headers=auth)
    assert again.status_code == 401 and again.json()["error"]["code"] == "token_expired", again.text


async def test_a_background_run_keeps_no_token_and_runs_on(
        grid: tuple[httpx.AsyncClient, Gateway, Expiring, dict[str, str]]) -> None:
    """The known limit (docs/security.md): a background run keeps no token to verify again; only its tenant and
    the grid's acceptance of tokens are asked each turn."""
    c, gw, engine, auth = grid
    r = await c.post("/v1/responses", json={**RESPONSE, "background": True}, headers=auth)
    assert r.status_code == 200, r.text
    for _ in range(3000):  # up to 30 s: a loaded machine is late, not wrong
        if not gw.background.owns(r.json()["id"]):
            break
        await asyncio.sleep(0.01)
    assert len(engine.received) == STEPS + 1
    (record,) = [row for row in await audit_rows(gw) if row["extra"].get("route") == BACKGROUND_ROUTE]
    assert record["extra"].get("loop_stop") == "step_limit", record
