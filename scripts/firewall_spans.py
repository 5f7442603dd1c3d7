"""Training rows for the document head cut exactly as it reads at run time: every window and sentence of a
document (aigrid.security.firewall.features.spans), labelled by where the hidden instruction is.

A window or sentence that is mostly the attack, or holds most of it, is a positive; one that does not touch it
is a negative from the same document (the context around an attack is harmless text); one that holds a little
of it is left out (neither label is true of it). Clean documents give negatives of every kind of span.
"""

from __future__ import annotations

import random

from firewall_data import Rows

from aigrid.security.firewall.features import normalise, spans

OVERLAP = 0.6
"""A span is a positive when the attack covers this share of the span, or the span this share of the attack."""


class Geometry:
    """How the document head reads a text: fixed windows of `size` every `step` characters, and with
    `segments` each sentence and line too."""

    def __init__(self, size: int, step: int, segments: bool, segment_min: int) -> None:
        self.size, self.step, self.segments, self.segment_min = size, step, segments, segment_min

    def spans(self, normal: str) -> list[tuple[int, int]]:
        return spans(normal, self.size, self.step, self.segments, self.segment_min)


def clean_spans(docs: list[str], geometry: Geometry, rng: random.Random, n: int) -> Rows:
    """`n` spans of documents drawn at random (normalised text, label 0)."""
    out: Rows = []
    cut = {}
    for _ in range(n if docs else 0):
        doc = rng.choice(docs)
        if doc not in cut:
            normal = normalise(doc)
            cut[doc] = (normal, geometry.spans(normal))
        normal, bounds = cut[doc]
        if bounds:
            a, b = rng.choice(bounds)
            out.append((normal[a:b], 0))
    return out


def attacked_spans(pairs: list[tuple[str, str]], geometry: Geometry, rng: random.Random, positives: int = 2,
                   context: float = 0.3) -> Rows:
    """Up to `positives` spans holding the attack of each (document, attack): always the first of them (where
    the document turns into the instruction), then others at random; and with probability `context` one span
    of the same document that does not touch it. A document where no span holds its attack gives nothing."""
    out: Rows = []
    for doc, attack in pairs:
        normal, hidden = normalise(doc), normalise(attack)
        at = normal.find(hidden)
        if at < 0 or not hidden:
            continue
        lo, hi = at, at + len(hidden)
        pos, neg = [], []
        for a, b in geometry.spans(normal):
            overlap = max(0, min(b, hi) - max(a, lo))
            if overlap >= OVERLAP * min(b - a, hi - lo):
                pos.append((a, b))
            elif overlap == 0:
                neg.append((a, b))
        if not pos:
            continue
        # the span where the injection starts (the switch from the document to the instruction), and others
        chosen = [pos[0]] + rng.sample(pos[1:], min(positives - 1, len(pos) - 1))
        out += [(normal[a:b], 1) for a, b in chosen]
        if neg and rng.random() < context:
            a, b = rng.choice(neg)
            out.append((normal[a:b], 0))
    return out
