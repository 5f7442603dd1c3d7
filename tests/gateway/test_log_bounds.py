"""A log line is bounded and one printable line, whatever a client or an engine put in its values (logs.py)."""

from __future__ import annotations

import io
import json
import logging

import httpx

from aigrid.logs import EXC_MAX_CHARS, FIELD_MAX_CHARS, LINE_MAX_CHARS, MSG_MAX_CHARS, configure, fields

HOSTILE = "a\x1b[2J\x1b]0;owned\x07\x7f\x9b31m\u202eevil\u2028\u2029\u200b\U000e0001\ud800z"
"""ESC sequences, DEL, a C1 CSI, a bidi override, the JSON-legal line separators, a zero-width space, a tag
character past U+FFFF and a lone surrogate."""
BOUND = 32 * FIELD_MAX_CHARS + MSG_MAX_CHARS + EXC_MAX_CHARS + 1024
"""What a line of a few dozen fields, a message and a traceback may reach."""


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_huge_values_are_cut_and_say_how_long_they_were() -> None:
    out = io.StringIO()
    sink = configure("info", out)
    try:
        log = logging.getLogger("aigrid.proxy")
        try:
            raise ValueError("x" * 3_000_000)
        except ValueError:
            log.exception("engine said %s", "y" * 2_000_000, extra=fields(
                model="m" * 2_000_000, tools=["t" * 1000] * 1000, endpoint="fra-1", tokens=12, ok=None))
        log.info("short", extra=fields(model="m" * 5000))  # a line under the bound is left whole
    finally:
        sink.stop()
    first, second = _lines(out)
    assert len(first) < BOUND, len(first)
    line = json.loads(first)
    assert line["model"] == "m" * FIELD_MAX_CHARS + "...(2000000 chars)"
    assert line["msg"].startswith("engine said yyy") and line["msg"].endswith(f"...({2_000_012} chars)")
    assert len(line["msg"]) < MSG_MAX_CHARS + 32
    assert line["tools"].startswith('["ttt') and len(line["tools"]) < FIELD_MAX_CHARS + 32
    assert (line["endpoint"], line["tokens"], line["ok"]) == ("fra-1", 12, None)
    assert line["exc"].endswith("x" * 100) and "chars, the last" in line["exc"]
    assert len(second) < LINE_MAX_CHARS and json.loads(second)["model"] == "m" * 5000


def test_control_and_invisible_characters_are_escaped_and_read_back_the_same() -> None:
    out = io.StringIO()
    sink = configure("info", out)
    try:
        logging.getLogger("aigrid.access").info("model %s", HOSTILE, extra=fields(model=HOSTILE, tenant="Zürich 日本"))
        logging.getLogger("aigrid.access").info("ascii", extra=fields(model="a\x7fb"))  # DEL alone, all ASCII
    finally:
        sink.stop()
    raw, ascii_line = _lines(out)
    assert "\x7f" not in ascii_line and json.loads(ascii_line)["model"] == "a\x7fb"
    assert raw.isprintable(), [c for c in raw if not c.isprintable()]
    assert "Zürich 日本" in raw  # printable characters stay as they are
    line = json.loads(raw)
    assert line["model"] == HOSTILE and line["msg"] == f"model {HOSTILE}"


async def test_a_model_name_a_client_wrote_reaches_the_access_line_escaped(client: httpx.AsyncClient) -> None:
    """/v1/embeddings wrote the model as sent in its access line: ESC, C1 and bidi characters raw (and, until it
    bounded the name at 256 characters, 2 MB of it whole)."""
    out = io.StringIO()
    sink = configure("info", out)
    model = HOSTILE.replace("\ud800", "")  # a lone surrogate is a 400 (not UTF-8)
    try:
        r = await client.post("/v1/embeddings", json={"model": model, "input": "hi"})
    finally:
        sink.stop()
    assert r.status_code == 404
    (raw,) = [line for line in _lines(out) if '"aigrid.access"' in line]
    assert raw.isprintable() and json.loads(raw)["model"] == model
