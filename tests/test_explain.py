"""`aigrid explain` shows the server's text as text: an engine's error or health reason is neither rich markup nor
a terminal's escape sequence."""

from __future__ import annotations

import io

from rich.console import Console

from aigrid.explain import render_decision

HOSTILE = "HTTP 500: [/x] [link=https://evil.example/login]re-enter your key[/link] \x1b]8;;https://evil\x1b\\"


def test_an_engines_text_in_a_decision_is_shown_as_written() -> None:
    d = {"id": "d1", "policy": "aigrid", "tenant": "t", "model": "m", "status": "ok", "client": None,
         "served_by": "fra-1", "reason": "chosen", "candidates": [],
         "rejected": [{"endpoint": "nrt-1", "site": "nrt", "filter": "health", "reason": HOSTILE}],
         "attempts": [{"endpoint": "iad-1", "ok": False, "ms": 3.0, "error": HOSTILE}, {"endpoint": "fra-1", "ok": True}]}
    out = io.StringIO()
    Console(file=out, width=400, force_terminal=True).print(render_decision(d))
    text = out.getvalue()
    assert text.count("[link=https://evil.example/login]re-enter your key[/link]") == 2, text
    assert "\x1b]8;;https://evil" not in text and "\x1b\\" not in text  # no hyperlink, no raw escape
