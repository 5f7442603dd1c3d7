"""Text from a file or a client shown on a terminal: its control characters escaped."""

from __future__ import annotations

import csv
import re
from typing import Any, TextIO

from rich.text import Text


def printable(text: str) -> str:
    """`text` as one printable line: a control character (an escape sequence's ESC), a line or paragraph separator,
    a format character (a bidi override) and the backslash escaped as repr writes them, so a value cannot add a
    line to a report (a fake 'anchor:') or change how the terminal shows it."""
    if text.isprintable() and "\\" not in text:
        return text
    return "".join(c if c.isprintable() and c != "\\" else repr(c)[1:-1] for c in text)


def printable_lines(text: str) -> str:
    """`text` with its lines kept and every other character that is not printable escaped as repr writes it (a
    message's backslashes as they are: `'\\t'` in a YAML error stays readable)."""
    if text.replace("\n", "").isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else repr(c)[1:-1] for c in text)


def printable_text(value: object) -> Text:
    """`value` as a rich Text shown as written: never rich markup (a `[/x]` is a MarkupError, a `[link=..]` a link in
    the operator's terminal), its control characters escaped (printable). For a table's cell or title of text that
    is not the program's own (a scenario's or an engine's)."""
    return Text(printable(str(value)))


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP's list for CSV injection)."""
_FORMULA_AFTER_SEPARATOR = re.compile(r"(?<=[,;\t\r\n])(?=[=+\-@])")
"""A formula's start after a character that a reader in another locale may take for a cell's or a row's end."""


def spreadsheet_cell(value: object) -> object:
    """A CSV cell a spreadsheet will not run: text that opens with = + - @ (or a tab or CR) gets a leading '
    (OWASP's rule; a model or tenant name, a city, an engine's message is someone else's text), and so does each
    such character that follows a `,`, `;`, tab or line break inside it: Excel whose list separator is `;` (most of
    Europe) opens a comma-separated file without its quotes, `a;=HYPERLINK(..)` two cells, the second a formula.
    Numbers, None and booleans as they are, so a spreadsheet still reads them as numbers."""
    if not isinstance(value, str):
        return value
    if any(c in value for c in ",;\t\r\n"):
        value = _FORMULA_AFTER_SEPARATOR.sub("'", value)
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def spreadsheet_writer(out: TextIO, **options: Any) -> Any:
    """A csv.writer whose every text cell is quoted and numbers are not (QUOTE_NONNUMERIC, as OWASP asks: a cell
    with a `;` is one cell to a reader that honours quotes whatever its separator). Pass each row's cells through
    spreadsheet_cell."""
    return csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, **options)


_MARKDOWN = str.maketrans({"|": "\\|", "[": "\\[", "]": "\\]", "<": "&lt;"})


def markdown_cell(text: object) -> str:
    """`text` as one cell of a Markdown table that shows it as written: printable (one line, escapes escaped), its
    `|` not a column, its `[` not a link (nor rich markup, where the table is printed on a terminal) and its `<`
    not an HTML tag (a Markdown viewer renders `<img src=x onerror=...>`)."""
    return printable(str(text)).translate(_MARKDOWN)


def printable_json(line: str) -> str:
    """A line of JSON with every character that does not print written as a JSON escape (`\\u001b`, which reads back
    as the same value): JSON escapes < 0x20 only, so DEL, C1 controls (0x9b is a CSI), bidi overrides, U+2028 and
    lone surrogates would reach the terminal or the collector raw. ASCII without DEL is looked at first
    (isprintable() took 0.85 us of an access line's 10.5)."""
    if (line.isascii() and "\x7f" not in line) or line.isprintable():
        return line
    return "".join(c if c.isprintable() else _json_escaped(c) for c in line)


def _json_escaped(c: str) -> str:
    """`c` as a JSON string escape (a character past U+FFFF as its UTF-16 pair)."""
    n = ord(c)
    if n <= 0xFFFF:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 + (n >> 10):04x}\\u{0xDC00 + (n & 0x3FF):04x}"
