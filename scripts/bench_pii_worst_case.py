"""The personal-data detector's cost on long runs of digit groups, its worst case (docs/security.md, "Limits"):
one `find_pii` call on N characters of each repeated unit, of random digit groups and of random IBAN-like words
(seed 5), in ms (wall, and this process's CPU).

    .venv/bin/python scripts/bench_pii_worst_case.py [N]          # N characters (default 300,000)

Before/after a change: run it with PYTHONPATH set to a `git archive REV src` of the other tree."""

from __future__ import annotations

import random
import string
import sys
import time

from aigrid.security.firewall.pii import find_pii

UNITS = ("12 ", "1 2 ", "123 4567 ", "+1 415 555 0100 ", "AB00 ")
"""Runs of like groups; "AB00 ": an IBAN candidate at every fifth character, each refused whole and read again up to
each space in it (pii._iban_end, thirty-fifth session; each candidate once a reading since the thirty-sixth)."""


def random_groups(n: int, rng: random.Random) -> str:
    """n characters of digit groups of 1-5 digits, each followed by a space, hyphen or dot."""
    out: list[str] = []
    size = 0
    while size < n:
        group = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 5))) + rng.choice("  -. ")
        out.append(group)
        size += len(group)
    return "".join(out)[:n]


def random_iban_words(n: int, rng: random.Random) -> str:
    """n characters of words of two capitals and two digits, each followed by a space: an IBAN candidate at every
    word, each unlike the others (none worked out once for many, as in "AB00 " * N)."""
    out: list[str] = []
    size = 0
    while size < n:
        word = "".join(rng.choice(string.ascii_uppercase) for _ in range(2)) + f"{rng.randint(0, 99):02d} "
        out.append(word)
        size += len(word)
    return "".join(out)[:n]


def timed(name: str, text: str) -> None:
    """One find_pii's wall time, and its CPU time (this process's: on a shared machine less of the others' load)."""
    started, cpu = time.perf_counter(), time.process_time()
    items = find_pii(text)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(f"{name!r:22} {len(text):>9,} chars {wall * 1000:8.0f} ms  cpu {cpu * 1000:6.0f} ms  items={len(items)}")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 300_000
    for unit in UNITS:
        timed(unit, unit * (n // len(unit)))
    timed("random groups", random_groups(n, random.Random(5)))
    timed("random 'XX99 ' words", random_iban_words(n, random.Random(5)))


if __name__ == "__main__":
    main()
