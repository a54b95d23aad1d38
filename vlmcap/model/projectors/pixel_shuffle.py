"""InternVL 1.5+ projector: pixel shuffle (x0.5) then LayerNorm + 2-layer GELU MLP."""

import torch
from torch import nn

from vlmcap.errors import ConfigError
from vlmcap.model.projectors.base import FrameProjector, ProjectorGeometry

SCALE_FACTOR = 0.5  # InternVL's downsample_ratio: 2x2 neighbouring patches become one token


def pixel_shuffle(features: torch.Tensor, scale_factor: float = SCALE_FACTOR) -> torch.Tensor:
    """InternVL's pixel shuffle on (B, W, H, C) -> (B, H*s, W*s, C/s^2), in the reference's axis order."""
    b, w, h, c = features.shape
    features = features.reshape(b, w, int(h * scale_factor), int(c / scale_factor))
    features = features.permute(0, 2, 1, 3)
    features = features.reshape(b, int(h * scale_factor), int(w * scale_factor), int(c / scale_factor**2))
    return features.permute(0, 2, 1, 3)


class PixelShuffleProjector(FrameProjector):
    """As transformers' `InternVLMultiModalProjector` (keys `layer_norm`, `linear_1`, `linear_2`)."""

    kind = "pixel-shuffle"

    def __init__(self, geometry: ProjectorGeometry) -> None:
        super().__init__()
        if geometry.grid_size % 2:
            raise ConfigError(
                f"model.projector.kind=pixel-shuffle needs an even patch grid, the vision model has "
                f"{geometry.grid_size}x{geometry.grid_size}"
            )
        self.tokens_per_frame = (geometry.grid_size // 2) ** 2
        shuffled = geometry.vision_hidden_size * int(1 / SCALE_FACTOR) ** 2
        self.layer_norm = nn.LayerNorm(shuffled)
        self.linear_1 = nn.Linear(shuffled, geometry.llm_hidden_size)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(geometry.llm_hidden_size, geometry.llm_hidden_size)

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        frames, n, _ = features.shape
        side = int(n**0.5)
        grid = pixel_shuffle(features.reshape(frames, side, side, -1))
        tokens = grid.reshape(frames, -1, grid.shape[-1])
        return self.linear_2(self.act(self.linear_1(self.layer_norm(tokens))))
