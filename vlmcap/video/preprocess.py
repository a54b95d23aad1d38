"""The vision model's own image preprocessing, vectorised over the T frames of a video.

Parameters are read from the model's preprocessor_config.json (and later the bundle), never
re-typed. For CLIP: resize the shortest side with bicubic filtering, center crop, rescale to
[0, 1], normalise with the model's mean/std. The resize reproduces PIL's (what transformers'
CLIPImageProcessorPil runs): antialiased bicubic with a=-0.5, horizontal pass first, rounded to
uint8 between the passes.

Split in two so the expensive part runs in decode workers on uint8 data: `resize_and_crop`
(uint8 in, uint8 out) and `normalize` (uint8 -> float32, batched in the engine; `normalize_into`
writes into the engines' reused buffers).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from vlmcap.video.image_spec import ImageSpec


def resize_output_hw(height: int, width: int, spec: ImageSpec) -> tuple[int, int]:
    """Target size of the resize step, as transformers computes it (long side truncated, not rounded)."""
    if spec.resize_hw:
        return spec.resize_hw
    if spec.shortest_edge is None:
        return height, width
    short, long = min(height, width), max(height, width)
    new_long = int(spec.shortest_edge * long / short)
    return (new_long, spec.shortest_edge) if width <= height else (spec.shortest_edge, new_long)


def _resize_pass(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    out = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
    return out.round_().clamp_(0, 255)  # PIL keeps uint8 between passes


def resize_and_crop(frames: np.ndarray, spec: ImageSpec) -> np.ndarray:
    """(T, H, W, 3) uint8 -> (T, h, w, 3) uint8: resize and center crop of all frames at once."""
    _, height, width, _ = frames.shape
    new_h, new_w = resize_output_hw(height, width, spec)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = _resize_pass(x, (height, new_w), spec.resample)  # horizontal first, as PIL
    x = _resize_pass(x, (new_h, new_w), spec.resample)
    if spec.crop_hw:
        ch, cw = spec.crop_hw
        if ch > new_h or cw > new_w:  # transformers pads with zeros when the crop is larger
            x = F.pad(
                x,
                (
                    max(cw - new_w, 0) // 2,
                    (max(cw - new_w, 0) + 1) // 2,
                    max(ch - new_h, 0) // 2,
                    (max(ch - new_h, 0) + 1) // 2,
                ),
            )
            new_h, new_w = x.shape[-2:]
        top, left = (new_h - ch) // 2, (new_w - cw) // 2
        x = x[..., top : top + ch, left : left + cw]
    return x.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def normalization(spec: ImageSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The (3,) float32 mean and std that `normalize` applies to 0-255 values.

    Computed on the CPU and moved where needed, so the engines' staged path (on a GPU too)
    subtracts and divides by the very same float32 numbers as `normalize`.
    """
    return torch.tensor(spec.mean) / spec.rescale_factor, torch.tensor(spec.std) / spec.rescale_factor


def normalize(frames: np.ndarray | torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """(..., h, w, 3) uint8 -> (..., 3, h, w) float32, rescaled and normalised."""
    x = torch.as_tensor(frames).float()
    mean, std = normalization(spec)
    return ((x - mean) / std).movedim(-1, -3).contiguous()


def normalize_into(frames: torch.Tensor, out: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """`normalize` written into `out` ((..., 3, h, w) float, on frames' device), with no temporaries.

    `mean` and `std` come from `normalization` (moved to out's device once by the caller). The same
    subtraction and division in float32 as `normalize`, so a float32 `out` holds identical values.
    """
    out.copy_(frames.movedim(-1, -3))
    return out.sub_(mean[:, None, None]).div_(std[:, None, None])


def preprocess_frames(frames: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float32, what the vision model takes."""
    return normalize(resize_and_crop(frames, spec), spec)
