"""One request's account (gateway/exchange.py): the access log line it writes when it closes."""

from __future__ import annotations

from pathlib import Path

import orjson
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


@pytest.mark.parametrize("door", ["chat", "messages", "responses"])
@pytest.mark.parametrize("stream", [False, True])
async def test_the_access_line_of_an_answer_carries_the_status_its_client_received(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, door: str, stream: bool) -> None:
    """An answer's line said `status: null` (the status was an error's only): operators read nginx's and envoy's
    lines, whose status is the one the client received, 200 for a stream that started with 200."""
    async for g in grid(tmp_path, sane):
        with caplog.at_level("INFO", logger="aigrid.access"):
            r = await g.post(door, stream)
        assert r.status_code == 200, r.text
        lines = [rec.aigrid_fields for rec in caplog.records if rec.name == "aigrid.access"]  # type: ignore[attr-defined]
        assert [(line["outcome"], line["status"]) for line in lines] == [("ok", 200)], lines


async def test_a_stream_cut_after_its_200_logs_the_200_and_how_it_ended(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A stream whose engine dies after its first token: the client received 200 (the line's `status`), the stream
    did not end well (its `outcome`)."""
    def dies(path: str, req: dict) -> H.Script:
        return H.stream(H.chunk(b"data: " + orjson.dumps(H.token("Hi")) + b"\n\n"), H.CLOSE)

    async for g in grid(tmp_path, dies, good=dies):
        with caplog.at_level("INFO", logger="aigrid.access"):
            r = await g.post("chat", True)
        assert r.status_code == 200, r.text
        lines = [rec.aigrid_fields for rec in caplog.records if rec.name == "aigrid.access"]  # type: ignore[attr-defined]
        assert [line["status"] for line in lines] == [200] and lines[0]["outcome"] != "ok", lines


@pytest.mark.parametrize("door", ["chat", "completions", "messages", "responses"])
async def test_the_access_line_of_a_refused_request_names_the_model_it_asked_for(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, door: str) -> None:
    """A request refused by its checks (a temperature that is no number) logged `model: ""` though its body named
    one: the model the client asked for is what an operator looks for."""
    async for g in grid(tmp_path, sane):
        with caplog.at_level("INFO", logger="aigrid.access"):
            r = await g.post(door, False, temperature="hot")
        assert r.status_code == 400, r.text
        lines = [rec.aigrid_fields for rec in caplog.records if rec.name == "aigrid.access"]  # type: ignore[attr-defined]
        assert [(line["model"], line["status"]) for line in lines] == [("smollm2-135m", 400)], lines


async def test_a_model_that_is_no_name_is_not_logged_as_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A `model` that is no string (a client's mistake) is logged as none asked for, and a long one cut to the
    schema's 256 characters."""
    async for g in grid(tmp_path, sane):
        with caplog.at_level("INFO", logger="aigrid.access"):
            await g.post("chat", False, model=["smollm2-135m"])
            await g.post("chat", False, model="m" * 5000)
        lines = [rec.aigrid_fields for rec in caplog.records if rec.name == "aigrid.access"]  # type: ignore[attr-defined]
        assert [line["model"] for line in lines] == ["", "m" * 256], lines
