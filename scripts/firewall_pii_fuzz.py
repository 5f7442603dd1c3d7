"""The personal-data fuzz of `pii.read_together`: random pieces of digit groups, separators and address parts (review
R6's fuzz of the twenty-fifth session, /tmp/rv/diff2.py then, the source of the "~1 in 2,000 fuzzed pieces" figure),
every run of pieces a template may put between two breaks read by `find_pii` alone; an item it finds across a seam
of that run that `read_together` left unredacted (a character of it not covered by an item read together; a
zero-width space aside) is a miss. Prints how many cuttings hold a miss, and the misses by class: whether what was
left holds a digit or a letter (part of the item itself went out) or only separators (`-`, `+`, a space between two
numbers made one), with a few examples of each. The same for a seed. Usage:
    .venv/bin/python scripts/firewall_pii_fuzz.py [CUTTINGS] [SEED] [EXAMPLES]
"""

from __future__ import annotations

import random
import sys
from collections import Counter

from aigrid.security.firewall.pii import find_pii, read_together

ALPHABET = ["4111 ", "1111", "-", "078", "05", "1120", "3704", "0044", "0532", "0130", "00", "+44", " ", "+1", "415",
            "555 ", "0100", "1", "2", "3", "4", "5", "0", "9", " ", "-", ".", "+", "(", ")", "x", "@", "a.io", "jo"]


def runs(n: int) -> list[tuple[int, int]]:
    """The runs of pieces [a, b) a model may read between two breaks (or the text's ends)."""
    return [(0, n)] + [(0, b) for b in range(2, n)] + [(a, n) for a in range(1, n - 1)] + \
        [(a, b) for a in range(1, n) for b in range(a + 2, n)]


def misses(pieces: list[str]) -> list[tuple[int, int, str, str, str]]:
    """Each item across a seam of a run left unredacted: (run start, run end, kind, item, item with what was
    redacted shown as #)."""
    starts = [sum(map(len, pieces[:i])) for i in range(len(pieces) + 1)]
    found = read_together(pieces, [find_pii(p) for p in pieces])
    gone = {starts[k] + i for k, matches in enumerate(found) for m in matches for i in range(m.start, m.end)}
    joined = "".join(pieces)
    out = []
    for a, b in runs(len(pieces)):
        for m in find_pii(joined[starts[a]:starts[b]]):
            s, e = starts[a] + m.start, starts[a] + m.end
            if any(s < seam < e for seam in starts[a + 1:b]) and not all(i in gone for i in range(s, e)):
                out.append((a, b, m.kind, joined[s:e], "".join("#" if i in gone else joined[i] for i in range(s, e))))
    return out


def main() -> None:
    cuttings = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 1)
    shown = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    missed = 0
    classes: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    for _ in range(cuttings):
        pieces = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 4))) for _ in range(rng.randint(3, 14))]
        found = misses(pieces)
        if not found:
            continue
        missed += 1
        left = {ch for *_, shown_item in found for ch in shown_item if ch != "#"}
        kind = "digits or letters left" if any(ch.isalnum() for ch in left) else "separators only left"
        classes[kind] += 1
        if len(examples.setdefault(kind, [])) < shown:
            a, b, item_kind, item, masked = found[0]
            examples[kind].append(f"{pieces!r} run {a}..{b}: {item_kind} {item!r} -> {masked!r}")
    print(f"{missed} of {cuttings} cuttings hold an item across a seam left unredacted")
    for kind, n in classes.most_common():
        print(f"  {kind}: {n}")
        for example in examples[kind]:
            print(f"    {example}")


if __name__ == "__main__":
    main()
