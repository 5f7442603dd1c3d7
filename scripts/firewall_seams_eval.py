"""What reading a client's texts together (`Firewall._seams` for injection, `pipeline.personal_data` for personal
data) finds where nothing should be found, and what it finds where an attack is cut across texts, on the test split
of scripts/eval_firewall.py (never trained on). scripts/eval_firewall.py scores each text alone and so never reads
two texts together; this reads them as `Firewall.check_texts` does:

- harmless: the prompts of the eval's harmless prompt families shorter than pipeline.SHORT that pass alone, each
  with the next as two user turns (an assistant turn between): pairs flagged, blocked, and with personal data found
  across the two (an item neither turn holds alone);
- attacks: the attacks of the eval's prompt attack families that are blocked alone, cut into parts of fewer than
  pipeline.SHORT characters at random places inside words (never at a space), as one message's text parts: blocked.

    .venv/bin/python scripts/firewall_seams_eval.py [--data ../shared/data/firewall-dev] [--routing ...]
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_firewall import families  # noqa: E402
from firewall_data import Corpus  # noqa: E402

from aigrid.security.firewall.injection import InjectionModel  # noqa: E402
from aigrid.security.firewall.pipeline import SHORT, Firewall, personal_data  # noqa: E402
from aigrid.security.firewall.texts import ModelText, Source  # noqa: E402


def _turns(*texts: str) -> list[ModelText]:
    out: list[ModelText] = []
    for i, text in enumerate(texts):
        if i:
            out.append(ModelText("Sure.", Source.ASSISTANT, ("messages", 2 * i - 1, "content")))
        out.append(ModelText(text, Source.USER, ("messages", 2 * i, "content")))
    return out


def _cut(text: str, rng: random.Random) -> list[str]:
    """`text` in parts of fewer than SHORT characters, cut inside words only."""
    inside = [i for i in range(1, len(text)) if not text[i - 1].isspace() and not text[i].isspace()]
    parts: list[str] = []
    pos = 0
    while len(text) - pos >= SHORT or not parts:
        choices = [i for i in inside if pos < i < pos + SHORT]
        if not choices:
            return []
        cut = rng.choice(choices[len(choices) // 2:]) if len(text) - pos >= SHORT else rng.choice(choices)
        parts.append(text[pos:cut])
        pos = cut
    return [*parts, text[pos:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/firewall-dev"))
    parser.add_argument("--routing", type=Path, default=Path("../shared/data/model-routing"))
    parser.add_argument("--harmless", type=Path, default=Path("tests/security/harmless_prompts.txt"))
    args = parser.parse_args()
    firewall = Firewall(InjectionModel.load(), cache_size=0)
    rows = [(kind, text) for _, kind, document, rows in families(Corpus(args.data, args.routing, None), args.harmless,
                                                                 random.Random(2026))
            if not document for text, _ in rows]
    harmless = [t for kind, t in rows if kind != "attack" and len(t) < SHORT and t.strip()
                and not firewall.check_texts("t", _turns(t)).verdicts and not personal_data(_turns(t))[0]]
    pairs = [_turns(a, b) for a, b in zip(harmless, harmless[1:], strict=False)]
    checked = [firewall.check_texts("t", pair) for pair in pairs]
    across = sum(any(m.pieces for found in personal_data(pair).values() for m in found) for pair in pairs)
    print(f"harmless short prompts as two user turns: {len(pairs)} pairs, "
          f"{sum(bool(c.verdicts) for c in checked)} flagged, {sum(c.blocked is not None for c in checked)} blocked, "
          f"{across} with personal data read across the turns")
    rng = random.Random(128)
    attacks = [t for kind, t in rows if kind == "attack" and t.strip()]
    attacks = [t for t in rng.sample(attacks, min(600, len(attacks)))
               if firewall.check_texts("t", [ModelText(t, Source.USER)]).blocked]
    cut = [parts for parts in (_cut(t, rng) for t in attacks) if parts]
    blocked = sum(firewall.check_texts("t", [ModelText(p, Source.USER, ("messages", 0, "content", j, "text"))
                                             for j, p in enumerate(parts)]).blocked is not None for parts in cut)
    print(f"attacks blocked alone, cut inside words into parts under {SHORT} characters: {blocked} of {len(cut)} "
          f"blocked ({sum(len(p) for p in cut) / max(1, len(cut)):.1f} parts each)")


if __name__ == "__main__":
    main()
