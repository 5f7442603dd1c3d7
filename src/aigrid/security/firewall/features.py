"""Text -> hashed sparse features for the injection classifier (stdlib only).

The same function runs in scripts/train_firewall.py and at request time, so the shipped weights and the
features they were trained on can never drift apart. Features: word unigrams and bigrams plus character
3- to 5-grams of the NFKC-normalised, lower-cased text, hashed with CRC-32 into `dim` buckets, binary,
L2-normalised.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")
CHAR_NGRAMS: tuple[int, ...] = (3, 4, 5)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", text).strip()


def _tokens(text: str) -> list[str]:
    words = _WORD.findall(text)
    out = [f"w:{w}" for w in words]
    out += [f"b:{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    padded = f" {text} "
    for n in CHAR_NGRAMS:
        out += [f"c:{padded[i:i + n]}" for i in range(len(padded) - n + 1)]
    return out


def featurise(text: str, dim: int) -> dict[int, float]:
    """Sparse feature vector {bucket: value} with unit L2 norm (empty for empty text)."""
    mask = dim - 1
    buckets = {zlib.crc32(t.encode("utf-8")) & mask for t in _tokens(normalise(text))}
    if not buckets:
        return {}
    value = 1.0 / math.sqrt(len(buckets))
    return dict.fromkeys(buckets, value)


def windows(text: str, size: int = 600, step: int = 400) -> list[str]:
    """Overlapping slices of a long text, so one injected sentence in a long document is not diluted."""
    if len(text) <= size:
        return [text]
    return [text[i:i + size] for i in range(0, len(text) - size + step, step)]
