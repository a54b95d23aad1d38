"""The merged LLM's tensors, planned from the un-merged model and computed one layer at a time.

Each LoRA layer is merged by peft's own `merge` on that one layer (its base weight dequantized from
NF4 first when training's base was 4-bit, export/nf4_base.py); every other tensor is taken as it is;
each is cast to the shipped dtype. Names are those of the merged model (what `merge_and_unload()` +
`save_pretrained` wrote: peft's wrappers dropped, tied tensors once, under their first name).
Once a tensor has been computed its storage is released from the un-merged model, so the two
models never coexist: the writer (export/safetensors_writer.py) holds one tensor at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from vlmcap.export.nf4_base import DequantizedNF4Linear
from vlmcap.export.safetensors_writer import PlannedTensor


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # As `model.to(dtype)` casts: floating point only.
    return tensor.detach().to(dtype) if tensor.is_floating_point() else tensor.detach()


def _release(module: nn.Module, name: str) -> None:
    """Drop the module's own storage of a tensor that has been handed to the writer."""
    tensor = getattr(module, name)
    tensor.data = torch.empty(0, dtype=tensor.dtype, device=tensor.device)


class _LoraMerge:
    """One LoRA layer, merged once by peft on first use; its weight and bias are read from it."""

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer

    def base(self) -> nn.Module:
        if not self.layer.merged:
            if isinstance(self.layer.base_layer, DequantizedNF4Linear):
                self.layer.base_layer = self.layer.base_layer.to_dense()
            self.layer.merge()
        return self.layer.get_base_layer()


def merged_tensors(model: nn.Module, dtype: torch.dtype) -> list[PlannedTensor]:
    """Every tensor of the merged checkpoint of `model` (a PeftModel or a bare model), in `dtype`."""
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    persistent = set(base.state_dict(keep_vars=True))  # parameters and persistent buffers, by name
    planned: list[PlannedTensor] = []
    seen: set[int] = set()  # tied tensors (embeddings shared with the output head) are written once
    covered: list[str] = []  # modules whose tensors have been planned as a whole

    def add(name: str, tensor: torch.Tensor, shape: tuple[int, ...], make: Callable[[], torch.Tensor]) -> None:
        """`tensor` is the model's own (its identity finds tied copies); `make` computes what is written."""
        if id(tensor) in seen:
            return
        seen.add(id(tensor))
        planned.append(PlannedTensor(name, dtype if tensor.is_floating_point() else tensor.dtype, shape, make))

    def add_linear(prefix: str, weight: torch.Tensor, shape: tuple[int, ...], make: Callable[[], torch.Tensor]) -> None:
        """A linear layer's weight, floating once merged or dequantized (even when stored packed in uint8)."""
        seen.add(id(weight))
        planned.append(PlannedTensor(f"{prefix}.weight", dtype, shape, make))

    for prefix, module in base.named_modules():
        if any(prefix.startswith(done + ".") for done in covered):
            continue
        if isinstance(module, LoraLayer):
            covered.append(prefix)
            merge, layer = _LoraMerge(module), module.get_base_layer()
            add_linear(prefix, layer.weight, (layer.out_features, layer.in_features), _merged(merge, "weight", dtype))
            if layer.bias is not None:
                add(f"{prefix}.bias", layer.bias, tuple(layer.bias.shape), _merged(merge, "bias", dtype))
        elif isinstance(module, DequantizedNF4Linear):
            covered.append(prefix)
            add_linear(prefix, module.weight, (module.out_features, module.in_features), _dequantized(module, dtype))
            if module.bias is not None:
                add(f"{prefix}.bias", module.bias, tuple(module.bias.shape), _as_is(module, "bias", dtype))
        else:
            own = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
            for name, tensor in own:
                key = f"{prefix}.{name}" if prefix else name
                if key in persistent:
                    add(key, tensor, tuple(tensor.shape), _as_is(module, name, dtype))
    return planned


def _merged(merge: _LoraMerge, name: str, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        layer = merge.base()
        tensor = _cast(getattr(layer, name), dtype)
        _release(layer, name)
        return tensor

    return make


def _dequantized(module: DequantizedNF4Linear, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        tensor = _cast(module.dense_weight(), dtype)
        _release(module, "weight")
        return tensor

    return make


def _as_is(module: nn.Module, name: str, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    def make() -> torch.Tensor:
        tensor = _cast(getattr(module, name), dtype)
        _release(module, name)
        return tensor

    return make
