"""Prompt-injection and jailbreak detector: a hashed-feature logistic model shipped as a small file.

The artefact (injection_model.bin.gz) is rebuilt by scripts/train_firewall.py. Loading needs the standard
library and numpy: a JSON header line followed by little-endian float32 weights, gzip-compressed. Long texts
are scored window by window (features.windows) and the highest window wins. Two operating points for what
the client writes (`threshold` to flag, `block_threshold` to block) and two for text the model reads as data
(tool and MCP results, retrieved documents, web pages), all chosen on validation data; see docs/security.md
for what each costs.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aigrid.security.firewall.features import (
    DOCUMENT_STEP,
    DOCUMENT_WINDOW,
    STEP,
    WINDOW,
    Buckets,
    buckets,
    windows,
)

DEFAULT_MODEL_PATH = Path(__file__).with_name("injection_model.bin.gz")


@dataclass(frozen=True, slots=True)
class InjectionScore:
    probability: float
    is_injection: bool
    """At or above the flag threshold."""
    should_block: bool
    """At or above the stricter block threshold (fewer false positives, some attacks only flagged)."""
    window: int
    """Index of the highest-scoring window of the text."""


def _threshold(meta: dict[str, object], key: str, default: float) -> float:
    value = meta.get(key, default)
    return float(value) if isinstance(value, int | float) else default


class InjectionModel:
    def __init__(self, weights: npt.NDArray[np.float32], bias: float, threshold: float, dim: int,
                 meta: dict[str, object]) -> None:
        if len(weights) != dim or dim & (dim - 1):
            raise ValueError(f"weights length {len(weights)} does not match power-of-two dim {dim}")
        self._w = np.asarray(weights, dtype=np.float32)
        self.bias = bias
        self.threshold = threshold
        self.dim = dim
        self.meta = meta
        self.block_threshold = max(threshold, _threshold(meta, "block_threshold", threshold))
        self.document_threshold = _threshold(meta, "document_threshold", threshold)
        self.document_block_threshold = max(self.document_threshold,
                                            _threshold(meta, "document_block_threshold", self.block_threshold))

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL_PATH) -> InjectionModel:
        with gzip.open(path, "rb") as f:
            header = json.loads(f.readline())
            weights = np.frombuffer(f.read(), dtype="<f4").astype(np.float32)
        return cls(weights, float(header["bias"]), float(header["threshold"]), int(header["dim"]), header)

    def save(self, path: Path) -> None:
        header = dict(self.meta, bias=self.bias, threshold=self.threshold, dim=self.dim)
        with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
            f.write(json.dumps(header).encode() + b"\n")
            f.write(self._w.astype("<f4").tobytes())

    def _probability(self, b: Buckets) -> float:
        if not len(b):
            return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, self.bias))))
        z = self.bias + float(self._w[b].sum(dtype=np.float64)) / math.sqrt(len(b))
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def probability(self, text: str) -> float:
        """The whole text as one window (what training sees)."""
        return self._probability(buckets(text, self.dim))

    def score(self, text: str, *, document: bool = False) -> InjectionScore:
        """The highest window's probability; `document` selects the operating point for text the model
        reads as data (tool results, retrieved documents, web pages)."""
        best, where = 0.0, 0
        size, step = (DOCUMENT_WINDOW, DOCUMENT_STEP) if document else (WINDOW, STEP)
        for i, b in enumerate(windows(text, self.dim, size, step)):
            p = self._probability(b)
            if p > best:
                best, where = p, i
        flag, block = ((self.document_threshold, self.document_block_threshold) if document
                       else (self.threshold, self.block_threshold))
        return InjectionScore(best, best >= flag, best >= block, where)
