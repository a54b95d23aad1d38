"""FLOPs of a forward pass counted from its layers, the same on every torch version.

`torch.utils.flop_counter.FlopCounterMode` counts every aten op, but its formulas change with
torch: torch 2.11's sdpa formula asserts on grouped-query attention (Qwen3: 16 query heads over 8
key/value heads), so the first GPU run got no FLOP figure for any LLM stage
(docs/bench/2026-12-04-h200/). Here the multiply-adds that make up a transformer's FLOPs are
counted where they happen, from the shapes each call really has:

- `nn.Linear`: 2 x input rows x in_features x out_features (a module hook);
- `nn.Conv1d/2d/3d`: 2 x output elements x in_channels / groups x kernel volume;
- `scaled_dot_product_attention`: 4 x batch x query heads x query length x key length x head
  dim (QK^T and attention x V, the full square, as FlopCounterMode counts it), grouped-query or not.

Elementwise work (norms, activations, softmax, rotary) is left out, as in FlopCounterMode, which
counts only matmuls, convolutions and attention. `flops_with_cross_check` also runs the counter
where it works and reports both.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn


class _Count:
    def __init__(self) -> None:
        self.flops = 0

    def module(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        if isinstance(module, nn.Linear) and inputs:
            rows = inputs[0].numel() // module.in_features
            self.flops += 2 * rows * module.in_features * module.out_features
        elif isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(output, torch.Tensor):
            per_output = module.in_channels // module.groups * math.prod(module.kernel_size)
            self.flops += 2 * output.numel() * per_output

    def attention(self, query: torch.Tensor, key: torch.Tensor) -> None:
        *batch, heads, q_len, head_dim = query.shape
        self.flops += 4 * math.prod(batch) * heads * q_len * key.shape[-2] * head_dim


@contextlib.contextmanager
def _counting() -> Iterator[_Count]:
    count = _Count()
    functional = torch.nn.functional
    sdpa = functional.scaled_dot_product_attention

    def counted_sdpa(query, key, value, *args, **kwargs):
        count.attention(query, key)
        return sdpa(query, key, value, *args, **kwargs)

    handle = nn.modules.module.register_module_forward_hook(count.module)
    functional.scaled_dot_product_attention = counted_sdpa  # looked up at call time by transformers
    try:
        yield count
    finally:
        functional.scaled_dot_product_attention = sdpa
        handle.remove()


def layer_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of `fn()` from its linear, convolution and attention calls (see the module docstring)."""
    with _counting() as count:
        fn()
    return count.flops


def counter_flops(fn: Callable[[], Any]) -> tuple[int | None, str | None]:
    """torch's FlopCounterMode total for `fn()`, or (None, why) where the counter fails."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            fn()
    except Exception as e:  # its per-op formulas assert on shapes they do not know (torch 2.11: GQA sdpa)
        return None, f"{type(e).__name__}: {e}"
    return int(counter.get_total_flops()), None


def flops_with_cross_check(fn: Callable[[], Any]) -> dict[str, Any]:
    """{"flops": the layer count, "counter_flops": torch's count or None, "counter_error": why not}."""
    flops = layer_flops(fn)
    counted, error = counter_flops(fn)
    return {"flops": flops, "counter_flops": counted, "counter_error": error}
