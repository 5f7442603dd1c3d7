"""Prompt-injection and jailbreak detector: a hashed-feature logistic model shipped as a small file.

The artefact (injection_model.bin.gz) is rebuilt by scripts/train_firewall.py from the firewall-dev data.
Loading needs only the standard library: a JSON header line followed by little-endian float32 weights,
gzip-compressed. Long texts (retrieved documents, tool results) are scored window by window and the
highest window wins. Two operating points, both chosen on the validation splits: `threshold` (flag) and
`block_threshold` (block), see docs/security.md for what each costs.
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from array import array
from dataclasses import dataclass
from pathlib import Path

from aigrid.security.firewall.features import featurise, windows

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


class InjectionModel:
    def __init__(self, weights: array[float], bias: float, threshold: float, dim: int, meta: dict[str, object]) -> None:
        if len(weights) != dim or dim & (dim - 1):
            raise ValueError(f"weights length {len(weights)} does not match power-of-two dim {dim}")
        self._w = weights
        self.bias = bias
        self.threshold = threshold
        block = meta.get("block_threshold", threshold)
        self.block_threshold = max(threshold, float(block) if isinstance(block, int | float) else threshold)
        doc = meta.get("document_threshold", self.threshold)
        doc_block = meta.get("document_block_threshold", self.block_threshold)
        self.document_threshold = float(doc) if isinstance(doc, int | float) else self.threshold
        self.document_block_threshold = max(self.document_threshold, float(doc_block)
                                            if isinstance(doc_block, int | float) else self.block_threshold)
        self.dim = dim
        self.meta = meta

    @classmethod
    def load(cls, path: Path = DEFAULT_MODEL_PATH) -> InjectionModel:
        with gzip.open(path, "rb") as f:
            header = json.loads(f.readline())
            weights = array("f")
            weights.frombytes(f.read())
        if sys.byteorder != "little":
            weights.byteswap()
        return cls(weights, float(header["bias"]), float(header["threshold"]), int(header["dim"]), header)

    def save(self, path: Path) -> None:
        header = dict(self.meta, bias=self.bias, threshold=self.threshold, dim=self.dim)
        weights = array("f", self._w)
        if sys.byteorder != "little":
            weights.byteswap()
        with path.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9, mtime=0) as f:
            f.write(json.dumps(header).encode() + b"\n")
            f.write(weights.tobytes())

    def probability(self, text: str) -> float:
        z = self.bias + sum(self._w[i] * v for i, v in featurise(text, self.dim).items())
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def score(self, text: str, *, document: bool = False) -> InjectionScore:
        """The highest window's probability; `document` selects the operating point for text the model
        reads as data (tool results, retrieved documents, web pages)."""
        best, where = 0.0, 0
        for i, part in enumerate(windows(text)):
            p = self.probability(part)
            if p > best:
                best, where = p, i
        flag, block = ((self.document_threshold, self.document_block_threshold) if document
                       else (self.threshold, self.block_threshold))
        return InjectionScore(best, best >= flag, best >= block, where)
