"""regex: regular expressions with a time limit.

Python's `re` cannot be interrupted, so one catastrophic pattern such as `(a|aa)+$` on a long input would
hold a worker for minutes. The `regex` package can: every call here passes `timeout=`, and the match runs
in a worker thread with the GIL released (`concurrent=True`), so the event loop keeps serving while a bad
pattern is stopped at the deadline. Pattern, text and output are all bounded.

Compiling is not: the `regex` package writes a counted repeat out in full (`a{1000}` is a string of 1,000
characters, about 280 bytes of memory each), nested ones multiplied, on the event loop, with no timeout:
`((a{100}){100}){100}` took 0.36 s and 290 MB, and `((a{1000}){1000}){1000}` (24 characters) grows until the
kernel kills the process. So a pattern whose repeats could write out more than MAX_EXPANSION items
(`expansion`, an upper bound read from the pattern's text) is refused before it is compiled.
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
MAX_EXPANSION = 20_000
"""Most items a pattern's counted repeats may write out (`expansion`): `a{20000}` compiles in about 5 ms."""
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
        if expansion(pattern) > MAX_EXPANSION:
            raise ToolError(f"the pattern's counted repeats are too large (more than {MAX_EXPANSION} items written "
                            "out, nested repeats multiplied); use smaller counts or * and +")
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


_COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")
_BRACED_ESCAPES = frozenset("pPNxuUg")


def expansion(pattern: str) -> int:
    """An upper bound of the items `pattern` is written out to when compiled: each character, escape or class
    counts 1, a group the sum of its contents (its alternatives added, not the larger taken), and a counted
    repeat `{m}`, `{m,n}`, `{m,}` multiplies by its largest number the largest item since the previous repeat
    (the item it repeats is among them: whitespace and comments of verbose mode in between count as items too).
    Read from the text alone, never parsed by `regex`; a class ends at its first `]` (nested sets of version 1
    end later, so what follows is counted and the bound only grows)."""
    stack: list[list[int]] = [[0, 0]]  # per open group: [its total so far, the largest item since a repeat]
    i, n = 0, len(pattern)
    while i < n:
        c, size = pattern[i], 1
        if c == "\\":
            i += 2
            if i - 1 < n and pattern[i - 1] in _BRACED_ESCAPES and pattern.startswith("{", i):
                close = pattern.find("}", i)
                i = n if close < 0 else close + 1
        elif c == "[":
            j = i + 1 + pattern.startswith("^", i + 1)
            j += pattern.startswith("]", j)  # a ] first in a class is the character
            while j < n and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            i = j + 1
        elif c == "(":
            stack.append([0, 0])
            i += 1
            continue
        elif c == ")" and len(stack) > 1:
            size = max(1, stack.pop()[0])
            i += 1
        elif c == "{" and (m := _COUNT.match(pattern, i)) and (m.group(1) or m.group(2)):
            count = max(int(m.group(1) or 0), int(m.group(2) or 0))
            top = stack[-1]
            top[0] += top[1] * max(count - 1, 0)
            top[1] = 0
            i = m.end()
            if top[0] > MAX_EXPANSION:  # big enough to refuse: no need to read on (nor to multiply huge numbers)
                return top[0]
            continue
        else:
            i += 1
        top = stack[-1]
        top[0] += size
        top[1] = max(top[1], size)
    while len(stack) > 1:  # groups left open (the pattern does not compile): count them anyway
        size = stack.pop()[0]
        stack[-1][0] += size
    return stack[0][0]


def _clip(s: str) -> str:
    return s if len(s) <= MAX_OUTPUT else s[:MAX_OUTPUT] + f"... ({len(s) - MAX_OUTPUT} more characters)"
