"""regex: regular expressions with a time limit.

Python's `re` cannot be interrupted, so one catastrophic pattern such as `(a|aa)+$` on a long input would
hold a worker for minutes. The `regex` package can: every call here passes `timeout=`, and the match runs
in a worker thread with the GIL released (`concurrent=True`), so the event loop keeps serving while a bad
pattern is stopped at the deadline. Pattern, text and output are all bounded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import regex

from aigrid.agents.tool import ToolContext, ToolError, require_str
from aigrid.security.firewall.texts import Source

MAX_PATTERN = 500
MAX_TEXT = 100_000
MAX_MATCHES = 100
MAX_OUTPUT = 4_000
FLAGS: Mapping[str, int] = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}


class RegexTool:
    name = "regex"
    source = Source.TOOL_RESULT
    description = ("Apply a regular expression to a text: mode 'findall' (default) lists the matches, "
                   "'search' gives the first match and its groups, 'fullmatch' tests the whole text, "
                   "'sub' replaces matches with `replacement`. Flags: any of 'imsx'.")
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {
            "pattern": {"type": "string", "maxLength": MAX_PATTERN},
            "text": {"type": "string"},
            "mode": {"enum": ["findall", "search", "fullmatch", "sub"]},
            "replacement": {"type": "string", "maxLength": 200},
            "flags": {"type": "string", "pattern": "^[imsx]{0,4}$"},
        },
        "required": ["pattern", "text"],
        "additionalProperties": False,
    }

    def __init__(self, timeout_s: float = 0.5) -> None:
        self.timeout_s = timeout_s

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        pattern = require_str(arguments, "pattern", max_len=MAX_PATTERN)
        text = require_str(arguments, "text", max_len=MAX_TEXT)
        mode = require_str(arguments, "mode", max_len=10, default="findall")
        replacement = require_str(arguments, "replacement", max_len=200, default="")
        flag_names = require_str(arguments, "flags", max_len=4, default="")
        if mode not in ("findall", "search", "fullmatch", "sub"):
            raise ToolError(f"unknown mode {mode!r}")
        flags = 0
        for f in flag_names:
            if f not in FLAGS:
                raise ToolError(f"unknown flag {f!r} (allowed: imsx)")
            flags |= FLAGS[f]
        try:
            compiled = regex.compile(pattern, flags)
        except (regex.error, OverflowError, RecursionError) as e:
            raise ToolError(f"invalid pattern: {e}") from e
        try:
            return await asyncio.to_thread(self._apply, compiled, mode, text, replacement)
        except TimeoutError as e:
            raise ToolError(f"the pattern took longer than {self.timeout_s}s on this text "
                            "(catastrophic backtracking?); simplify it") from e

    def _apply(self, compiled: Any, mode: str, text: str, replacement: str) -> str:
        t = self.timeout_s
        if mode == "sub":
            try:
                out = compiled.sub(replacement, text, timeout=t, concurrent=True)
            except (regex.error, IndexError) as e:
                raise ToolError(f"invalid replacement: {e}") from e
            return _clip(out)
        if mode in ("search", "fullmatch"):
            m = (compiled.search if mode == "search" else compiled.fullmatch)(text, timeout=t, concurrent=True)
            if m is None:
                return "no match"
            groups = [g for g in m.groups()]
            return _clip(f"match {m.group(0)!r} at {m.start()}-{m.end()}" + (f"; groups {groups!r}" if groups else ""))
        found = []
        deadline = time.monotonic() + t  # the timeout bounds each match; this bounds them all
        for m in compiled.finditer(text, timeout=t, concurrent=True):
            found.append(m.group(0))
            if len(found) == MAX_MATCHES or time.monotonic() > deadline:
                break
        return _clip(f"{len(found)} matches: {found!r}" if found else "no match")


def _clip(s: str) -> str:
    return s if len(s) <= MAX_OUTPUT else s[:MAX_OUTPUT] + f"... ({len(s) - MAX_OUTPUT} more characters)"
