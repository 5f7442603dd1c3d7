"""How many personal-data items a model reads across a client's pieces (`pii.read_together`: text parts, user turns)
are left unredacted, by where a template might put a break: nowhere (the pieces joined), at one end of a run of
pieces (those before a break, or after one), at both ends of a run of two pieces, and at both ends of a run of three
or more (missed until pii.py 945669b, twenty-fourth session: 12 of 2,328 with the defaults; now read up to each later
seam, `pii._to_break`, and 0 like the other three rows). Random cuttings of the property tests' pieces (tests/security/
test_pii.py), the same for a seed. Usage:
    .venv/bin/python scripts/firewall_seams_pii_breaks.py [CUTTINGS] [SEED]
"""

from __future__ import annotations

import random
import sys

from aigrid.security.firewall.pii import find_pii, read_together

CUTS = ["hello ", "42", " ", "jane", "@", "example", ".com", "4111 ", "1111", "-", "078", "05", "1120", "DE89", "3704",
        "0044", "0532", "0130", "00", "+44", "\u200b", "\n", "x", ".", "\uff10", "…", "ｊ", "+1", "415", "555 ", "0100",
        "AB", "12", "34", "56", "C"]


def runs(n: int) -> dict[str, list[tuple[int, int]]]:
    """The runs of pieces [a, b) a model may read alone, by where their breaks are."""
    return {"no break": [(0, n)],
            "a break at one end": [(0, b) for b in range(2, n)] + [(a, n) for a in range(1, n - 1)],
            "breaks at both ends, two pieces": [(a, a + 2) for a in range(1, n - 2)],
            "breaks at both ends, three pieces or more": [(a, b) for a in range(1, n) for b in range(a + 3, n)]}


def main() -> None:
    cuttings = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rng = random.Random(int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    items = dict.fromkeys(runs(0), 0)
    missed = dict.fromkeys(runs(0), 0)
    for _ in range(cuttings):
        pieces = ["".join(rng.choice(CUTS) for _ in range(rng.randint(0, 5))) for _ in range(rng.randint(3, 6))]
        starts = [sum(map(len, pieces[:i])) for i in range(len(pieces) + 1)]
        found = read_together(pieces, [find_pii(p) for p in pieces])
        gone = {starts[k] + i for k, matches in enumerate(found) for m in matches for i in range(m.start, m.end)}
        joined = "".join(pieces)
        for where, spans in runs(len(pieces)).items():
            for a, b in spans:
                for m in find_pii(joined[starts[a]:starts[b]]):
                    start, end = starts[a] + m.start, starts[a] + m.end
                    if any(start < seam < end for seam in starts[a + 1:b]):  # across a seam: read_together's
                        items[where] += 1
                        missed[where] += not all(i in gone for i in range(start, end) if joined[i] != "\u200b")
    for where in items:
        print(f"{where}: {missed[where]} of {items[where]} items across a seam left unredacted")


if __name__ == "__main__":
    main()
