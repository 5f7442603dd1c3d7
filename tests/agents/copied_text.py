"""A fragment that counts the characters copied when it is added to a text (`text += fragment`): how the tests of
the tool loop's stream readers see that they keep no text that grows by a copy at every fragment (quadratic in the
fragments), without timing anything."""

from __future__ import annotations

from typing import Any


class Copied:
    """The characters copied so far by adding Fragments made from it to a text."""

    def __init__(self) -> None:
        self.chars = 0

    def fragment(self, text: str) -> Fragment:
        return Fragment(text, self)


class Fragment(str):
    """A str whose addition to another counts the other's characters (written out again with it) in `copied`."""

    copied: Copied

    def __new__(cls, text: str, copied: Copied) -> Fragment:
        made = super().__new__(cls, text)
        made.copied = copied
        return made

    def __radd__(self, other: str) -> str:
        self.copied.chars += len(other)
        return str(other) + str(self)


class Counted(str):
    """A str every new str made from which (added to another on either side, or a slice of it) is a Counted again
    and counts its characters in `copied`: a text grown by `+=` or cut by slicing at every step, kept in a dict or an
    attribute and made from a client's Counted text, counts all it copies (a `"".join` or an f-string of it makes a
    plain str, once)."""

    copied: Copied

    def __new__(cls, text: str, copied: Copied) -> Counted:
        made = super().__new__(cls, text)
        made.copied = copied
        return made

    def _made(self, text: str) -> Counted:
        self.copied.chars += len(text)
        return Counted(text, self.copied)

    def __add__(self, other: str) -> Counted:
        return self._made(str(self) + str(other))

    def __radd__(self, other: str) -> Counted:
        return self._made(str(other) + str(self))

    def __getitem__(self, key: Any) -> Counted:
        return self._made(str.__getitem__(self, key))
