"""What reading personal data as a model reads it (`pii.model_reading`: tag characters as ASCII, invisible characters
dropped, look-alikes made Latin, NFKC) costs a large body: `find_pii` on a 4 MiB text (UTF-8) in Russian, in French,
in English with a zero-width space after every word, and in plain English, against the detectors on the text as
written (`pii._find`, what find_pii ran before 5 Dec 2026). Each text holds a few numbers and an address per
sentence, so every detector scans it. CPU time of this process, seconds, the best of RUNS. docs/security.md
("Personal data", "Cost: an ASCII text none; a 4 MiB body ...") quotes it. Usage:
    .venv/bin/python scripts/firewall_pii_reading_cost.py [RUNS]
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from _bestof import best_us

from aigrid.security.firewall.pii import _find, find_pii

MIB = 1 << 20
SENTENCES = {
    "Russian": "Заказ номер 1042 отправлен 12 марта, пишите на ivan@example.ru или звоните по будням. ",
    "French": "La commande n° 1042 a été expédiée le 12 mars ; écrivez à léa@example.fr ou appelez-nous. ",
    "zero-width spaces": "\u200b ".join("Order 1042 shipped on 12 March, write to jo@example.com or call us.".split())
                         + "\u200b ",
    "ASCII": "Order 1042 shipped on 12 March, write to jo@example.com or call us on weekdays. ",
}


def body(sentence: str, size: int = 4 * MIB) -> str:
    """`sentence` repeated to `size` bytes of UTF-8."""
    return sentence * (size // len(sentence.encode()))


def best(fn: Callable[[], object], runs: int) -> float:
    """The least CPU time of `runs` calls, in seconds."""
    return best_us(fn, 1, runs, time.process_time) / 1e6


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for name, sentence in SENTENCES.items():
        text = body(sentence)
        as_written = best(lambda t=text: _find(t, None, 0, True), runs)
        as_read = best(lambda t=text: find_pii(t), runs)
        print(f"4 MiB {name}: {as_written:.2f} s the detectors on the text as written, "
              f"{as_read:.2f} s find_pii (as a model reads it)")


if __name__ == "__main__":
    main()
