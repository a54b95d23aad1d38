"""The vision side as one module: frozen encoder + trained projector, pixels in, LLM rows out.

pixel_values (B, T, 3, H, W) float32 -> vision_embeds (B, T*M, Dl). This is exactly
`VideoLanguageModel.vision_rows` without the LLM: the export stage traces it to vision.onnx, the
PyTorch vision engine runs it from a bundle's reference/ copy, and the benchmarks time it. The
tensor names are part of the bundle format (docs/EXPORT.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn
from transformers import AutoConfig

from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ModelError
from vlmcap.model.projectors import FrameProjector
from vlmcap.model.vision_tower import VisionTower
from vlmcap.model.vlm import build_vision_side
from vlmcap.presets import resolve_model_source

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "vision_embeds"


class VisionGraph(nn.Module):
    """Encoder + projector: exactly `VideoLanguageModel.vision_rows`, as a standalone module."""

    def __init__(self, vision: VisionTower, projector: FrameProjector) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projector(self.vision(pixel_values))


def llm_hidden_size(config: VlmcapConfig) -> int:
    """The LLM's hidden size from its config alone: the projector's output width, without loading weights."""
    source = resolve_model_source(config.model.llm.model, seed=config.seed)
    hf_config = AutoConfig.from_pretrained(
        source.path, revision=config.model.llm.revision, trust_remote_code=config.model.llm.trust_remote_code
    )
    return int(getattr(hf_config, "text_config", hf_config).hidden_size)


def build_vision_graph(config: VlmcapConfig, weights_dir: Path | None = None, attention: str = "eager") -> VisionGraph:
    """The float32 CPU encoder + projector: the run's trained one from `weights_dir` (strict load:
    every key must match), or the config's seeded random one (benchmarks).

    Eager attention is what gets exported: plain MatMul/Softmax, standard ONNX (docs/EXPORT.md).
    """
    vision, projector = build_vision_side(config, llm_hidden_size(config))
    if weights_dir is not None:
        path = weights_dir / "projector.safetensors"
        try:
            projector.load_state_dict(load_file(path), strict=True)
        except RuntimeError as e:
            raise ModelError(f"{path}: does not fit the projector in config.yaml ({str(e).splitlines()[0]})") from None
    vision.model.set_attn_implementation(attention)
    return VisionGraph(vision, projector.requires_grad_(False)).eval()
