"""What every projector shares: per-frame application and the geometry it is built for."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vlmcap.errors import ConfigError


@dataclass(frozen=True)
class ProjectorGeometry:
    """Sizes a projector is built for: vision width Dv, LLM width Dl, and the patch grid of one frame."""

    vision_hidden_size: int
    llm_hidden_size: int
    grid_size: int  # patches per side; N = grid_size**2 (CLIP-L/14-336: 24)

    @property
    def num_patches(self) -> int:
        return self.grid_size**2


def square_side(tokens: int, kind: str) -> int:
    side = math.isqrt(tokens)
    if side * side != tokens:
        raise ConfigError(f"model.projector.tokens_per_frame={tokens} must be a square number for {kind}")
    return side


class FrameProjector(nn.Module):
    """Maps vision features (B, T, N, Dv) to LLM rows (B, T*M, Dl), one frame at a time.

    Subclasses implement `project_frames` on (frames, N, Dv) exactly as their reference does, so
    the reference's state-dict keys and numerics carry over; frames are concatenated in time order.
    """

    kind: str
    tokens_per_frame: int

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, t, n, d = features.shape
        tokens = self.project_frames(features.reshape(b * t, n, d))
        return tokens.reshape(b, t * tokens.shape[1], tokens.shape[2])
