"""LLaVA's original projector: a single Linear applied to every patch."""

import torch
from torch import nn
from torch.nn import functional as F

from vlmcap.model.projectors.base import FrameProjector, ProjectorGeometry


class LinearProjector(FrameProjector):
    """LLaVA `mm_projector = nn.Linear(mm_hidden_size, hidden_size)`; keys `weight`, `bias`."""

    kind = "linear"

    def __init__(self, geometry: ProjectorGeometry) -> None:
        super().__init__()
        self.tokens_per_frame = geometry.num_patches
        # The reference module *is* an nn.Linear, so its keys have no prefix: own the parameters
        # directly and borrow nn.Linear's initialisation for them.
        self.in_features = geometry.vision_hidden_size
        self.out_features = geometry.llm_hidden_size
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features))
        nn.Linear.reset_parameters(self)

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        return F.linear(features, self.weight, self.bias)
