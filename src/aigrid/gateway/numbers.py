"""Whole numbers a client writes as text (query parameters, Content-Length, form fields), read one way.

Only plain ASCII digits are a number ('²' and '١٠' are digits to str.isdigit, not to int), and a run of
thousands of digits is read without int(), which refuses more than 4,300 digits (ValueError: a 500 where the
client's 400 was due, on every list's `limit`)."""

from __future__ import annotations

MAX_DIGITS = 18
"""Significant digits read exactly; a longer number reads as 10**MAX_DIGITS, above every limit of the gateway."""


def plain_int(text: str) -> int | None:
    """The number `text` writes in plain ASCII digits (leading zeros allowed), or None when it is not one."""
    if not (text.isascii() and text.isdigit()):
        return None
    significant = text.lstrip("0")
    return int(significant or "0") if len(significant) <= MAX_DIGITS else 10**MAX_DIGITS
