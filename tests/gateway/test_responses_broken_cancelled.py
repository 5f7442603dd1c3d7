"""A streamed background run whose stream broke after its client's cancel: audited `cancelled`, as an answer that
ended whole after its cancel is (ResponsesApi._keep_background)."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.gateway.exchange import Exchange
from aigrid.gateway.responses_api import ResponsesApi


class _Principal:
    tenant = "acme"


class _Turn:
    principal = _Principal()


@pytest.mark.parametrize("stored", ["cancelled", "stored"])
async def test_a_broken_stream_whose_cancel_came_first_is_audited_cancelled(stored: str) -> None:
    api = ResponsesApi.__new__(ResponsesApi)  # only _store and _end are reached
    ended: list[str] = []

    async def store(turn: Any, final: dict[str, Any], headers: dict[str, str], *, background: bool = False) -> str:
        assert background
        return stored

    async def end(tenant: str, rid: str, status: str, error: Any = None, ex: Any = None) -> None:
        ended.append(status)

    api._store = store  # type: ignore[method-assign]
    api._end = end  # type: ignore[method-assign]
    ex = Exchange("/v1/responses", 1_800_000_000.0)
    failed = {"id": "resp_1", "output": [{"type": "function_call", "status": "incomplete"}],
              "error": {"code": "server_error", "message": "cut"}}
    await api._end_broken(_Turn(), failed, {"x-aigrid-jurisdiction": "eu"}, ex)  # type: ignore[arg-type]
    assert ended == []  # kept as the store has it: no placeholder failed over it
    assert ex.final_outcome() == ("cancelled" if stored == "cancelled" else "ok")
