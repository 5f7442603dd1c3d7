"""One error line of the command line, the same from every command: `error: MESSAGE` on the given console,
the message escaped (a path or a header with `[...]` in it is printed as written, never read as rich markup;
a character that is not printable, as an escape sequence's ESC in a key of a spec file, shown escaped: printed,
it wrote the terminal's clipboard or erased the lines above) and never wrapped mid-sentence."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape

from aigrid.printable import printable_lines


def counted(n: int, noun: str, plural: str | None = None, *, grouped: bool = False) -> str:
    """`1 record`, `0 records`, `2 records` (`plural` where adding an s is wrong): a count as the command line
    prints it, the noun agreeing with the number; `grouped`: thousands separated (`1,500 requests`)."""
    return (f"{n:,}" if grouped else str(n)) + f" {noun if n == 1 else plural or noun + 's'}"


def agreeing(n: int, one: str, many: str) -> str:
    """The words of `one` or `many` that agree with a count of `n` (`is`/`are`, `was skipped`/`were skipped`,
    `an audit record`/`audit records`): the verb or phrase beside a `counted` noun, one rule for every command."""
    return one if n == 1 else many


def print_error(console: Console, message: object) -> None:
    console.print(f"[bold red]error:[/] {escape(printable_lines(str(message)))}", highlight=False, soft_wrap=True)


KINDS = {"grid": "a grid spec (for `aigrid up`, `aigrid gateway` and `aigrid spec check`)",
         "scenario": "a simulator scenario (for `aigrid sim`)",
         "demand": "a planner demand file (for `aigrid plan`)"}


def input_kind(raw: object) -> str | None:
    """Which of aigrid's YAML inputs a file's top-level mapping is, by a field only that kind has: a grid spec
    its `endpoints`, a demand file its `traffic` or `supply`, a scenario its `duration_s` or `requests`; None for
    none of them. One of the two is enough: a scenario whose `duration_s` was mistyped was checked as a grid
    spec (a dozen errors, none of them the typo) where it is checked as a scenario (`did you mean duration_s?`)."""
    if not isinstance(raw, dict):
        return None
    if "endpoints" in raw:
        return "grid"
    if {"traffic", "supply"} & raw.keys():
        return "demand"
    if {"duration_s", "requests"} & raw.keys():
        return "scenario"
    return None


def wrong_kind(path: Path, expected: str) -> str | None:
    """`PATH is a grid spec (for ...), not a simulator scenario` when the file that failed to load as
    `expected` is plainly another kind of input (its errors were a list of fields it should not have)."""
    from aigrid.errors import AigridError
    from aigrid.spec.load import read_yaml

    try:
        kind = input_kind(read_yaml(path))
    except AigridError:
        return None
    if kind is None or kind == expected:
        return None
    return f"{path} is {KINDS[kind]}, not {KINDS[expected].split(' (')[0]}"
