"""Text from a file or a client shown on a terminal: its control characters escaped."""

from __future__ import annotations


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
