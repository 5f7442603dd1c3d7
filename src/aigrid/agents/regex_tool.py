"""regex: regular expressions with a time limit.

Python's `re` cannot be interrupted, so one catastrophic pattern such as `(a|aa)+$` on a long input would
hold a worker for minutes. The `regex` package can: every call here passes `timeout=`, and the match runs
in a worker thread with the GIL released (`concurrent=True`), so the event loop keeps serving while a bad
pattern is stopped at the deadline. Pattern, text and output are all bounded.

Compiling is not: the `regex` package writes a counted repeat out in full (`a{1000}` is a string of 1,000
characters, about 280 bytes of memory each), nested ones multiplied, on the event loop, with no timeout:
`((a{100}){100}){100}` took 0.36 s and 290 MB, and `((a{1000}){1000}){1000}` (24 characters) grows until the
kernel kills the process. So a pattern whose repeats would write out more than MAX_EXPANSION items is refused
before it is compiled (`expansion`: the package's own parse of the pattern, which writes nothing out, walked for
its repeats; a scan of the pattern's text, tried first, was fooled by a `[` in a comment or a nested set).
"""

from __future__ import annotations

import asyncio
import importlib
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

import regex
from regex import _regex_core

from aigrid.agents.tool import ToolContext, ToolError, require_str
from aigrid.security.firewall.texts import Source

MAX_PATTERN = 500
MAX_TEXT = 100_000
MAX_MATCHES = 100
MAX_OUTPUT = 4_000
MAX_EXPANSION = 20_000
"""Most items a pattern's counted repeats may write out (`expansion`): `a{20000}` compiles in about 5 ms."""
FLAGS: Mapping[str, int] = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE}
_core: Any = _regex_core
"""The `regex` package's own parser (private, not in its stubs): what `expansion` reads a pattern with."""
_replacements: Any = importlib.import_module(regex.compile.__module__)
"""Where the package compiles a replacement (`_compile_replacement_helper`, private, not in its stubs): `_sub`
writes each replacement out from it. The module `regex.compile` is defined in: `regex._main` from 2025.10.20,
`regex.regex` before (pyproject allows 2024.1 on; `from regex import _main` failed there at import)."""


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
            if expansion(pattern, flags) > MAX_EXPANSION:
                raise ToolError(f"the pattern's counted repeats are too large (more than {MAX_EXPANSION} items written "
                                "out, nested repeats multiplied); use smaller counts or * and +")
            compiled = regex.compile(pattern, flags)
        except (regex.error, ValueError, OverflowError, RecursionError, KeyError) as e:  # ValueError: flags that
            # conflict (KeyError before regex 2025: (?V0)(?V1) looked up a version flag of both in its table)
            raise ToolError(f"invalid pattern: {e}") from e
        try:
            return await asyncio.to_thread(self._apply, compiled, mode, text, replacement)
        except TimeoutError as e:
            raise ToolError(f"the pattern took longer than {self.timeout_s}s on this text "
                            "(catastrophic backtracking?); simplify it") from e

    def _apply(self, compiled: Any, mode: str, text: str, replacement: str) -> str:
        t = self.timeout_s
        if mode == "sub":
            return _sub(compiled, replacement, text, t)
        if mode in ("search", "fullmatch"):
            m = (compiled.search if mode == "search" else compiled.fullmatch)(text, timeout=t, concurrent=True)
            if m is None:
                return "no match"
            groups = [_part(text, m.span(i)) for i in range(1, compiled.groups + 1)]
            return _clip(f"match {_part(text, m.span())!r} at {m.start()}-{m.end()}"
                         + (f"; groups {groups!r}" if groups else ""))
        found = []
        deadline = time.monotonic() + t  # the timeout bounds each match; this bounds them all
        for m in compiled.finditer(text, timeout=t, concurrent=True):
            found.append(_part(text, m.span()))
            if len(found) == MAX_MATCHES or time.monotonic() > deadline:
                break
        return _clip(f"{len(found)} matches: {found!r}" if found else "no match")


def expansion(pattern: str, flags: int = 0) -> int:
    """How many items compiling `pattern` writes its repeats out to: a repeat's least count (`a{1000,}` writes
    1,000 copies, `a{0,1000}` none) times what it repeats, nested repeats multiplied, alternatives added. Read
    from the `regex` package's own parse (what its compile does before it writes anything out, so classes,
    comments, verbose mode and versions are read exactly as it reads them); regex.error for a pattern it refuses."""
    global_flags = flags
    while True:  # as regex._main._compile: a flag set inside the pattern for all of it parses it again
        source = _core.Source(pattern)
        info = _core.Info(global_flags, source.char_type, {})
        source.ignore_space = bool(info.flags & regex.VERBOSE)
        if hasattr(source, "use_unicode_space"):  # from regex 2026.12.2; before it, _compile did not call it
            source.use_unicode_space(bool(info.flags & regex.VERSION1))
        try:
            return _items(_core._parse_pattern(source, info))
        except _core._UnscopedFlagSet:
            global_flags = info.global_flags


def _items(node: Any) -> int:
    if isinstance(node, _core.SetBase):  # a class is one item, whatever its members
        return 1
    parts = [getattr(node, name, None) for name in ("subpattern", "yes_item", "no_item")]
    parts = [p for p in parts if p is not None] + [*(getattr(node, "items", None) or ()),
                                                      *(getattr(node, "branches", None) or ())]
    inner = sum(map(_items, parts)) if parts else 1
    least = getattr(node, "min_count", None)  # a repeat (greedy, lazy, possessive)
    return inner * least if isinstance(least, int) and least > 1 else inner


def _sub(compiled: Any, replacement: str, text: str, timeout_s: float) -> str:
    """`compiled.sub(replacement, text)` written out no further than MAX_OUTPUT: the package's own `sub` writes the
    whole result before it is cut, and a replacement of group references repeats what they match at every match
    (`(?=(.*))` replaced by 100 `\\1` on 100,000 characters is 5 x 10^11 characters): about 850 MB were allocated
    within the 0.5 s timeout, per call. The same matches (`finditer` finds what `sub` replaces), each replacement
    written out by `_expand` no further than the bound, the deadline bounding them all. A pattern searched
    backwards (`(?r)`) finds its matches from the end: the pieces go before those already written, and only the
    last ones found (the result's start) are kept past the bound."""
    backwards = bool(compiled.flags & regex.REVERSE)
    # the package reads the replacement before it searches, except in an empty text, where it reads it only at a
    # match: `sub("x", "\\", "")` is "" (this tool said "invalid replacement" until the twenty-third session)
    template = _template(compiled, replacement) if text else None
    pieces: deque[str] = deque()
    size, last, dropped = 0, len(text) if backwards else 0, False
    deadline = time.monotonic() + timeout_s
    for m in compiled.finditer(text, timeout=timeout_s, concurrent=True):
        # no more of a piece than can be shown (a piece backwards goes before every later one): one past the bound
        room = MAX_OUTPUT + 1 - (0 if backwards else size)
        template = _template(compiled, replacement) if template is None else template
        try:
            if backwards:
                piece = _expand(template, m, text, room)
                piece += text[m.end():min(last, m.end() + room - len(piece))]
            else:
                piece = text[last:min(m.start(), last + room)]
                piece += _expand(template, m, text, room - len(piece))
        except IndexError as e:  # a group the pattern does not have (`\9`)
            raise ToolError(f"invalid replacement: {e}") from e
        pieces.append(piece)
        size += len(piece)
        last = m.start() if backwards else m.end()
        if backwards:
            dropped = dropped or len(piece) > MAX_OUTPUT
            while size - len(pieces[0]) > MAX_OUTPUT:  # the later pieces alone reach past the bound
                size -= len(pieces.popleft())
                dropped = True
        elif size > MAX_OUTPUT:
            return "".join(pieces)[:MAX_OUTPUT] + f"... (cut at {MAX_OUTPUT} characters)"
        if time.monotonic() > deadline:
            raise TimeoutError
    if not backwards:
        return _clip("".join(pieces) + text[last:])
    out = text[:last] + "".join(reversed(pieces))
    return out[:MAX_OUTPUT] + f"... (cut at {MAX_OUTPUT} characters)" if dropped else _clip(out)


def _template(compiled: Any, replacement: str) -> list[str | int]:
    """The replacement as the package compiles it (literals and group numbers), or the model's error."""
    try:
        template: list[str | int] = _replacements._compile_replacement_helper(compiled, replacement)
    except (regex.error, IndexError) as e:
        raise ToolError(f"invalid replacement: {e}") from e
    return template


def _expand(template: list[str | int], m: Any, text: str, room: int) -> str:
    """What `m.expand(replacement)` writes, `template` being the replacement as the package compiles it (literals
    and group numbers), no longer than `room` characters: each group taken from `text` no further than the room
    left. `m.expand` wrote the whole of it first: 100 `\\1` of a group of 100,000 characters were 10^7 characters
    (10 MB) for each match, however little of it could be shown."""
    out: list[str] = []
    for item in template:
        if room <= 0:
            break
        if isinstance(item, int):
            start, end = m.span(item)
            part = "" if start < 0 else text[start:min(end, start + room)]
        else:
            part = item[:room]
        out.append(part)
        room -= len(part)
    return "".join(out)


def _part(text: str, span: tuple[int, int]) -> str | None:
    """What a match or group spans, no longer than the output shows (None: a group that took no part): each group
    taken whole and written with repr() held 50 MB for 249 nested groups over 100,000 characters, for 4,000 shown."""
    start, end = span
    return None if start < 0 else text[start:min(end, start + MAX_OUTPUT)]


def _clip(s: str) -> str:
    return s if len(s) <= MAX_OUTPUT else s[:MAX_OUTPUT] + f"... ({len(s) - MAX_OUTPUT} more characters)"
