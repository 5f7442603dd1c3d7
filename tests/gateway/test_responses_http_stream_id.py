"""HTTP `POST /v1/responses` with the WebSocket's `stream_id` (a create's lane): accepted and not used, as every
field this door does not know (ResponsesRequest takes extra fields; none reaches an engine or the Response). The
issue 12 walk (ATK) asked whether it should be OpenAI's 400 `unknown_parameter`: the door refuses no unknown field
(the SDKs send fields newer than the grid's list), and over HTTP each create is a stream of its own, so a lane means
nothing there; refusing this one alone would make it the only unknown field refused (ATK2 item 3, decided and
pinned here)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from aigrid.spec.load import load_spec
from tests.gateway.conftest import serving
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.keyed_grid import SPEC

FRANKFURT = {"x-aigrid-client-location": "Frankfurt"}


@pytest.fixture
async def grid() -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, FakeEngine]]]:
    spec = load_spec(SPEC)
    fakes = {e.id: FakeEngine(e.id, words=(e.id, " says", " hi")) for e in spec.endpoints}
    async with serving(spec, fakes) as (c, _):
        yield c, fakes


@pytest.mark.parametrize("extra", [{"stream_id": "lane-1"}, {"not_a_field": 1}])
@pytest.mark.parametrize("stream", [False, True])
async def test_a_field_the_http_door_does_not_know_is_accepted_and_reaches_nothing(grid: Any, extra: dict[str, Any],
                                                                                   stream: bool) -> None:
    c, fakes = grid
    r = await c.post("/v1/responses", json={"model": "small-1b", "input": "hi", "max_output_tokens": 8,
                                            "stream": stream, **extra}, headers=FRANKFURT)
    assert r.status_code == 200, r.text
    (name,) = extra
    assert name not in r.text  # not echoed on the Response nor on any event
    sent = [body for f in fakes.values() for body in f.received]
    assert len(sent) == 1 and name not in sent[0], sent
