"""One request's account (gateway/exchange.py): the access log line it writes when it closes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.gateway import hostile_engine as H
from tests.gateway.hostile_grid import grid, sane


@pytest.mark.parametrize("status", [400, 429])
@pytest.mark.parametrize("door", ["chat", "messages"])
@pytest.mark.parametrize("stream", [False, True])
async def test_the_access_line_of_an_engines_refusal_carries_its_status(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, status: int, door: str, stream: bool) -> None:
    """An engine's 4xx passed on to the client was logged `outcome: http_400` with `status: null` (the status
    came only from the gateway's own errors)."""
    def refuse(path: str, req: dict) -> H.Script:
        return H.whole(b'{"error": {"message": "All non-assistant messages must contain \'content\'"}}', status)

    async for g in grid(tmp_path, refuse, good=refuse):
        with caplog.at_level("INFO", logger="aigrid.access"):
            r = await g.post(door, stream)
        assert r.status_code == status, r.text
        lines = [rec.aigrid_fields for rec in caplog.records if rec.name == "aigrid.access"]  # type: ignore[attr-defined]
        assert [(line["outcome"], line["status"]) for line in lines] == [(f"http_{status}", status)], lines


async def test_the_access_line_of_an_answer_has_no_error_status(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An answer has no error status."""
    async for g in grid(tmp_path, sane):
        with caplog.at_level("INFO", logger="aigrid.access"):
            r = await g.post("chat", False)
        assert r.status_code == 200, r.text
        lines = [rec.aigrid_fields for rec in caplog.records if rec.name == "aigrid.access"]  # type: ignore[attr-defined]
        assert [(line["outcome"], line["status"]) for line in lines] == [("ok", None)], lines
