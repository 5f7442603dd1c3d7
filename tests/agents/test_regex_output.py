"""regex's `sub` writes its result out no further than the tool shows it (helper 132, 5 Dec 2026)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import regex

from aigrid.agents.regex_tool import MAX_OUTPUT, RegexTool
from aigrid.agents.tool import NO_CONTEXT, ToolError

HANG_S = 120.0
"""The tool's timeout in the tests that read memory: a hang's bound, not a timing (the sub and its deadline run on a
thread, by the wall clock). 10 s failed a run of the suite at load ~20: the 20,000 characters backwards below take
about 1 s of CPU traced, 5.4 s of wall at load 12."""


async def test_a_replacement_that_multiplies_the_text_is_written_out_no_further_than_the_output_bound() -> None:
    # every position's lookahead captures the rest of the text and each match writes it out 100 times: the whole
    # result is 100 x 2,000^2 / 2 = 2 x 10^8 characters (at 100,000 characters of text, 5 x 10^11), all of it
    # written before it was cut to 4,000 (about 400 MB here; 850 MB within the 0.5 s timeout at 100,000)
    out, peak = await _traced({"pattern": "(?=(.*))", "text": "a" * 2_000, "mode": "sub", "replacement": "\\1" * 100})
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB allocated for a result shown as {MAX_OUTPUT} characters"
    assert out == "a" * MAX_OUTPUT + f"... (cut at {MAX_OUTPUT} characters)"


@pytest.mark.parametrize(("pattern", "replacement", "text"), [
    ("", "x", "abc"), ("a*", "-", "baaac"), (r"(\w)(\w)?", r"\2\1", "abcde"), ("x*", r"[\g<0>]", "axxb"),
    (r"(?=(.))", r"\1", "abc"), (r"\b", "|", "hi there"), (r"(?P<d>\d+)", r"<\g<d>>", "a 12 b 345"),
    (r"\d+", r"\n\t\\", "1 2"), ("z", "y", "no match here"),
    # an empty text without a match: the package never reads the replacement (twenty-third session: was refused)
    ("x", "\\", ""), ("x", r"\g<nope>", ""), ("(?r)x", "\\", ""),
])
async def test_sub_answers_as_the_package_s_own_sub(pattern: str, replacement: str, text: str) -> None:
    out = await RegexTool().run({"pattern": pattern, "text": text, "mode": "sub", "replacement": replacement},
                                NO_CONTEXT)
    assert out == regex.compile(pattern).sub(replacement, text)


async def test_a_long_result_is_cut_and_an_invalid_replacement_is_refused() -> None:
    out = await RegexTool().run({"pattern": "a", "text": "a" * 5_000, "mode": "sub", "replacement": "bb"}, NO_CONTEXT)
    assert out == "b" * MAX_OUTPUT + f"... (cut at {MAX_OUTPUT} characters)"
    with pytest.raises(ToolError, match="invalid replacement"):
        await RegexTool().run({"pattern": "(a)", "text": "xa", "mode": "sub", "replacement": r"\9"}, NO_CONTEXT)
    for pattern, replacement, text in (("", "\\", ""), ("x", "\\", "abc"), ("", r"\g<nope>", "")):
        with pytest.raises((regex.error, IndexError)):  # the package refuses these too: read at a match, or before a search
            regex.compile(pattern).sub(replacement, text)
        with pytest.raises(ToolError, match="invalid replacement"):
            await RegexTool().run({"pattern": pattern, "text": text, "mode": "sub", "replacement": replacement},
                                  NO_CONTEXT)


@pytest.mark.parametrize("args", [
    {"pattern": "(" * 249 + ".*" + ")" * 249, "text": "a" * 100_000, "mode": "search"},  # 249 groups of it all
    {"pattern": "(" * 248 + ".*" + ")" * 248, "text": "a\n" * 50_000, "mode": "fullmatch", "flags": "s"},
])
async def test_matches_and_groups_are_taken_no_longer_than_the_output_shows(args: dict) -> None:
    tracemalloc.start()
    try:
        out = await RegexTool(timeout_s=HANG_S).run(args, NO_CONTEXT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, f"{peak / 1e6:.0f} MB allocated for {len(out)} characters shown"  # 50 MB before
    assert out.startswith(("match 'aaaa", "match 'a\\na")) and len(out) < MAX_OUTPUT + 100


@pytest.mark.parametrize(("args", "expected"), [
    ({"pattern": r"(a)|(b)", "text": "b", "mode": "search"}, "match 'b' at 0-1; groups [None, 'b']"),
    ({"pattern": r"(?P<x>\d)(\d)?", "text": "7", "mode": "fullmatch"}, "match '7' at 0-1; groups ['7', None]"),
    ({"pattern": r"\w+", "text": "ab cd"}, "2 matches: ['ab', 'cd']"),
])
async def test_short_matches_and_groups_read_as_before(args: dict, expected: str) -> None:
    assert await RegexTool().run(args, NO_CONTEXT) == expected


@pytest.mark.parametrize(("pattern", "replacement", "text"), [
    ("(?r)a", "b", "xaxay"), (r"(?r)\w+", r"<\g<0>>", "ab cd"), ("(?r)x*", "-", "abxd"),
    (r"(?r)(\w)(\w)?", r"\2\1", "abcde"), (r"(?r)\b", "|", "hi there"), ("(?r)", "x", "abc"),
])
async def test_a_pattern_searched_backwards_is_replaced_as_the_package_does(pattern: str, replacement: str,
                                                                            text: str) -> None:
    # (?r) finds the matches from the end: each piece was put after the ones before it, "xaxay" read "xaxbbxay"
    out = await RegexTool().run({"pattern": pattern, "text": text, "mode": "sub", "replacement": replacement},
                                NO_CONTEXT)
    assert out == regex.compile(pattern).sub(replacement, text)


async def test_a_long_result_backwards_is_its_start_cut_and_bounded_in_memory() -> None:
    text = "".join(chr(ord("a") + i % 26) for i in range(2_000))
    out = await RegexTool().run({"pattern": "(?r)(.)", "text": text, "mode": "sub", "replacement": r"\1\1\1"},
                                NO_CONTEXT)
    assert out == regex.sub("(?r)(.)", r"\1\1\1", text)[:MAX_OUTPUT] + f"... (cut at {MAX_OUTPUT} characters)"
    out, peak = await _traced({"pattern": "(?r)(?<=(.*))", "text": "a" * 2_000, "mode": "sub",
                               "replacement": "\\1" * 100})
    assert peak < 20_000_000, f"{peak / 1e6:.0f} MB allocated for a result shown as {MAX_OUTPUT} characters"
    assert out == "a" * MAX_OUTPUT + f"... (cut at {MAX_OUTPUT} characters)"


async def _traced(args: dict) -> tuple[str, int]:
    """The tool's answer to `args` (timeout HANG_S) and the most memory Python allocated meanwhile."""
    tracemalloc.start()
    try:
        out = await RegexTool(timeout_s=HANG_S).run(args, NO_CONTEXT)
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(("pattern", "size"), [
    ("(?=(.*))", 100_000),
    # backwards every position's look-behind reads back to the text's start, n^2/2 steps: 100,000 characters took
    # 4.5-5 s of CPU (regex 2026.11.24 and 2026.12.2), past a 10 s timeout on a machine loaded 6x; 20,000 are
    # still 2 MB written per match by Match.expand
    ("(?r)(?<=(.*))", 20_000),
])
async def test_one_replacement_is_written_out_no_further_than_the_output_bound(pattern: str, size: int) -> None:
    # the first match's group is the whole text and the replacement repeats it 100 times: Match.expand wrote
    # 10^7 characters (10 MB) at 100,000 characters for a piece of which 4,000 could be shown
    out, peak = await _traced({"pattern": pattern, "text": "a" * size, "mode": "sub", "replacement": "\\1" * 100})
    assert peak < 1_000_000, f"{peak / 1e6:.1f} MB allocated for a result shown as {MAX_OUTPUT} characters"
    assert out == "a" * MAX_OUTPUT + f"... (cut at {MAX_OUTPUT} characters)"


@pytest.mark.parametrize(("pattern", "replacement", "text"), [
    ("b", "x" * 150, "ab" * 60), (r"(\w+) (\w+)", r"\2-\g<1>" * 20, "alpha beta " * 400),
    ("(?r)b", "x" * 150, "ab" * 60), (r"(?r)(\w+)(z)?", r"[\2\1]" * 30, "word " * 1_000),
    (r"(?P<n>\d)", r"\g<n>\n" * 25, "12345 " * 300),
])
async def test_a_result_cut_inside_a_replacement_or_between_matches_is_the_package_s_start(
        pattern: str, replacement: str, text: str) -> None:
    whole = regex.compile(pattern).sub(replacement, text)
    assert len(whole) > MAX_OUTPUT
    out = await RegexTool().run({"pattern": pattern, "text": text, "mode": "sub", "replacement": replacement},
                                NO_CONTEXT)
    assert out == whole[:MAX_OUTPUT] + f"... (cut at {MAX_OUTPUT} characters)"


def test_the_tool_imports_with_the_regex_package_laid_out_as_before_2025_10_20(tmp_path) -> None:
    # pyproject allows regex>=2024.1; until 2025.10.20 the package's module was regex/regex.py (no _main.py), and
    # `from regex import _main` made the tool (and the gateway that imports it) fail to import
    installed = Path(regex.__file__).parent
    old = tmp_path / "regex"
    shutil.copytree(installed, old, ignore=shutil.ignore_patterns("__pycache__", "tests"))
    (old / "_main.py").rename(old / "regex.py")
    (old / "__init__.py").write_text("from .regex import *\nfrom . import regex\n__all__ = regex.__all__\n")
    code = ("import regex; assert regex.compile.__module__ == 'regex.regex', regex.compile.__module__\n"
            "from aigrid.agents.regex_tool import _sub\n"
            "print(_sub(regex.compile('(b)'), r'<\\1>', 'abc', 1.0))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
    assert done.returncode == 0, done.stderr[-2_000:]
    assert done.stdout.strip() == "a<b>c"
