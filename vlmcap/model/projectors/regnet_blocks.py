"""The few timm building blocks Honeybee's C-Abstractor uses, written out with timm's key names.

timm itself would pull in torchvision, which on the CPU stack here replaces torch with a CUDA
build (docs/MODEL.md, "Dependencies the code avoids"). These mirror, with the arguments the C-Abstractor passes:
`timm.models.regnet.RegStage` / `Bottleneck` (bottle_ratio 1, group_size 1 -> depthwise 3x3,
se_ratio 0.25), `timm.layers.ConvNormAct`, `timm.layers.LayerNormAct2d` and
`timm.layers.SEModule`, so a Honeybee checkpoint loads key for key (`b1.conv1.conv.weight`,
`b1.conv1.bn.weight`, `b1.se.fc1.bias`, `b1.downsample.conv.weight`, ...).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class LayerNormAct2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor, then an activation (timm LayerNormAct2d, eps 1e-5)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, apply_act: bool = True) -> None:
        super().__init__(num_channels, eps=eps)
        self.drop = nn.Identity()
        self.act = nn.SiLU() if apply_act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return self.act(self.drop(x.permute(0, 3, 1, 2)))


class ConvNormAct(nn.Module):
    """Bias-free conv ("same" padding, stride 1) followed by LayerNormAct2d (timm ConvNormAct: `conv`, `bn`)."""

    def __init__(
        self, in_chs: int, out_chs: int, kernel_size: int = 1, groups: int = 1, apply_act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size, padding=kernel_size // 2, groups=groups, bias=False)
        self.bn = LayerNormAct2d(out_chs, apply_act=apply_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class SEModule(nn.Module):
    """Squeeze-and-excitation with 1x1 convs and a sigmoid gate (timm SEModule, no norm)."""

    def __init__(self, channels: int, rd_channels: int) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=True)
        self.bn = nn.Identity()
        self.act = nn.SiLU()
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(self.act(self.bn(self.fc1(x.mean((2, 3), keepdim=True)))))
        return x * self.gate(scale)


class Bottleneck(nn.Module):
    """RegNet bottleneck: 1x1 -> depthwise 3x3 -> SE -> 1x1 (no act), plus shortcut, then act."""

    def __init__(self, in_chs: int, out_chs: int, se_ratio: float = 0.25) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, kernel_size=1)
        self.conv2 = ConvNormAct(out_chs, out_chs, kernel_size=3, groups=out_chs)
        # timm sizes the SE bottleneck from the block's *input* width.
        self.se = SEModule(out_chs, rd_channels=round(in_chs * se_ratio))
        self.conv3 = ConvNormAct(out_chs, out_chs, kernel_size=1, apply_act=False)
        self.act3 = nn.SiLU()
        self.downsample = (
            nn.Identity() if in_chs == out_chs else ConvNormAct(in_chs, out_chs, kernel_size=1, apply_act=False)
        )
        self.drop_path = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        return self.act3(self.drop_path(x) + self.downsample(shortcut))


class RegStage(nn.Module):
    """`depth` bottlenecks named b1..bN; the first one changes the width."""

    def __init__(self, depth: int, in_chs: int, out_chs: int) -> None:
        super().__init__()
        for i in range(depth):
            self.add_module(f"b{i + 1}", Bottleneck(in_chs if i == 0 else out_chs, out_chs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.children():
            x = block(x)
        return x
