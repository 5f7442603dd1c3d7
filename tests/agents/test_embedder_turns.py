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
        self.firsts: list[str] = []
        """Each batch's first text, in the order the batches were encoded."""

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
        self.calls.append(len(texts))
        self.firsts.append(texts[0])
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
    await embed("one query", ["q"])
    await big
    # before, the query waited for all 256 inputs (0.4 s) and ended after them. It waits for the batch under way
    # (a second one where a loaded machine let that end first): counted in batches, not timed (a bound of 0.3 s on
    # ~0.1 s read 0.112 s at load 8)
    assert done == ["one query", "256 inputs"]
    assert model.firsts.index("q") <= 2, model.firsts
    assert max(model.calls) == 32


async def test_every_input_keeps_its_vector_and_tokens_are_counted_across_batches() -> None:
    embedder, _ = _embedder(0.0)
    texts = [str(i) for i in range(100)]
    vectors, tokens = await embedder.embed(texts)
    assert vectors.shape == (100, 384) and tokens == 300
    assert [int(v) for v in vectors[:, 0]] == [len(t) for t in texts]
    empty, none = await embedder.embed([])
    assert empty.shape == (0, 384) and none == 0


async def test_a_flood_of_embeddings_requests_waits_on_itself_not_another_tenant_s_retrieval() -> None:
    """The embedder's batches were served caller by caller (asyncio's lock): 8 /v1/embeddings requests at once put
    one batch each ahead of another tenant's retrieval (8 batches of about 2.9 s each on one thread with long
    inputs: past the tool's timeout). Turns go tenant by tenant now: the retrieval waits for the batch under way and
    one turn of the requests' tenant (the callers that name none share one)."""
    from aigrid.agents.embeddings import create_embeddings
    from aigrid.agents.retrieval import Retrieve
    from aigrid.agents.tool import ToolContext
    from aigrid.agents.vector_store import Document, SiteStores, VectorStore

    embedder, model = _embedder(0.02)
    stores = SiteStores(embedder)
    store = stores._stores["s1"] = VectorStore(384)
    store.add([Document("the policy", "policy.md", "b")], np.eye(1, 384, dtype=np.float32))
    flood = [asyncio.create_task(create_embeddings({"model": embedder.model, "input": [f"a{i}"] * 64},
                                                   {embedder.model: embedder}))
             for i in range(8)]  # 2 batches each, as routes.py sends them (no tenant named)
    await asyncio.sleep(0.005)  # the first batch under way, the other 7 callers waiting
    answer = await Retrieve(stores).run({"query": "policy"}, ToolContext("s1", "b"))
    assert "policy.md" in answer
    before = model.firsts.index("policy")
    await asyncio.gather(*flood)
    assert before <= 2, model.firsts  # 8 before: one batch of each caller


async def test_each_tenant_s_embeddings_requests_take_turns_with_the_others_tenant_by_tenant() -> None:
    from aigrid.agents.embeddings import create_embeddings

    embedder, model = _embedder(0.0)
    embedders = {embedder.model: embedder}

    async def request(tenant: str, name: str) -> None:
        await create_embeddings({"model": embedder.model, "input": [name] * 64}, embedders, tenant)

    # a0 takes the embedder, a1..a3 wait (in that order), then b0
    await asyncio.gather(*(request("a", f"a{i}") for i in range(4)), request("b", "b0"))
    assert model.firsts.index("b0") == 2, model.firsts  # after a0's batch and one more of tenant a's (4 before)
    assert model.firsts.count("b0") == 2 and len(model.firsts) == 10


async def test_a_caller_cancelled_waiting_or_as_its_turn_came_passes_the_turn_on() -> None:
    from aigrid.turns import Turns

    turns, served = Turns(), []

    async def take(name: str, tenant: str) -> None:
        async with turns.turn(tenant):
            served.append(name)

    async with turns.turn("a"):
        gone = asyncio.create_task(take("gone", "x"))
        handed = asyncio.create_task(take("handed", "y"))
        last = asyncio.create_task(take("last", "z"))
        await asyncio.sleep(0)  # all three wait
        gone.cancel()  # while waiting
        await asyncio.sleep(0)
    handed.cancel()  # its turn was handed to it as the holder left, and it had not run yet
    await asyncio.gather(gone, handed, last, return_exceptions=True)
    assert served == ["last"] and gone.cancelled() and handed.cancelled()
    assert turns.held == 0 and turns.waiting == 0
    await asyncio.wait_for(take("again", "a"), 30)  # at once; a turn left held would never come


async def test_a_caller_that_leaves_mid_batch_holds_the_embedder_until_its_batch_is_done() -> None:
    """A caller cancelled while its batch encoded (a client hanging up: /v1/embeddings is cancelled at a hang-up; a
    tool's timeout) handed its turn on at once, its batch still encoding on a thread: the next batch ran beside
    it, and a client that hung up at each batch had any number encoding at once (the CPU, the default executor's
    threads). The turn is handed on when the thread is done now: one batch encodes at a time."""
    import threading

    embedder, model = _embedder(0.1)
    lock, running, most = threading.Lock(), [0], [0]
    encode = model.encode

    def counted(texts: Sequence[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            return encode(texts, batch_size)
        finally:
            with lock:
                running[0] -= 1

    model.encode = counted  # type: ignore[method-assign]
    for _ in range(3):  # a client hanging up 20 ms into each of its batches
        gone = asyncio.create_task(embedder.embed(["x"] * 32))
        await asyncio.sleep(0.02)
        gone.cancel()
    vectors, _ = await embedder.embed(["q"])
    assert vectors.shape == (1, 384)
    assert most[0] == 1, most
    for _ in range(1500):  # polled up to 30 s: a loaded machine is late, not wrong
        if not running[0]:
            break
        await asyncio.sleep(0.02)
