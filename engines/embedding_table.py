"""The LLM's input embedding table, read straight from the bundle's safetensors.

The vLLM engine takes finished prompt embeddings, so the text rows around the video must be
looked up outside the model. Reading one tensor from the checkpoint (memory-mapped) costs the
table's size (1.2 GB for Qwen3-8B in bf16), not the whole model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from vlmcap.errors import BundleError


def _file_holding(llm_dir: Path, key: str) -> Path:
    index = llm_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        if key not in weight_map:
            raise BundleError(f"{index}: has no tensor {key!r}")
        return llm_dir / weight_map[key]
    return llm_dir / "model.safetensors"


class EmbeddingTable:
    """Callable like `nn.Embedding`: token ids -> rows, on CPU in the checkpoint's dtype."""

    def __init__(self, llm_dir: Path, key: str) -> None:
        path = _file_holding(llm_dir, key)
        try:
            with safe_open(str(path), framework="pt") as f:
                self.weight = f.get_tensor(key)
        except (OSError, KeyError, RuntimeError) as e:
            raise BundleError(f"{path}: cannot read the embedding table {key!r} ({e})") from None

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight[ids.cpu()]
