"""How token ids become the LLM's input rows outside the model (docs/MODEL.md, "The sequence every engine builds").

The vLLM engine takes finished prompt embeddings, so the text rows around the video are looked up
outside the model: one tensor read from the bundle's safetensors (memory-mapped; 1.2 GB for
Qwen3-8B in bf16, not the whole model), times the scale the model's own embedding layer applies.
That scale is 1 for most families, but Gemma multiplies by sqrt(hidden_size) (in the weight's
dtype) inside its embedding layer; a plain table lookup would feed it rows 8x too small on a
hidden-64 model and caption garbage. So the scale is measured on the model at export, recorded in
the bundle, applied here, and export checks that these rows equal `get_input_embeddings()(ids)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from vlmcap.errors import BundleError, ExportError


def _file_holding(llm_dir: Path, key: str) -> Path:
    index = llm_dir / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        if key not in weight_map:
            raise BundleError(f"{index}: has no tensor {key!r}")
        return llm_dir / weight_map[key]
    return llm_dir / "model.safetensors"


class EmbeddingTable:
    """Callable like the model's embedding layer: token ids -> rows, on CPU in the checkpoint's dtype."""

    def __init__(self, llm_dir: Path, key: str, scale: float = 1.0) -> None:
        path = _file_holding(llm_dir, key)
        try:
            with safe_open(str(path), framework="pt") as f:
                self.weight = f.get_tensor(key)
        except (OSError, KeyError, RuntimeError) as e:
            raise BundleError(f"{path}: cannot read the embedding table {key!r} ({e})") from None
        # In the weight's dtype, as the model's layer multiplies (Gemma rounds sqrt(hidden) to bf16).
        self.scale = None if scale == 1.0 else torch.tensor(scale, dtype=self.weight.dtype)

    @property
    def dtype(self) -> torch.dtype:
        return self.weight.dtype

    @property
    def hidden_size(self) -> int:
        return int(self.weight.shape[1])

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.weight[ids.cpu()]
        return rows if self.scale is None else rows * self.scale


def measured_scale(layer: nn.Module, ids: torch.Tensor) -> float:
    """The factor `layer` applies to its table rows, measured on `ids`; ExportError when its output is
    no scaled lookup at all (then the engines could not reproduce it)."""
    weight = layer.weight
    with torch.no_grad():
        rows, raw = layer(ids).double(), weight[ids].double()
    nonzero = raw != 0
    scale = float((rows[nonzero] / raw[nonzero]).median()) if nonzero.any() else 1.0
    expected = weight[ids] if scale == 1.0 else weight[ids] * torch.tensor(scale, dtype=weight.dtype)
    if not torch.equal(layer(ids).detach(), expected.detach()):
        raise ExportError(
            f"the LLM's embedding layer ({type(layer).__name__}) is not a table lookup times a constant; "
            "vlmcap's engines build text rows that way and cannot serve this model"
        )
    return scale


def check_rows(table: EmbeddingTable, layer: nn.Module, ids: torch.Tensor) -> None:
    """The engines' rows must be the model's own, exactly, for every id checked."""
    with torch.no_grad():
        ours, theirs = table(ids), layer(ids.to(layer.weight.device)).cpu()
    if not torch.equal(ours, theirs.to(ours.dtype)):
        worst = (ours.double() - theirs.double()).abs().max().item()
        raise ExportError(
            f"text rows read from the shipped checkpoint differ from its embedding layer (max |diff| {worst:.3g}); "
            "the engines would feed the LLM different rows than training did"
        )
