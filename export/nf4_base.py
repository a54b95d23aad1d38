"""A 4-bit (NF4) base layer that computes as its float32 dequantization without keeping it.

A QLoRA adapter learned to correct the NF4-rounded weights, so export merges it into exactly those
(docs/EXPORT.md, "QLoRA runs"). Dequantizing the whole base up front (`model.dequantize()`) holds
float32 for every weight: 32 GB for Qwen3-8B. This layer keeps the packed NF4 weight (about half a
byte per weight) and dequantizes it on each call, to compute the reference logits, and once when it
is merged and written (export/merged_weights.py). It dequantizes the way transformers'
`model.dequantize()` does, so the merged weights are the same numbers.

Why not the bitsandbytes layer itself: on CPUs with AVX512-BF16 it repacks its weights in eval mode
and computes in bfloat16, not what training computed (tests/export/test_export.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DequantizedNF4Linear(nn.Linear):
    """Wraps a bitsandbytes `Linear4bit`: same packed weight and bias, float32 arithmetic.

    An `nn.Linear` to peft, so the adapter wraps it as a plain LoRA layer (lora.Linear).
    """

    def __init__(self, layer: nn.Module) -> None:
        nn.Module.__init__(self)  # not nn.Linear's: it would allocate a dense weight
        self.in_features, self.out_features = layer.in_features, layer.out_features
        self.weight = layer.weight  # bitsandbytes Params4bit: packed uint8 + its quant_state
        self.bias = layer.bias

    def dense_weight(self) -> torch.Tensor:
        from transformers.integrations.bitsandbytes import dequantize_bnb_weight

        return dequantize_bnb_weight(self.weight).to(torch.float32)

    def to_dense(self) -> nn.Linear:
        """A float32 nn.Linear holding the dequantized weight (and the same bias)."""
        with torch.device("meta"):
            dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        dense.weight = nn.Parameter(self.dense_weight(), requires_grad=False)
        dense.bias = self.bias
        return dense

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.dense_weight().to(x.dtype)
        return F.linear(x, weight, None if self.bias is None else self.bias.to(x.dtype))


def wrap_nf4_layers(model: nn.Module) -> int:
    """Replace every bitsandbytes `Linear4bit` of `model` in place; returns how many."""
    import bitsandbytes as bnb

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    for name, layer in layers:
        model.set_submodule(name, DequantizedNF4Linear(layer))
    return len(layers)
