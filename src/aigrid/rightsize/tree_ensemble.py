"""A boosted regression tree ensemble as plain arrays: the quality estimate's heads, evaluated in numpy.

Trained with scikit-learn's HistGradientBoostingRegressor (scripts/train_quality_estimator.py, the `train`
extra) and exported by `from_sklearn`; the request path needs no scikit-learn. Every tree is padded to the
same node count, so one prediction walks all trees at once, one level per step (depth 3: four steps).
Internally the nodes are one flat array in which a leaf points to itself, so a walk is a fixed number of
gathers with no leaf test. A missing value (never produced by the features) follows the side the trainer
chose for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from aigrid.errors import AigridError

FIELDS = ("feature", "threshold", "left", "right", "value", "leaf", "missing_left")


@dataclass(frozen=True)
class TreeEnsemble:
    """Arrays of shape (trees, nodes); `base` + the sum of the reached leaves' values is the prediction."""

    feature: npt.NDArray[np.int32]
    threshold: npt.NDArray[np.float64]
    left: npt.NDArray[np.int32]
    right: npt.NDArray[np.int32]
    value: npt.NDArray[np.float64]
    leaf: npt.NDArray[np.bool_]
    missing_left: npt.NDArray[np.bool_]
    base: float
    depth: int

    def __post_init__(self) -> None:
        shapes = {getattr(self, f).shape for f in FIELDS}
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise AigridError(f"tree ensemble arrays disagree in shape: {sorted(shapes)}")
        trees, width = self.feature.shape
        here = np.arange(trees * width).reshape(trees, width)
        start = (np.arange(trees) * width)[:, None]
        flat = {
            "f": np.where(self.leaf, 0, self.feature).ravel(),
            "t": np.where(self.leaf, np.inf, self.threshold).ravel(),
            "l": np.where(self.leaf, here, self.left + start).ravel(),
            "r": np.where(self.leaf, here, self.right + start).ravel(),
            "m": (self.missing_left & ~self.leaf).ravel(),
            "roots": start.ravel(),
        }
        object.__setattr__(self, "_flat", flat)

    def predict(self, x: npt.NDArray[np.float32]) -> float:
        """One feature vector's prediction."""
        flat = self._flat  # type: ignore[attr-defined]
        node = flat["roots"]
        if np.isnan(x).any():
            for _ in range(self.depth + 1):
                v = x[flat["f"][node]]
                go_left = np.where(np.isnan(v), flat["m"][node], v <= flat["t"][node])
                node = np.where(go_left, flat["l"][node], flat["r"][node])
        else:
            for _ in range(self.depth + 1):
                node = np.where(x[flat["f"][node]] <= flat["t"][node], flat["l"][node], flat["r"][node])
        return float(self.base + self.value.ravel()[node].sum())

    def arrays(self, prefix: str) -> dict[str, Any]:
        out: dict[str, Any] = {f"{prefix}_{f}": getattr(self, f) for f in FIELDS}
        out[f"{prefix}_base"] = np.float64(self.base)
        out[f"{prefix}_depth"] = np.int64(self.depth)
        return out

    @classmethod
    def from_arrays(cls, z: Any, prefix: str) -> TreeEnsemble:
        def array(f: str) -> Any:
            return np.asarray(z[f"{prefix}_{f}"])

        return cls(array("feature"), array("threshold"), array("left"), array("right"), array("value"),
                   array("leaf"), array("missing_left"), float(z[f"{prefix}_base"]), int(z[f"{prefix}_depth"]))

    @classmethod
    def from_sklearn(cls, model: Any) -> TreeEnsemble:
        """From a fitted HistGradientBoostingRegressor (squared error, numeric features)."""
        trees = [p[0].nodes for p in model._predictors]
        width = max(len(t) for t in trees)

        def pad(field: str, dtype: Any) -> npt.NDArray[Any]:
            out = np.zeros((len(trees), width), dtype)
            for i, t in enumerate(trees):
                out[i, :len(t)] = t[field]
            return out

        leaf = pad("is_leaf", np.bool_)
        leaf[:, :][pad("count", np.int64) == 0] = True  # padding nodes: never reached, but leaves if they were
        return cls(pad("feature_idx", np.int32), pad("num_threshold", np.float64), pad("left", np.int32),
                   pad("right", np.int32), pad("value", np.float64), leaf, pad("missing_go_to_left", np.bool_),
                   float(np.ravel(model._baseline_prediction)[0]), int(max(t["depth"].max() for t in trees)))
