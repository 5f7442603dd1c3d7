"""What the gateway's nesting scans of a client's constraint fields cost on their worst cases: grammar_nesting
(GBNF's groups: `grammar`, `guided_grammar`, `ebnf`), lark_nesting (Lark's `(...)` and `[...]`: the fields an engine
may read as Lark) and regex_nesting (`guided_regex`, `regex`, a JSON schema's `pattern`), each on a text of the
largest length the gateway scans (schemas.MAX_GRAMMAR_CHARS, 256 KiB) made of one thing: open brackets, escapes
(which the scans' regular expressions step over two characters at a time) or bracket classes.

    .venv/bin/python scripts/bench_constraint_scan.py [--runs 5] [--kib 256]

Prints the best of --runs single calls per scanner and text, in milliseconds (wall time; the machine is shared: the
least is the run least disturbed); no pass/fail. docs/security.md quotes it (the thirty-third session's row on the
grammar bound).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial

from _bestof import best_us

from aigrid.gateway.schemas import MAX_GRAMMAR_CHARS, grammar_nesting, lark_nesting, regex_nesting


def cases(n: int) -> list[tuple[str, Callable[[str], int], str]]:
    """(label, scanner, text of `n` characters) for each worst case."""
    def fill(unit: str, head: str = "", tail: str = "") -> str:
        body = unit * ((n - len(head) - len(tail)) // len(unit))
        return head + body + tail
    return [
        ("grammar_nesting, '('", grammar_nesting, fill("(")),
        ("grammar_nesting, escapes in a literal", grammar_nesting, fill('\\"', '"', '"')),
        ("grammar_nesting, classes '[(]'", grammar_nesting, fill("[(]")),
        ("lark_nesting, '['", lark_nesting, fill("[")),
        ("lark_nesting, '('", lark_nesting, fill("(")),
        ("lark_nesting, escapes in a literal", lark_nesting, fill('\\"', '"', '"')),
        ("regex_nesting, '('", regex_nesting, fill("(")),
        ("regex_nesting, escapes '\\('", regex_nesting, fill("\\(")),
        ("regex_nesting, classes '[(]'", regex_nesting, fill("[(]")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="single calls of each scan; the least is printed")
    parser.add_argument("--kib", type=int, default=MAX_GRAMMAR_CHARS // 1024, help="each text's length in KiB")
    args = parser.parse_args()
    for label, scan, text in cases(args.kib * 1024):
        depth = scan(text)
        ms = best_us(partial(scan, text), 1, args.runs) / 1000
        print(f"{label} ({len(text):,} characters, depth {depth:,}): {ms:.1f} ms")


if __name__ == "__main__":
    main()
