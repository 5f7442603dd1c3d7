"""Self and inclusive shares per function from a py-spy raw profile (`py-spy record -f raw -o prof.txt ...`).

    python scripts/profile_summary.py prof.txt [--top 40]

Each line of a raw profile is a semicolon-separated stack, outermost first, and a sample count; a function
counts once per sample however often it recurs in the stack. Code generated at run time (a dataclass's
`__init__`, file `<string>`) is named with the line that called it, so each class's constructor shows apart.
Profiling a simulator run, for example:

    py-spy record -r 500 -f raw -o prof.txt -- python scripts/sim_cpu.py examples/sim/planet.yaml 50000 balanced
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path


def _name(frame: str) -> str:
    """'func (path/file.py:123)' -> 'func (path/file.py)'."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit(':', 1)[0]})" if where else func


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in args.profile.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        raw = stack.split(";")
        frames = [_name(f) if "(<string>" not in f or i == 0 else f"{_name(f)} <- {raw[i - 1]}"
                  for i, f in enumerate(raw)]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    print(f"{total} samples")
    for title, table in (("self", own), ("inclusive", inclusive)):
        print(f"--- {title}")
        for k, c in table.most_common(args.top):
            print(f"{100 * c / max(total, 1):5.1f}% {k}")


if __name__ == "__main__":
    main()
