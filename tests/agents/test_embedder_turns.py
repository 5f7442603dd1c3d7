"""The one embedder of a process is shared batch by batch (helper 132, 5 Dec 2026): a tenant's long
/v1/embeddings request does not hold every other tenant's retrieval behind it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence

import numpy as np

from aigrid.agents.embeddings import MiniLMEmbedder


class _SlowModel:
    """Stands in for MiniLM: `seconds` per batch of 32 texts, as the real encoder takes about 2.9 s per batch of 32
    texts of 256 tokens on one thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[int] = []

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
        self.calls.append(len(texts))
        time.sleep(self.seconds * -(-len(texts) // batch_size))
        out = np.zeros((len(texts), 384), np.float32)
        out[:, 0] = [len(t) for t in texts]
        return out, 3 * len(texts)


class _Blas:
    @contextlib.contextmanager
    def limit(self, **_: object) -> Iterator[None]:
        yield


def _embedder(seconds: float) -> tuple[MiniLMEmbedder, _SlowModel]:
    embedder = MiniLMEmbedder(threads=1)
    model = _SlowModel(seconds)
    embedder._model, embedder._blas = model, _Blas()  # type: ignore[assignment]
    return embedder, model


async def test_a_long_request_does_not_hold_the_embedder_from_a_short_one() -> None:
    embedder, model = _embedder(0.05)
    done: list[str] = []

    async def embed(name: str, texts: list[str]) -> None:
        await embedder.embed(texts)
        done.append(name)

    big = asyncio.create_task(embed("256 inputs", ["x" * 8] * 256))  # 8 batches, 0.4 s
    await asyncio.sleep(0.01)  # the first batch under way
    started = time.monotonic()
    await embed("one query", ["q"])
    waited = time.monotonic() - started
    await big
    # before, the query waited for all 256 inputs (0.4 s) and ended after them
    assert done == ["one query", "256 inputs"]
    assert waited < 0.3, waited
    assert max(model.calls) == 32


async def test_every_input_keeps_its_vector_and_tokens_are_counted_across_batches() -> None:
    embedder, _ = _embedder(0.0)
    texts = [str(i) for i in range(100)]
    vectors, tokens = await embedder.embed(texts)
    assert vectors.shape == (100, 384) and tokens == 300
    assert [int(v) for v in vectors[:, 0]] == [len(t) for t in texts]
    empty, none = await embedder.embed([])
    assert empty.shape == (0, 384) and none == 0
