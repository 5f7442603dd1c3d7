"""The prior for judge-scored open requests (MT-Bench-like prompts): their nearest labelled kin's mean gain.

On MT-Bench (instructions graded by a GPT-4 judge: writing, roleplay, coding, maths...) what the large model adds
depends mostly on the kind of request (coding +0.20, maths +0.24, humanities and writing about 0 on the training
questions), and the shipped gain estimate, learnt mostly from MMLU and GSM8K's right/wrong labels, orders such
prompts by difficulty, which is not the gap. So for a prompt a small classifier (`gate`: a logistic regression on
the static vector and the text statistics, the estimate's first 71 features) calls MT-Bench-like, the gain moves
`share` of the way to the mean gain of its `k` most similar MT-Bench training prompts (cosine of the static
vectors): g + share x (prior - g). Other prompts are left as they are. Chosen over many held-out question draws
of the training data (scripts/cv_mt_bench_splits.py; docs/models.md, "MT-Bench over many held-out question
draws"). Per request: a 71-term dot product, and for gated prompts one product with a table of about a hundred
vectors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aigrid.errors import AigridError

Floats = npt.NDArray[np.float64]


def nearest_mean(queries: npt.NDArray[np.floating[Any]], table: npt.NDArray[np.floating[Any]],
                 values: npt.NDArray[np.floating[Any]], k: int) -> Floats:
    """Per query row, the mean of `values` over its k most similar `table` rows (dot product of unit vectors);
    k beyond the table: all of it."""
    sims = np.asarray(queries, np.float64) @ np.asarray(table, np.float64).T
    k = min(k, sims.shape[1])
    near = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    return np.asarray(values, np.float64)[near].mean(axis=1)


def shrink(gain: Floats, prior: Floats, weight: Floats, share: float) -> Floats:
    """The gain moved share x weight of the way to the prior."""
    return gain + share * weight * (prior - gain)


@dataclass(frozen=True)
class JudgedPrior:
    """`gate_weights` . features[:71] + `gate_bias` >= logit(`threshold`): the prompt is MT-Bench-like; then its
    gain moves `share` of the way to the mean gain of its `k` nearest rows of `vectors` (int8 x 127) / `gains`."""

    gate_weights: npt.NDArray[np.float32]
    gate_bias: float
    threshold: float
    vectors: npt.NDArray[np.int8]
    gains: npt.NDArray[np.float32]
    k: int
    share: float

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.gains) or len(self.gains) == 0 or self.k < 1:
            raise AigridError(f"judged prior table {self.vectors.shape} does not match {len(self.gains)} gains "
                              f"(k = {self.k})")
        if not 0.0 < self.threshold < 1.0 or not 0.0 <= self.share <= 1.0:
            raise AigridError(f"judged prior threshold {self.threshold} must be in (0, 1), share {self.share} in [0, 1]")
        object.__setattr__(self, "_ref", self.vectors.astype(np.float32) / 127.0)
        object.__setattr__(self, "_cut", math.log(self.threshold / (1.0 - self.threshold)))

    @property
    def width(self) -> int:
        """How many leading features the gate reads."""
        return len(self.gate_weights)

    def gated(self, features: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:
        """Per row of `features` (their first `width` columns): is the prompt MT-Bench-like?"""
        f = np.asarray(features, np.float64)[:, :self.width]
        return f @ self.gate_weights.astype(np.float64) + self.gate_bias >= self.__dict__["_cut"]

    def adjust(self, gain: Floats, features: npt.NDArray[np.floating[Any]],
               vectors: npt.NDArray[np.floating[Any]]) -> Floats:
        """Many prompts' gains at once (rows of `features` and of their unit `vectors`)."""
        weight = self.gated(features).astype(np.float64)
        prior = nearest_mean(vectors, self.__dict__["_ref"], self.gains, self.k)
        return shrink(np.asarray(gain, np.float64), prior, weight, self.share)

    def adjust_one(self, gain: float, features: npt.NDArray[np.float32], dimensions: int) -> float:
        """One prompt's gain; `features` the estimate's input, its vector the first `dimensions`. einsum on the
        calling thread, as NeighbourScore.score."""
        w = self.gate_weights
        if float(np.einsum("i,i->", features[:self.width], w)) + self.gate_bias < self.__dict__["_cut"]:
            return gain
        sims = np.einsum("ij,j->i", self.__dict__["_ref"], features[:dimensions])
        k = min(self.k, len(sims))
        prior = float(self.gains[np.argpartition(-sims, k - 1)[:k]].astype(np.float64).mean())
        return gain + self.share * (prior - gain)

    def arrays(self) -> dict[str, Any]:
        return {"judged_gate_weights": self.gate_weights.astype(np.float32), "judged_gate_bias": np.float64(self.gate_bias),
                "judged_threshold": np.float64(self.threshold), "judged_vectors": self.vectors,
                "judged_gains": self.gains.astype(np.float32), "judged_k": np.int64(self.k),
                "judged_share": np.float64(self.share)}

    @classmethod
    def from_arrays(cls, z: Any) -> JudgedPrior | None:
        if "judged_gains" not in z.files:
            return None
        return cls(z["judged_gate_weights"].astype(np.float32), float(z["judged_gate_bias"]),
                   float(z["judged_threshold"]), z["judged_vectors"].astype(np.int8),
                   z["judged_gains"].astype(np.float32), int(z["judged_k"]), float(z["judged_share"]))
