"""LLaVA-1.5's `mlp2x_gelu` projector."""

import torch
from torch import nn

from vlmcap.model.projectors.base import FrameProjector, ProjectorGeometry


class MlpGeluProjector(FrameProjector):
    """LLaVA-1.5 `mm_projector`: nn.Sequential(Linear(Dv, Dl), GELU(), Linear(Dl, Dl)).

    Children are registered as "0", "1", "2" so the keys are LLaVA's `0.weight` ... `2.bias`.
    """

    kind = "mlp2x_gelu"

    def __init__(self, geometry: ProjectorGeometry) -> None:
        super().__init__()
        self.tokens_per_frame = geometry.num_patches
        self.add_module("0", nn.Linear(geometry.vision_hidden_size, geometry.llm_hidden_size))
        self.add_module("1", nn.GELU())
        self.add_module("2", nn.Linear(geometry.llm_hidden_size, geometry.llm_hidden_size))

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            features = layer(features)
        return features
