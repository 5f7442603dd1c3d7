"""The injection classifier's features (aigrid.security.firewall.features)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from aigrid.security.firewall.features import _Hashed, _unique, normalise, spans

TEXT = st.text(alphabet=st.sampled_from(list("abc xyz.:;!?\n-*#\"'()0123456789éßжΩ\u200b\t")), max_size=400)


@settings(max_examples=300, deadline=None)
@given(TEXT, st.sampled_from([2**12 - 1, 2**18 - 1]))
def test_a_text_read_whole_has_the_buckets_of_its_one_window(text: str, mask: int) -> None:
    """`whole` (one pass over every feature: most prompts are one window) equals slicing the mixed hashes of the
    window that covers the text, with and without the sentence openers' features."""
    normal = normalise(text)
    if not normal:
        return
    hashed = _Hashed(normal)
    for openers in (True, False):
        whole = hashed.whole(mask, openers)
        sliced = next(hashed.windows([(0, hashed.length), (0, hashed.length)], mask, openers))  # two: not `whole`
        assert np.array_equal(whole, sliced) and np.array_equal(whole, hashed.window(0, hashed.length, mask, openers))


@settings(max_examples=200, deadline=None)
@given(TEXT, st.booleans(), st.sampled_from([(160, 80, True), (160, 80, False), (600, 400, False), (40, 20, True)]))
def test_the_windows_of_a_text_read_together_are_each_window_read_alone(text: str, openers: bool,
                                                                         geometry: tuple[int, int, bool]) -> None:
    """`windows` (the words of every window found at once, the openers' features kept apart) gives each window
    the buckets it has read alone, in order (the old code's own buckets: scripts/firewall_digest.py)."""
    normal = normalise(text * 2)
    if not normal:
        return
    hashed = _Hashed(normal)
    bounds = spans(normal, *geometry)
    together = list(hashed.windows(bounds, 2**18 - 1, openers))
    assert len(together) == len(bounds)
    for (start, end), b in zip(bounds, together, strict=True):
        assert np.array_equal(b, hashed.window(start, end, 2**18 - 1, openers)), (start, end)


@given(st.lists(st.integers(0, 2**32 - 1), max_size=300))
def test_unique_is_numpys(values: list[int]) -> None:
    """_unique (sort, keep the first of equal neighbours) is np.unique(...).astype(np.int64), empty and one included."""
    buckets = np.array(values, dtype=np.uint32)
    got = _unique(buckets)
    assert got.dtype == np.int64 and np.array_equal(got, np.unique(buckets).astype(np.int64))


@given(st.text(alphabet=st.sampled_from(list("ab. \n\t\r\x0b\x0c\x1c\x85\xa0\u2003\u2028\u3000")), max_size=60))
def test_white_space_is_collapsed_as_one_regular_expression_did(text: str) -> None:
    """normalise() leaves a lone space alone and skips the line-break rule for a text without one (half its time
    on an ordinary prompt); the result is what the one rule for every run gave before."""
    import re
    import unicodedata

    before = unicodedata.normalize("NFKC", text).lower()
    before = re.sub(r"[^\S\n]+", " ", re.sub(r"\s*\n\s*", "\n", before)).strip()
    assert normalise(text) == before
