"""BERT's uncased WordPiece tokenizer in plain Python, for the static prompt embedding (static_embedding.py) and
all-MiniLM-L6-v2 in numpy (aigrid.encoders.minilm).

The same splitting as Hugging Face's BertTokenizer with do_lower_case (all-MiniLM-L6-v2's): lower-case,
strip accents, split on whitespace, punctuation and CJK characters, then greedy longest-match-first
WordPiece with `##` continuations and [UNK] for a word with no match or longer than 100 characters.
tests/rightsize/test_wordpiece.py checks it token for token against the `tokenizers` library where that is
installed. Words repeat, so each word's ids are cached (bounded).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

MAX_WORD_CHARS = 100
CACHE_WORDS = 50_000
_ASCII_SPLIT = re.compile(r"[a-z0-9]+|[!-/:-@\[-`{-~]")
"""An ASCII chunk's words and punctuation: the fast path, same result as the general one."""
_ASCII_CONTROL = {c: None for c in (*range(32), 127)}
_SPLIT_CONTROLS = {c: None for c in (0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x1F, 0x85)}
"""Control characters str.split() takes for whitespace: Hugging Face's normaliser deletes them ("a\x0bb" is one
word, "ab"), so they go before the split."""


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B920 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF
            or 0x2F800 <= cp <= 0x2FA1F)


def basic_words(text: str) -> list[str]:
    """Lower-cased, accent-stripped words and single punctuation / CJK characters."""
    out: list[str] = []
    # one character at a time, as Hugging Face lower-cases: str.lower() writes a word-final capital sigma as
    # the final form (ς), which the vocabulary splits differently
    for chunk in text.translate(_SPLIT_CONTROLS).replace("\u03a3", "\u03c3").lower().split():
        if chunk.isascii():
            out.extend(_ASCII_SPLIT.findall(chunk.translate(_ASCII_CONTROL)))
            continue
        chunk = unicodedata.normalize("NFD", chunk)
        word: list[str] = []
        for ch in chunk:
            cat = unicodedata.category(ch)
            if cat == "Mn":
                continue
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or (cat.startswith("C") and ch not in "\t\n\r"):
                continue
            if _is_punctuation(ch) or _is_cjk(cp):
                if word:
                    out.append("".join(word))
                    word = []
                out.append(ch)
            else:
                word.append(ch)
        if word:
            out.append("".join(word))
    return out


class WordPiece:
    """vocab: the model's vocab.txt lines in id order."""

    def __init__(self, vocab: Sequence[str], unk: str = "[UNK]") -> None:
        self.ids = {tok: i for i, tok in enumerate(vocab)}
        self.unk = self.ids[unk]
        self._cache: dict[str, tuple[int, ...]] = {}

    def word_ids(self, word: str) -> tuple[int, ...]:
        if len(word) > MAX_WORD_CHARS:  # never cached: a client's 8,192-character words filled the cache with
            return (self.unk,)          # 32 KB keys (1.6 GB per worker through /v1/embeddings, review finding)
        hit = self._cache.get(word)
        if hit is not None:
            return hit
        ids = self._split(word)
        if len(self._cache) >= CACHE_WORDS:
            self._cache.clear()
        self._cache[word] = ids
        return ids

    def _split(self, word: str) -> tuple[int, ...]:
        if len(word) > MAX_WORD_CHARS:
            return (self.unk,)
        out: list[int] = []
        start = 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                piece = word[start:end] if start == 0 else "##" + word[start:end]
                found = self.ids.get(piece)
                if found is not None:
                    break
                end -= 1
            if found is None:
                return (self.unk,)
            out.append(found)
            start = end
        return tuple(out)

    def clear_cache(self) -> None:
        self._cache.clear()

    def encode(self, text: str) -> list[int]:
        return [i for w in basic_words(text) for i in self.word_ids(w)]
