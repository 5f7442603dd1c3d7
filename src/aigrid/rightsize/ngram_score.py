"""A linear score over hashed word n-grams and the text statistics: one input of the quality estimate's trees.

A logistic regression on the large model's gain ((1 + gain) / 2 as a soft label), trained by
scripts/train_quality_estimator.py. It knows the exact words and subjects of the training prompts (which the
static sentence vector blurs); the trees decide where to trust it. Stored as float16 weights per bucket.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from aigrid.errors import AigridError
from aigrid.rightsize.features import DENSE_NAMES, HASH_BITS, dense_features, hashed_ngrams


@dataclass(frozen=True)
class NgramScore:
    weights: npt.NDArray[np.float32]
    """One weight per hashed bucket (2^HASH_BITS)."""
    dense_weights: npt.NDArray[np.float32]
    bias: float

    def __post_init__(self) -> None:
        if self.weights.shape != (1 << HASH_BITS,) or self.dense_weights.shape != (len(DENSE_NAMES),):
            raise AigridError(f"n-gram score weights have shapes {self.weights.shape}, {self.dense_weights.shape}")

    def logit(self, text: str, dense: npt.NDArray[np.float32] | None = None) -> float:
        """`dense`: the prompt's dense_features when the caller has them already."""
        idx, val = hashed_ngrams(text)
        out = self.bias + float((dense_features(text) if dense is None else dense) @ self.dense_weights)
        return out + float(val @ self.weights[idx]) if len(idx) else out
