"""A fragment that counts the characters copied when it is added to a text (`text += fragment`): how the tests of
the tool loop's stream readers see that they keep no text that grows by a copy at every fragment (quadratic in the
fragments), without timing anything."""

from __future__ import annotations


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
