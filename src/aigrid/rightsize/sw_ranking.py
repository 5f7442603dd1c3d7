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

`NeighbourScore` is the same idea inside the shipped estimate (estimator.py): the large model's win share
among the labelled training prompts most similar to a prompt, over int8 copies of their vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aigrid.errors import AigridError
from aigrid.rightsize.static_embedding import StaticEmbedding

Floats = npt.NDArray[np.float64]
FOLDS = 5


def embed(prompts: Sequence[str], embedding: StaticEmbedding) -> npt.NDArray[np.float32]:
    """Unit vectors (a prompt without a token: zeros, similar to nothing)."""
    if not prompts:
        return np.zeros((0, embedding.dimensions), np.float32)
    return np.stack([embedding.vector(p) for p in prompts])


def outcomes(small: Floats, large: Floats) -> Floats:
    """1 when the large model did better, 0 when worse, 0.5 on a tie."""
    return np.where(large > small, 1.0, np.where(large < small, 0.0, 0.5))


def sw_scores(queries: npt.NDArray[np.float32], reference: npt.NDArray[np.float32], won: Floats,
              chunk: int = 512) -> Floats:
    """SW-ranking win rate of the large model for each query vector, from the reference outcomes `won`."""
    scores = np.zeros(len(queries))
    for start in range(0, len(queries), chunk):
        weights = sw_weights(queries[start:start + chunk] @ reference.T)
        scores[start:start + chunk] = (weights @ won) / weights.sum(axis=1)
    return scores


def sw_weights(sims: npt.NDArray[np.float32]) -> Floats:
    """RouteLLM's weights from similarities (one row per query): 10 x 10^(similarity / max similarity)."""
    max_sim = np.maximum(sims.max(axis=1, keepdims=True), 1e-6)
    return 10.0 * np.power(10.0, sims / max_sim)


def sw_crossfit_scores(vectors: npt.NDArray[np.float32], small: Floats, large: Floats, seed: int = 0) -> Floats:
    """SW-ranking scores from the same file's labels, each prompt scored from the other 4 of 5 folds."""
    won = outcomes(small, large)
    fold = np.random.default_rng(seed).permutation(len(small)) % FOLDS
    scores = np.zeros(len(small))
    for f in range(FOLDS):
        test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
        scores[test] = sw_scores(vectors[test], vectors[train], won[train])
    return scores


def quantize(vectors: npt.NDArray[np.float32]) -> npt.NDArray[np.int8]:
    """Unit vectors as int8 (x 127): what a NeighbourScore stores."""
    return np.clip(np.round(vectors * 127.0), -127, 127).astype(np.int8)


@dataclass(frozen=True)
class NeighbourScore:
    """The large model's win share (outcomes(): 1 / 0 / 0.5) near a prompt, from labelled prompts' vectors.

    k > 0: the mean outcome of the k most similar labelled prompts (cosine); k = 0: RouteLLM's SW weights over
    all of them (sw_scores). One matrix-vector product over the table and a partial sort per prompt."""

    vectors: npt.NDArray[np.int8]
    won: npt.NDArray[np.float32]
    k: int

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.won) or not 0 <= self.k:
            raise AigridError(f"neighbour table {self.vectors.shape} does not match {len(self.won)} outcomes "
                              f"(k = {self.k})")
        object.__setattr__(self, "_ref", self.vectors.astype(np.float32) / 127.0)

    def scores(self, queries: npt.NDArray[np.float32], chunk: int = 512) -> Floats:
        """The score of each query vector (rows of `queries`)."""
        out = np.zeros(len(queries))
        for start in range(0, len(queries), chunk):
            out[start:start + chunk] = self._from_similarities(queries[start:start + chunk] @ self._reference.T)
        return out

    def score(self, vector: npt.NDArray[np.float32]) -> float:
        """One prompt's score. einsum, not `@`: a single matrix-vector product through a threaded BLAS spun
        every core of a loaded machine for a 30 ms wall time; einsum stays on the calling thread (~0.15 ms)."""
        return float(self._from_similarities(np.einsum("ij,j->i", self._reference, vector)[None, :])[0])

    @property
    def _reference(self) -> npt.NDArray[np.float32]:
        return self.__dict__["_ref"]

    @property
    def table(self) -> npt.NDArray[np.float32]:
        """The labelled prompts' vectors (unit length up to the int8 rounding)."""
        return self._reference

    def _from_similarities(self, sims: npt.NDArray[np.float32]) -> Floats:
        if self.k == 0:
            weights = sw_weights(sims)
            return (weights * self.won).sum(axis=1) / weights.sum(axis=1)
        k = min(self.k, sims.shape[1])
        near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        return self.won[near].mean(axis=1).astype(np.float64)
