"""Qwen-VL's visual resampler: learnable queries cross-attend to the frame's patches.

Mirrors Qwen-VL `visual.py`: `attn_pool` is its `Resampler` (queries, frozen 2-D sin-cos
`pos_embed`, `kv_proj`, `ln_q`, `ln_kv`, `attn`), followed by the vision transformer's
`ln_post` and `proj`, with the reference's LayerNorm eps 1e-6, heads = Dl // 128 and init.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vlmcap.errors import ConfigError
from vlmcap.model.projectors.base import FrameProjector, ProjectorGeometry, square_side

HEAD_DIM = 128  # Qwen-VL: num_heads = output_dim // 128
LN_EPS = 1e-6


def _sincos_1d(embed_dim: int, positions: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float32) / (embed_dim / 2.0)
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", positions.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d_pos_embed(embed_dim: int, grid_size: int) -> np.ndarray:
    """MAE/Qwen-VL 2-D sin-cos table (grid_size**2, embed_dim): first half from w, second half from h."""
    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape(2, 1, grid_size, grid_size)
    return np.concatenate([_sincos_1d(embed_dim // 2, grid[0]), _sincos_1d(embed_dim // 2, grid[1])], axis=1)


def resize_abs_pos(abs_pos: torch.Tensor, target_tokens: int) -> torch.Tensor:
    """Qwen-VL `get_abs_pos`: bicubic resize of a square position table to `target_tokens` positions."""
    src = int(math.sqrt(abs_pos.size(0)))
    dst = int(math.sqrt(target_tokens))
    if src == dst:
        return abs_pos
    grid = abs_pos.float().reshape(1, src, src, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(dst, dst), mode="bicubic", align_corners=False)
    return grid.permute(0, 2, 3, 1).flatten(0, 2).to(dtype=abs_pos.dtype)


class Resampler(nn.Module):
    """Qwen-VL `Resampler` (the `attn_pool` of its vision transformer)."""

    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, kv_dim: int) -> None:
        super().__init__()
        self.num_queries = grid_size**2
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.pos_embed = nn.Parameter(
            torch.from_numpy(sincos_2d_pos_embed(embed_dim, grid_size)).float(), requires_grad=False
        )
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=LN_EPS)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos_embed = resize_abs_pos(self.pos_embed, x.size(1))
        x = self.ln_kv(self.kv_proj(x)).permute(1, 0, 2)  # (N, frames, D): MultiheadAttention is seq-first
        frames = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(
            q.unsqueeze(1).repeat(1, frames, 1) + self.pos_embed.unsqueeze(1),
            x + pos_embed.unsqueeze(1),
            x,
        )[0]
        return out.permute(1, 0, 2)


class ResamplerProjector(FrameProjector):
    """`attn_pool` + `ln_post` + `x @ proj`, as Qwen-VL's vision transformer ends."""

    kind = "resampler"

    def __init__(self, geometry: ProjectorGeometry, tokens_per_frame: int | None = None) -> None:
        super().__init__()
        # Default: Qwen-VL's 256 queries; on grids of fewer than 256 patches, a quarter of them.
        self.tokens_per_frame = tokens_per_frame or (
            256 if geometry.num_patches >= 256 else (geometry.grid_size // 2) ** 2
        )
        side = square_side(self.tokens_per_frame, self.kind)
        dim = geometry.llm_hidden_size
        if dim % HEAD_DIM and dim >= HEAD_DIM:
            raise ConfigError(f"resampler needs an LLM hidden size divisible by {HEAD_DIM}, got {dim}")
        self.attn_pool = Resampler(side, dim, max(1, dim // HEAD_DIM), geometry.vision_hidden_size)
        self.ln_post = nn.LayerNorm(dim, eps=LN_EPS)
        self.proj = nn.Parameter(dim**-0.5 * torch.randn(dim, dim))

    def project_frames(self, features: torch.Tensor) -> torch.Tensor:
        return self.ln_post(self.attn_pool(features)) @ self.proj
