"""Text -> hashed binary features for the injection classifier, vectorised with numpy.

The same functions run in scripts/train_firewall.py and at request time, so the shipped weights and the
features they were trained on can never drift apart. Features of the NFKC-normalised, lower-cased text with
runs of white space collapsed (to a line break if the run holds one): word unigrams and bigrams (CRC-32 of the
word, mixed), character 3- to 5-grams (FNV-1a over code points, mixed) and, where a head asks (`openers`), the
words and bigrams that open a sentence, a line or a list item; all hashed into `dim` buckets, binary,
L2-normalised (texts of fewer than `min_norm` buckets scaled as if they had that many: see scale()).

Long prompts are read in overlapping windows of 600 characters (step 400), documents and tool results in
shorter windows (the artefact says which: 160 every 80 now) and sentence by sentence (spans()), so one injected
sentence in a long page is not diluted: the text's hashes are computed once, each window is a slice of them.
Cost: a 4 MiB body is read in about 1.5 s of one core as a prompt, 2.3 s as a document (docs/security.md, "Cost").
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt

_WORD = re.compile(r"\w+", re.UNICODE)
_LINE_BREAK = re.compile(r"\s*\n\s*")
_SPACE = re.compile(r"[^\S\n]{2,}|[^\S\n ]")
"""The white space normalise() makes one space: a run of two or more, or one that is not a plain space (a lone
space is left where it is, not replaced by itself: half of normalise's time on an ordinary prompt)."""
_BREAK = frozenset(".!?:;>)]}*#|\"\n-")
"""A word after one of these (and at most one space) starts a sentence, a line or a list item."""
_BREAK_TABLE = np.array([chr(i) in _BREAK for i in range(128)], dtype=bool)
CHAR_NGRAMS: tuple[int, ...] = (3, 4, 5)
WINDOW = 600
STEP = 400
DOCUMENT_WINDOW = 240
DOCUMENT_STEP = 120
"""Text the model reads as data is read in shorter windows: an instruction hidden in a page is one or two
sentences, and a short window keeps the rest of the page from diluting it. The artefact may set other sizes
(`document_window`, `document_step` in its header); these are the defaults."""
SEGMENT_MIN = 60
"""Sentences and lines shorter than this are joined to the next one before they are scored (segment_bounds): a
short sentence alone is a handful of n-grams, too few to say whom it addresses."""
_SENTENCE_END = re.compile(r"[.!?;:](?= )|\n")
_FNV_PRIME = np.uint32(16777619)
_FNV_BASIS = 2166136261
_WORD_SEED = np.uint32(0x5BD1E995)
_BIGRAM_SEED = np.uint32(0x27D4EB2F)
_GOLDEN = np.uint32(0x9E3779B1)
_START_SEED = np.uint32(0x165667B1)
_START_BIGRAM_SEED = np.uint32(0xC2B2AE3D)

Buckets = npt.NDArray[np.int64]


def normalise(text: str) -> str:
    """What a model reads of the text (unhide()), NFKC, lower case, every run of white space one space, or one
    line break if it holds one."""
    if not text.isascii():
        text = unhide(text)
    text = unicodedata.normalize("NFKC", text).lower()
    if "\n" in text:
        text = _LINE_BREAK.sub("\n", text)
    return _SPACE.sub(" ", text).strip()


_TAG = re.compile("[\U000e0020-\U000e007e]")
TAG_TO_ASCII = {cp: cp - 0xE0000 for cp in range(0xE0020, 0xE007F)}
# Unicode's default-ignorable code points (DerivedCoreProperties.txt): drawn as nothing, read through by a
# tokenizer or a model; the tag characters among them are mapped to ASCII first
INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufff8\U0001bca0-\U0001bca3"
                        "\U0001d173-\U0001d17a\U000e0000-\U000e0fff]+")
_SEAM = re.compile("[a-zA-Z][\u0370-\u03ff\u0400-\u04ff]|[\u0370-\u03ff\u0400-\u04ff][a-zA-Z]")
_NOT_LATIN = re.compile("[^a-zA-Z]+")
_NOT_GREEK_OR_CYRILLIC = re.compile("[^\u0370-\u03ff\u0400-\u04ff]+")
# Cyrillic and Greek letters drawn like Latin ones (Unicode's confusables, the common ones)
LATIN_OF = str.maketrans("аеіјорсѕухӏԁԛԝАВЕНІЈКМОРСЅТХΑΒΕΗΙΚΜΝΟΡΤΧΥΖαοινρτυχ",
                          "aeijopcsyxldqwABEHIJKMOPCSTXABEHIKMNOPTXYZaoivptux")
_MARKS_ON_LATIN = re.compile("(?<=[a-zA-Z])[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")


def _latin_first(text: str) -> bool:
    """A word mixes Latin letters with Cyrillic or Greek ones, and Latin letters are at least as many."""
    return _SEAM.search(text) is not None and \
        len(_NOT_LATIN.sub("", text)) >= len(_NOT_GREEK_OR_CYRILLIC.sub("", text))


def latin_reading(text: str) -> str | None:
    """The text with every Cyrillic and Greek look-alike made Latin, where a word mixes those scripts but the
    text has more Cyrillic and Greek letters than Latin ones (unhide leaves such a text as it is, so an attack
    written in look-alikes is not hidden by adding a sentence of Russian: the detector reads this too; None
    otherwise, and for ASCII text)."""
    if text.isascii() or _SEAM.search(text) is None or _latin_first(text):
        return None
    return text.translate(LATIN_OF)


def unhide(text: str) -> str:
    """The text as a model reads it, with what a human reader does not see taken out of the way: ASCII written
    in Unicode tag characters (invisible) as ASCII; invisible characters (zero-width, soft hyphen, directional
    marks, variation selectors) removed; in a text that has a word mixing Latin with Cyrillic or Greek letters
    and at least as many Latin letters as those, every Cyrillic and Greek look-alike made Latin (otherwise
    latin_reading() gives the detector that reading besides) (one pass over the text:
    a rule per word cost seconds on a crafted 4 MiB body); combining marks on Latin letters removed (accents
    and stacked "Zalgo" marks alike). Any other script passes unchanged."""
    if _TAG.search(text):
        text = text.translate(TAG_TO_ASCII)
    text = INVISIBLE.sub("", text)
    if _latin_first(text):
        text = text.translate(LATIN_OF)  # a Latin text with Cyrillic or Greek letters in its words
    return _MARKS_ON_LATIN.sub("", unicodedata.normalize("NFKD", text))


def _mix(h: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
    """murmur3's finaliser: every input bit reaches the low bits the bucket mask keeps."""
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


class _Hashed:
    """Every feature hash of one normalised text, with the positions windows are cut by. The hashes are mixed
    when a window first needs them: a text read as one window (most prompts) is mixed, masked and made unique in
    one pass over all its features (`whole`), the same buckets as its one window sliced, in a third of the calls."""

    def __init__(self, text: str) -> None:
        self.length = len(text)
        codes = np.frombuffer(f" {text} ".encode("utf-32-le", "replace"), dtype="<u4").astype(np.uint32)
        raw = []
        for n in CHAR_NGRAMS:
            count = max(0, len(codes) - n + 1)
            h = np.full(count, (_FNV_BASIS ^ n) & 0xFFFFFFFF, dtype=np.uint32)
            for k in range(n):
                h = (h ^ codes[k:k + count]) * _FNV_PRIME
            raw.append(h)
        self._raw_chars = raw
        spans = [(m.start(), m.end(), m.group()) for m in _WORD.finditer(text)]
        self.word_start = np.array([s for s, _, _ in spans], dtype=np.int64)
        self.word_end = np.array([e for _, e, _ in spans], dtype=np.int64)
        self._codes = codes
        self._crc = np.array([zlib.crc32(w.encode("utf-8", "replace")) for _, _, w in spans], dtype=np.uint32)
        self._pairs = (self._crc[:-1] * _GOLDEN) ^ self._crc[1:]
        self._mixed_parts: tuple[list[npt.NDArray[np.uint32]], npt.NDArray[np.uint32],
                                 npt.NDArray[np.uint32]] | None = None

    def _parts(self) -> tuple[list[npt.NDArray[np.uint32]], npt.NDArray[np.uint32], npt.NDArray[np.uint32]]:
        """(the character n-grams' mixed hashes per n, the words', the bigrams'), mixed on first use."""
        if self._mixed_parts is None:
            chars = _mixed(self._raw_chars)
            words, bigrams = _mixed([self._crc ^ _WORD_SEED, self._pairs ^ _BIGRAM_SEED])
            self._mixed_parts = (chars, words, bigrams)
        return self._mixed_parts

    def whole(self, mask: int, openers: bool = True) -> Buckets:
        """window(0, length, mask, openers): every feature of the text, mixed in one pass (mixing is per element,
        so mixing the joined raw hashes equals joining the mixed ones)."""
        raw = [*self._raw_chars, self._crc ^ _WORD_SEED, self._pairs ^ _BIGRAM_SEED]
        if openers:
            starts = _opens(self._codes, self.word_start)
            raw += [self._crc[starts] ^ _START_SEED, self._pairs[starts[:-1]] ^ _START_BIGRAM_SEED]
        return _unique(_mix(np.concatenate(raw)) & np.uint32(mask))

    def window(self, start: int, end: int, mask: int, openers: bool = True) -> Buckets:
        """Unique buckets of the features inside text[start:end] (padded positions are one to the right);
        `openers`: with the features of the words that open a sentence."""
        return next(self.windows([(start, end)], mask, openers))

    def windows(self, bounds: list[tuple[int, int]], mask: int, openers: bool = True) -> Iterator[Buckets]:
        """window() of each (start, end) in `bounds`, in order: the words each window holds found for all of them
        at once, and the sentence openers' features kept apart (only the words that open one), so that a window is
        slices of the mixed hashes and one `unique` (until 4 Dec 2026 two searches and two boolean masks per
        window). A text read as one window takes `whole`."""
        if len(bounds) == 1 and bounds[0][0] == 0 and bounds[0][1] >= self.length:
            yield self.whole(mask, openers)
            return
        chars, words, bigrams = self._parts()
        firsts = np.searchsorted(self.word_start, [a for a, _ in bounds], side="left").tolist()
        lasts = np.searchsorted(self.word_end, [b for _, b in bounds], side="right").tolist()  # [first, last)
        pair_ends = [max(first, last - 1) for first, last in zip(firsts, lasts, strict=True)]
        if openers:
            opening_words, opening_pairs, at_words, at_pairs = self._opening()
            word_from = np.searchsorted(at_words, firsts).tolist()
            word_to = np.searchsorted(at_words, lasts).tolist()
            pair_from = np.searchsorted(at_pairs, firsts).tolist()
            pair_to = np.searchsorted(at_pairs, pair_ends).tolist()
        m = np.uint32(mask)
        for i, (start, end) in enumerate(bounds):
            first, last = firsts[i], lasts[i]
            parts = [h[start:max(start, end + 2 - n + 1)] for n, h in zip(CHAR_NGRAMS, chars, strict=True)]
            parts += (words[first:last], bigrams[first:pair_ends[i]])
            if openers:
                parts += (opening_words[word_from[i]:word_to[i]], opening_pairs[pair_from[i]:pair_to[i]])
            yield _unique(np.concatenate(parts) & m)

    def _opening(self) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint32], npt.NDArray[np.int64],
                                npt.NDArray[np.int64]]:
        """(the opener hashes of the words that open a sentence, a line or a list item, of the bigrams they open,
        the positions of those words, of those bigrams): "send ..." at the start of a sentence is an instruction, in
        its middle it is not; a window's openers are the run of them within its words. Mixed only where a word
        opens one (mixing is per element)."""
        opens = _opens(self._codes, self.word_start)
        at_words, at_pairs = np.flatnonzero(opens), np.flatnonzero(opens[:-1])
        words, pairs = _mixed([self._crc[at_words] ^ _START_SEED, self._pairs[at_pairs] ^ _START_BIGRAM_SEED])
        return words, pairs, at_words, at_pairs


def _unique(buckets: npt.NDArray[np.uint32]) -> Buckets:
    """np.unique(buckets).astype(np.int64), by sorting and keeping each first of equal neighbours: numpy 2's
    np.unique hashes first and sorts after, 27 us against 6.5 us for a window's 620 buckets (the firewall's
    largest cost per window)."""
    ordered = np.sort(buckets)
    if len(ordered) < 2:
        return ordered.astype(np.int64)
    first = np.empty(len(ordered), dtype=bool)
    first[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
    return ordered[first].astype(np.int64)


def _mixed(parts: list[npt.NDArray[np.uint32]]) -> list[npt.NDArray[np.uint32]]:
    """_mix over several arrays: in one numpy pass for a short text (the calls are most of its cost), one by one
    for a long one (no copy of the arrays)."""
    if sum(len(p) for p in parts) > 4096:
        return [_mix(p) for p in parts]
    mixed = _mix(np.concatenate(parts)) if parts else np.zeros(0, np.uint32)
    return np.split(mixed, np.cumsum([len(p) for p in parts[:-1]]))


def _opens(codes: npt.NDArray[np.uint32], starts: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    """Which words (by start offset in the text; `codes` is the text padded with one space on each side) open
    a sentence, a line or a list item: the character before them, skipping one space, is a break or none."""
    before = starts.copy()  # index in codes of the character before the word (codes has one leading pad)
    space = (before >= 1) & (codes[before] == 32)
    before[space] -= 1
    prev = codes[before]
    return (before < 1) | ((prev < 128) & _BREAK_TABLE[np.minimum(prev, 127)])


def window_bounds(length: int, size: int = WINDOW, step: int = STEP) -> list[tuple[int, int]]:
    if length <= size:
        return [(0, length)]
    return [(a, min(a + size, length)) for a in range(0, length - size + step, step)]


def segment_bounds(normal: str, min_len: int = SEGMENT_MIN, max_len: int = DOCUMENT_WINDOW) -> list[tuple[int, int]]:
    """The sentences and lines of a normalised text, each as its own window: a sentence ends after . ! ? ; or :
    followed by a space, a line at a line break; pieces shorter than `min_len` are joined to the next, and a
    piece longer than `max_len` is left to the fixed windows. An instruction hidden in a document is usually one
    or two sentences: read alone, the document around it cannot dilute it."""
    out: list[tuple[int, int]] = []
    start = 0
    for m in _SENTENCE_END.finditer(normal):
        line = m.group() == "\n"
        end = m.start() if line else m.end()  # a line break ends the sentence before it; a full stop inside it
        if end - start >= min_len:
            if end - start <= max_len:
                out.append((start, end))
            start = m.end() + (0 if line else 1)  # skip the space after a full stop
    tail = len(normal) - start
    if min_len <= tail <= max_len:
        out.append((start, len(normal)))
    elif 0 < tail < min_len and out and len(normal) - out[-1][0] <= max_len:
        out[-1] = (out[-1][0], len(normal))  # a short last sentence joins the one before it
    return out


def spans(normal: str, size: int, step: int, segments: bool, segment_min: int = SEGMENT_MIN) -> list[tuple[int, int]]:
    """Every window a head scores of a normalised text: fixed windows of `size` (step `step`), and with
    `segments` its sentences and lines too (segment_bounds; those equal to a fixed window are not repeated)."""
    fixed = window_bounds(len(normal), size, step)
    if not segments:
        return fixed
    seen = set(fixed)
    return fixed + [b for b in segment_bounds(normal, segment_min, size) if b not in seen]


def windows(text: str, dim: int, size: int = WINDOW, step: int = STEP, openers: bool = True,
            segments: bool = False, segment_min: int = SEGMENT_MIN) -> Iterator[Buckets]:
    """The buckets of each window of `text` (one window for texts up to `size` characters; with `segments`,
    also one per sentence or line: see spans())."""
    return (b for _, _, _, b in read(text, dim, size, step, openers, segments, segment_min))


def read(text: str, dim: int, size: int = WINDOW, step: int = STEP, openers: bool = True,
         segments: bool = False, segment_min: int = SEGMENT_MIN) -> Iterator[tuple[str, int, int, Buckets]]:
    """(the normalised text, start, end, buckets) of each window of windows(): the window reads
    normal[start:end]."""
    normal = normalise(text)
    if not normal:
        return
    hashed = _Hashed(normal)
    bounds = spans(normal, size, step, segments, segment_min)
    for (start, end), b in zip(bounds, hashed.windows(bounds, dim - 1, openers), strict=True):
        yield normal, start, end, b


def buckets(text: str, dim: int, openers: bool = True) -> Buckets:
    """The buckets of the whole text as one window (training; equals windows() for short texts)."""
    normal = normalise(text)
    if not normal:
        return np.zeros(0, dtype=np.int64)
    hashed = _Hashed(normal)
    return hashed.window(0, hashed.length, dim - 1, openers)


def scale(count: int, min_norm: float = 0.0) -> float:
    """The value of each of a text's `count` binary features: 1/sqrt(count), the L2 norm, except that a text
    with fewer than `min_norm` buckets is scaled as if it had `min_norm`, so that the few n-grams of a very
    short text cannot alone push its score to an extreme ("Who are you?" has 38 buckets)."""
    return 1.0 / math.sqrt(max(count, min_norm, 1))
