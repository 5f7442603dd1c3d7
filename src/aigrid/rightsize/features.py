"""Cheap prompt features for the quality estimate: a static sentence vector, a few text statistics, and a
linear score over hashed word n-grams (ngram_score.py).

Everything is numpy and the standard library, so the request path needs no torch: the real all-MiniLM-L6-v2
costs ~100 ms per prompt on one loaded core here, its static distillation (static_embedding.py) ~1 ms. The
static vector carries what a prompt is about (code, maths, a travel blog) across benchmarks; the n-grams carry
the exact words and subjects seen in training.
The same function builds the training matrix (scripts/train_quality_estimator.py) and the live features,
so the two cannot drift apart.
"""

from __future__ import annotations

import math
import zlib
from typing import Protocol

import numpy as np
import numpy.typing as npt
import regex

from aigrid.rightsize.static_embedding import StaticEmbedding, clip

HASH_BITS = 15
"""2^15 hashed n-gram buckets."""
_TOKEN = regex.compile(r"\p{L}+|\p{N}+|[^\p{L}\p{N}\s]")
_CHOICE = regex.compile(r"(?m)^\s*[A-D][.)]\s")
DENSE_NAMES: tuple[str, ...] = (
    "log_chars", "digit_share", "symbol_share", "log_lines", "choices", "question_marks", "log_numbers",
)


class LinearScore(Protocol):
    def logit(self, text: str, dense: npt.NDArray[np.float32] | None = None) -> float: ...


def prompt_features(text: str, embedding: StaticEmbedding, ngram: LinearScore) -> npt.NDArray[np.float32]:
    """The estimate's input: the static MiniLM vector, the statistics of DENSE_NAMES, the n-gram score."""
    dense = dense_features(text)
    return np.concatenate([embedding.vector(text), dense, [ngram.logit(text, dense)]]).astype(np.float32)


def hashed_ngrams(text: str, bits: int = HASH_BITS) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """(bucket indices, values) of the prompt's unigrams and bigrams: log(1 + count) x sign, L2-normalised."""
    tokens = _TOKEN.findall(clip(text).lower())
    grams = tokens + [a + " " + b for a, b in zip(tokens, tokens[1:], strict=False)]
    counts: dict[int, float] = {}
    mask = (1 << bits) - 1
    for gram in grams:
        h = zlib.crc32(gram.encode())
        bucket = h & mask
        counts[bucket] = counts.get(bucket, 0.0) + (1.0 if (h >> 31) & 1 else -1.0)
    if not counts:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    idx = np.fromiter(counts.keys(), np.int64, len(counts))
    raw = np.fromiter(counts.values(), np.float32, len(counts))
    val = np.sign(raw) * np.log1p(np.abs(raw))
    norm = float(np.sqrt(np.dot(val, val))) or 1.0
    return idx, (val / norm).astype(np.float32)


def dense_features(text: str) -> npt.NDArray[np.float32]:
    """A few scale-free statistics of the prompt (names in DENSE_NAMES), each roughly in [0, 1]; all but the
    length read only the clipped text, so a long prompt costs no more than 4,000 characters."""
    full_length = len(text)
    text = clip(text)
    n = max(len(text), 1)
    digits = sum(c.isdigit() for c in text)
    symbols = sum(c in "=+-*/^<>()[]{}$%\\|_" for c in text)
    numbers = len(regex.findall(r"\d+(?:[.,]\d+)?", text))
    return np.array([
        math.log1p(full_length) / 10.0,
        digits / n,
        symbols / n,
        math.log1p(text.count("\n")) / 5.0,
        min(len(_CHOICE.findall(text)), 4) / 4.0,
        min(text.count("?"), 5) / 5.0,
        math.log1p(numbers) / 5.0,
    ], np.float32)
