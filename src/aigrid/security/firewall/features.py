"""Text -> hashed binary features for the injection classifier, vectorised with numpy.

The same functions run in scripts/train_firewall.py and at request time, so the shipped weights and the
features they were trained on can never drift apart. Features of the NFKC-normalised, lower-cased text with
runs of white space collapsed: word unigrams and bigrams (CRC-32 of the word, mixed) and character 3- to
5-grams (FNV-1a over code points, mixed), all hashed into `dim` buckets, binary, L2-normalised.

Long prompts are read in overlapping windows of 600 characters (step 400), documents and tool results in
windows of 240 (step 120), so one injected sentence in a long page is not diluted: the text's hashes are computed
once, each window is a slice of them. Cost: about 10 microseconds per 100 characters plus about 40
microseconds per window, so a 4 MiB body is read in about a second.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+", re.UNICODE)
_SPACE = re.compile(r"\s+")
CHAR_NGRAMS: tuple[int, ...] = (3, 4, 5)
WINDOW = 600
STEP = 400
DOCUMENT_WINDOW = 240
DOCUMENT_STEP = 120
"""Text the model reads as data is read in shorter windows: an instruction hidden in a page is one or two
sentences, and a short window keeps the rest of the page from diluting it."""
_FNV_PRIME = np.uint32(16777619)
_FNV_BASIS = 2166136261
_WORD_SEED = np.uint32(0x5BD1E995)
_BIGRAM_SEED = np.uint32(0x27D4EB2F)
_GOLDEN = np.uint32(0x9E3779B1)

Buckets = npt.NDArray[np.int64]


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", text).strip()


def _mix(h: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """murmur3's finaliser: every input bit reaches the low bits the bucket mask keeps."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class _Hashed:
    """Every feature hash of one normalised text, with the positions windows are cut by."""

    def __init__(self, text: str) -> None:
        self.length = len(text)
        codes = np.frombuffer(f" {text} ".encode("utf-32-le", "replace"), dtype="<u4").astype(np.uint32)
        self.chars: list[npt.NDArray[np.uint32]] = []
        for n in CHAR_NGRAMS:
            count = max(0, len(codes) - n + 1)
            h = np.full(count, (_FNV_BASIS ^ n) & 0xFFFFFFFF, dtype=np.uint32)
            for k in range(n):
                h = (h ^ codes[k:k + count]) * _FNV_PRIME
            self.chars.append(_mix(h))
        spans = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
        self.word_start = np.array([s for s, _, _ in spans], dtype=np.int64)
        self.word_end = np.array([e for _, e, _ in spans], dtype=np.int64)
        words = np.array([zlib.crc32(w.encode("utf-8", "replace")) for _, _, w in spans], dtype=np.uint32)
        self.words = _mix(words ^ _WORD_SEED)
        self.bigrams = _mix((words[:-1] * _GOLDEN) ^ words[1:] ^ _BIGRAM_SEED) if len(words) > 1 else words[:0]

    def window(self, start: int, end: int, mask: int) -> Buckets:
        """Unique buckets of the features inside text[start:end] (padded positions are one to the right)."""
        parts = [h[start:max(start, end + 2 - n + 1)] for n, h in zip(CHAR_NGRAMS, self.chars, strict=True)]
        first = int(np.searchsorted(self.word_start, start, side="left"))
        last = int(np.searchsorted(self.word_end, end, side="right"))  # words [first, last) lie inside
        parts.append(self.words[first:last])
        parts.append(self.bigrams[first:max(first, last - 1)])
        return np.unique(np.concatenate(parts) & np.uint32(mask)).astype(np.int64)


def window_bounds(length: int, size: int = WINDOW, step: int = STEP) -> list[tuple[int, int]]:
    if length <= size:
        return [(0, length)]
    return [(a, min(a + size, length)) for a in range(0, length - size + step, step)]


def windows(text: str, dim: int, size: int = WINDOW, step: int = STEP) -> Iterator[Buckets]:
    """The buckets of each window of `text` (one window for texts up to `size` characters)."""
    normal = normalise(text)
    if not normal:
        return
    hashed = _Hashed(normal)
    for start, end in window_bounds(hashed.length, size, step):
        yield hashed.window(start, end, dim - 1)


def buckets(text: str, dim: int) -> Buckets:
    """The buckets of the whole text as one window (training; equals windows() for short texts)."""
    normal = normalise(text)
    if not normal:
        return np.zeros(0, dtype=np.int64)
    hashed = _Hashed(normal)
    return hashed.window(0, hashed.length, dim - 1)
