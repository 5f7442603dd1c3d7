import numpy as np
import pytest

from aigrid.errors import AigridError
from aigrid.rightsize.sw_ranking import NeighbourScore, embed, quantize, sw_scores


def _clusters() -> tuple[np.ndarray, np.ndarray]:
    # 6 prompts near (1, 0) where the large model wins, 6 near (0, 1) where it loses
    rng = np.random.default_rng(0)
    angles = np.concatenate([rng.uniform(-0.2, 0.2, 6), np.pi / 2 + rng.uniform(-0.2, 0.2, 6)])
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    return vectors, np.array([1.0] * 6 + [0.0] * 6, np.float32)


def test_knn_score_is_the_win_share_of_the_k_most_similar_labelled_prompts():
    vectors, won = _clusters()
    nb = NeighbourScore(quantize(vectors), won, k=4)
    assert nb.score(np.array([1.0, 0.0], np.float32)) == pytest.approx(1.0)
    assert nb.score(np.array([0.0, 1.0], np.float32)) == pytest.approx(0.0)
    # half way between the clusters, k = all: the overall share
    assert NeighbourScore(quantize(vectors), won, k=100).score(np.array([0.7, 0.7], np.float32)) == pytest.approx(0.5)
    batch = nb.scores(vectors)
    assert batch.tolist() == [nb.score(v) for v in vectors]


def test_k_zero_is_routellm_similarity_weighting_over_the_int8_table():
    vectors, won = _clusters()
    nb = NeighbourScore(quantize(vectors), won, k=0)
    queries = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
    expected = sw_scores(queries, quantize(vectors).astype(np.float32) / 127, won.astype(np.float64))
    assert nb.scores(queries) == pytest.approx(expected)
    assert nb.scores(queries)[0] > nb.scores(queries)[1]


def test_quantized_vectors_stay_close_and_a_mismatched_table_is_refused():
    vectors, won = _clusters()
    assert np.abs(quantize(vectors).astype(np.float32) / 127 - vectors).max() <= 0.5 / 127 + 1e-6
    with pytest.raises(AigridError, match="does not match"):
        NeighbourScore(quantize(vectors), won[:5], k=3)


def test_no_prompts_embed_as_an_empty_float32_matrix_like_any_other():
    class Embedding:  # what embed() reads of a StaticEmbedding
        dimensions = 3

        def vector(self, text: str) -> np.ndarray:
            return np.ones(3, np.float32)

    assert embed(["a"], Embedding()).dtype == np.float32
    none = embed([], Embedding())
    assert none.shape == (0, 3) and none.dtype == np.float32  # was float64 (np.zeros' default)
