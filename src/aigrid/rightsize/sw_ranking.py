"""The similarity-weighted (SW) ranking baseline of the RouteLLM paper (Ong et al. 2024, section 4.1).

For a prompt, every labelled prompt counts with weight 10 x 10^(similarity / max similarity) (RouteLLM's
`get_weightings`), and a Bradley-Terry model of "large beats small" is fitted on the weighted outcomes.
With two models the Bradley-Terry maximum-likelihood estimate has a closed form: the weighted share of
large wins, ties counting one half. That share is the router's score.

RouteLLM's SW router uses OpenAI text-embedding-3-small vectors and Chatbot Arena battles; here the
similarity is the cosine of the same static MiniLM sentence vectors the aigrid estimate reads
(static_embedding.py). Two sources of labelled neighbours:
- `sw_scores(..., reference)`: a reference set, by default the very prompts and labels the shipped estimate
  was trained on (equal information: the comparison the Done-when asks for);
- `sw_crossfit_scores`: the evaluated file's own labels, cross-fitted over 5 folds (each prompt scored from
  the other folds). This baseline sees labels from the evaluated distribution, which no deployed router
  has: read it as a ceiling for "route by what similar prompts needed", not as a peer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from aigrid.rightsize.static_embedding import StaticEmbedding

Floats = npt.NDArray[np.float64]
FOLDS = 5


def embed(prompts: Sequence[str], embedding: StaticEmbedding) -> npt.NDArray[np.float32]:
    """Unit vectors (a prompt without a token: zeros, similar to nothing)."""
    return np.stack([embedding.vector(p) for p in prompts]) if prompts else np.zeros((0, embedding.dimensions))


def outcomes(small: Floats, large: Floats) -> Floats:
    """1 when the large model did better, 0 when worse, 0.5 on a tie."""
    return np.where(large > small, 1.0, np.where(large < small, 0.0, 0.5))


def sw_scores(queries: npt.NDArray[np.float32], reference: npt.NDArray[np.float32], won: Floats,
              chunk: int = 512) -> Floats:
    """SW-ranking win rate of the large model for each query vector, from the reference outcomes `won`."""
    scores = np.zeros(len(queries))
    for start in range(0, len(queries), chunk):
        sims = queries[start:start + chunk] @ reference.T
        max_sim = np.maximum(sims.max(axis=1, keepdims=True), 1e-6)
        weights = 10.0 * np.power(10.0, sims / max_sim)
        scores[start:start + chunk] = (weights @ won) / weights.sum(axis=1)
    return scores


def sw_crossfit_scores(vectors: npt.NDArray[np.float32], small: Floats, large: Floats, seed: int = 0) -> Floats:
    """SW-ranking scores from the same file's labels, each prompt scored from the other 4 of 5 folds."""
    won = outcomes(small, large)
    fold = np.random.default_rng(seed).permutation(len(small)) % FOLDS
    scores = np.zeros(len(small))
    for f in range(FOLDS):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        scores[test] = sw_scores(vectors[test], vectors[train], won[train])
    return scores
