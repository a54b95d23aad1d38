"""Honeybee's C-Abstractor: locality-preserving convolutional abstraction of the patch grid."""

from __future__ import annotations

import torch
from torch import nn

from vlmcap.model.projectors.base import FrameProjector, ProjectorGeometry, square_side
from vlmcap.model.projectors.regnet_blocks import RegStage


def build_mlp(depth: int, hidden_size: int, output_hidden_size: int) -> nn.Sequential:
    """Honeybee `build_mlp`: Linear, then (SiLU, Linear) x (depth - 1)."""
    layers: list[nn.Module] = [nn.Linear(hidden_size, output_hidden_size)]
    for _ in range(1, depth):
        layers += [nn.SiLU(), nn.Linear(output_hidden_size, output_hidden_size)]
    return nn.Sequential(*layers)


def _honeybee_init(module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        module.weight.data.normal_(mean=0.0, std=0.02)
        if module.bias is not None:
            module.bias.data.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.bias.data.zero_()
        module.weight.data.fill_(1.0)


class CAbstractorProjector(FrameProjector):
    """Honeybee `CAbstractor`: pos_emb -> RegStage -> AdaptiveAvgPool2d -> RegStage -> SiLU MLP readout.

    Keys as in Honeybee: `pos_emb`, `net.0.b1.conv1.conv.weight`, ..., `net.2.*`, `readout.0.weight`.
    The position embedding covers the N patches (the CLS token is dropped by the vision tower).
    """

    kind = "c-abstractor"

    def __init__(
        self,
        geometry: ProjectorGeometry,
        tokens_per_frame: int | None = None,
        depth: int = 3,
        mlp_depth: int = 2,
        hidden_size: int | None = None,
    ) -> None:
        super().__init__()
        # Default: a quarter of the patches, 144 on CLIP-L/336's 24x24 grid (Honeybee's M144).
        self.tokens_per_frame = tokens_per_frame or (geometry.grid_size // 2) ** 2
        side = square_side(self.tokens_per_frame, self.kind)
        hidden_size = hidden_size or geometry.vision_hidden_size
        self.pos_emb = nn.Parameter(torch.zeros(1, geometry.num_patches, geometry.vision_hidden_size))
        nn.init.trunc_normal_(self.pos_emb, mean=0.0, std=0.02)
        if depth:
            self.net = nn.Sequential(
                RegStage(depth, geometry.vision_hidden_size, hidden_size),
                nn.AdaptiveAvgPool2d((side, side)),
                RegStage(depth, hidden_size, hidden_size),
            )
        else:
            # Honeybee: without RegNet blocks the abstractor is pooling alone, read out from Dv.
            self.net = nn.AdaptiveAvgPool2d((side, side))
            hidden_size = geometry.vision_hidden_size
        self.readout = build_mlp(mlp_depth, hidden_size, geometry.llm_hidden_size)
        # Honeybee's post_init re-initialises every Conv2d/Linear/LayerNorm of the abstractor
        # (HoneybeePreTrainedModel._init_weights); pos_emb, a bare Parameter, keeps trunc_normal.
        self.net.apply(_honeybee_init)
        self.readout.apply(_honeybee_init)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # As Honeybee: checkpoints from before the CLS token was dropped carry N+1 positions.
        key = prefix + "pos_emb"
        pos_emb = state_dict.get(key)
        if pos_emb is not None and pos_emb.shape[1] == self.pos_emb.shape[1] + 1:
            state_dict[key] = pos_emb[:, 1:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        x = features + self.pos_emb  # not in place: the caller's features stay untouched
        frames, n, d = x.shape
        side = int(n**0.5)
        x = x.transpose(1, 2).reshape(frames, d, side, side)  # "b (h w) d -> b d h w"
        x = self.net(x)
        x = x.flatten(2).transpose(1, 2)  # "b d h w -> b (h w) d"
        return self.readout(x)
