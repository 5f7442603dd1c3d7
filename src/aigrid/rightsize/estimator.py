"""The shipped quality estimate: per prompt, the probability that a mid-size and a large model answer well.

Three logistic regressions over `features.py` (hashed n-grams + text statistics), trained by
scripts/train_quality_estimator.py on RouteLLM's labels (docs/models.md, the model card): whether the
mid-size reference model answers well, whether the large one does, and whether the large one does better
(ties count one half). The last is the router's score. Inference is a sparse dot product: no torch, no
thread, well under a millisecond per prompt on one core (scripts/bench_quality_estimate.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aigrid.errors import AigridError
from aigrid.rightsize.features import dense_features, hashed_ngrams

ARTEFACT = "quality_estimator.npz"
HEADS: tuple[str, str, str] = ("small", "large", "win")
"""The mid-size reference model (Mixtral-8x7B) answers well; the large one (GPT-4) does; the large one does
better than the mid-size one (ties one half)."""


@dataclass(frozen=True, slots=True)
class QualityEstimate:
    """Probabilities that the reference small and large models answer this prompt well, and that the large
    one answers better (ties one half)."""

    p_small: float
    p_large: float
    p_win: float

    @property
    def gain(self) -> float:
        """The expected quality the large model adds, 2 x p_win - 1 (= P(large better) - P(small better)):
        the router's score (higher: send it up)."""
        return 2.0 * self.p_win - 1.0


@dataclass(frozen=True)
class OperatingTable:
    """Measured on the validation split (the model fitted on the train split alone): per threshold `tau` on
    the gain (send to the large model when gain > tau), the share of large-model calls and the mean quality
    drop against always-large, relative to always-large's quality."""

    tau: npt.NDArray[np.float64]
    share_large: npt.NDArray[np.float64]
    relative_drop: npt.NDArray[np.float64]

    def threshold_for(self, target: float) -> float:
        """The most permissive tau whose drop, and every stricter tau's, stays within `target` (e.g. 0.02:
        at most 2% below always using the large model)."""
        ok = np.maximum.accumulate(self.relative_drop) <= target + 1e-12
        return float(self.tau[np.flatnonzero(ok)[-1]]) if ok.any() else float(self.tau[0])

    def at(self, tau: float) -> tuple[float, float]:
        """(share of large calls, relative drop) at the nearest tabulated threshold."""
        i = int(np.argmin(np.abs(self.tau - tau)))
        return float(self.share_large[i]), float(self.relative_drop[i])


class QualityEstimator:
    """Loads the artefact once (`load()`); `estimate(text)` is then pure arithmetic."""

    def __init__(self, weights: npt.NDArray[np.float32], dense_weights: npt.NDArray[np.float32],
                 bias: npt.NDArray[np.float32], bits: int, meta: dict[str, str],
                 table: OperatingTable | None = None) -> None:
        if weights.shape != (1 << bits, len(HEADS)):
            raise AigridError(f"quality estimator weights have shape {weights.shape}, expected {(1 << bits, len(HEADS))}")
        self.weights = weights
        self.dense_weights = dense_weights
        self.bias = bias
        self.bits = bits
        self.meta = meta
        self.table = table

    @classmethod
    def load(cls, path: Path | None = None) -> QualityEstimator:
        source = path if path is not None else resources.files("aigrid.rightsize").joinpath(ARTEFACT)
        with source.open("rb") as f, np.load(f, allow_pickle=False) as z:
            meta = {str(k): str(v) for k, v in zip(z["meta_keys"], z["meta_values"], strict=True)}
            table = (OperatingTable(z["tau"], z["share_large"], z["relative_drop"]) if "tau" in z.files else None)
            return cls(z["weights"].astype(np.float32), z["dense_weights"].astype(np.float32),
                       z["bias"].astype(np.float32), int(z["bits"]), meta, table)

    def save(self, path: Path) -> None:
        keys = sorted(self.meta)
        table = ({} if self.table is None else {"tau": self.table.tau, "share_large": self.table.share_large,
                                                "relative_drop": self.table.relative_drop})
        np.savez_compressed(path, weights=self.weights.astype(np.float16), dense_weights=self.dense_weights,
                            bias=self.bias, bits=np.int64(self.bits), meta_keys=np.array(keys),
                            meta_values=np.array([self.meta[k] for k in keys]), **table)

    def logits(self, text: str) -> npt.NDArray[np.float32]:
        idx, val = hashed_ngrams(text, self.bits)
        out = self.bias + dense_features(text) @ self.dense_weights
        if len(idx):
            out = out + val @ self.weights[idx]
        return out.astype(np.float32)

    def estimate(self, text: str) -> QualityEstimate:
        p = 1.0 / (1.0 + np.exp(-self.logits(text)))
        return QualityEstimate(float(p[0]), float(p[1]), float(p[2]))
