"""The vision model's own image preprocessing, vectorised over the T frames of a video.

Parameters are read from the model's preprocessor_config.json (and later the bundle), never
re-typed. For CLIP: resize the shortest side with bicubic filtering, center crop, rescale to
[0, 1], normalise with the model's mean/std. The resize reproduces PIL's (what transformers'
CLIPImageProcessorPil runs): antialiased bicubic with a=-0.5, horizontal pass first, rounded to
uint8 between the passes.

Split in two so the expensive part runs in decode workers on uint8 data: `resize_and_crop`
(uint8 in, uint8 out) and `normalize` (uint8 -> float32, batched in the engine).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from vlmcap.errors import ConfigError

_RESAMPLE = {2: "bilinear", 3: "bicubic"}  # PIL resample ids used by HF image processors


@dataclass(frozen=True)
class ImageSpec:
    """What a vision model expects of its input images (from its preprocessor_config.json)."""

    shortest_edge: int | None  # resize the short side to this (CLIP) ...
    resize_hw: tuple[int, int] | None  # ... or to exactly (height, width) (SigLIP)
    crop_hw: tuple[int, int] | None
    resample: str
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def output_hw(self) -> tuple[int, int]:
        if self.crop_hw:
            return self.crop_hw
        if self.resize_hw:
            return self.resize_hw
        raise ConfigError("image processor config gives neither a crop size nor a fixed size")

    @classmethod
    def from_dict(cls, cfg: dict, source: str = "preprocessor_config.json") -> ImageSpec:
        size = cfg.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size}
        crop = cfg.get("crop_size")
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        resample = _RESAMPLE.get(int(cfg.get("resample", 3)))
        if resample is None:
            raise ConfigError(f"{source}: resample={cfg.get('resample')} is not supported (bilinear or bicubic)")
        do_resize, do_crop = cfg.get("do_resize", True), cfg.get("do_center_crop", False)
        return cls(
            shortest_edge=size.get("shortest_edge") if do_resize else None,
            resize_hw=(size["height"], size["width"]) if do_resize and "height" in size else None,
            crop_hw=(crop["height"], crop["width"]) if do_crop and crop else None,
            resample=resample,
            rescale_factor=float(cfg.get("rescale_factor", 1 / 255)) if cfg.get("do_rescale", True) else 1.0,
            mean=tuple(cfg.get("image_mean", (0.0, 0.0, 0.0))) if cfg.get("do_normalize", True) else (0.0,) * 3,
            std=tuple(cfg.get("image_std", (1.0, 1.0, 1.0))) if cfg.get("do_normalize", True) else (1.0,) * 3,
        )

    @classmethod
    def from_pretrained(cls, model: str | Path, revision: str | None = None) -> ImageSpec:
        """From a local model directory, or a hub id (its preprocessor_config.json is fetched)."""
        path = Path(model) / "preprocessor_config.json"
        if not Path(model).is_dir():
            from transformers.utils import cached_file

            try:
                path = Path(cached_file(str(model), "preprocessor_config.json", revision=revision))
            except OSError as e:
                raise ConfigError(f"{model}: cannot get its preprocessor_config.json ({e})") from None
        try:
            return cls.from_dict(json.loads(path.read_text()), str(path))
        except FileNotFoundError:
            raise ConfigError(f"{path}: missing; the vision model needs its image processor config") from None

    @classmethod
    def from_fields(cls, fields: dict) -> ImageSpec:
        """The inverse of `to_dict` (how bundle.json stores it); extra keys are ignored."""
        hw = lambda v: tuple(v) if v else None  # noqa: E731
        return cls(
            shortest_edge=fields["shortest_edge"],
            resize_hw=hw(fields["resize_hw"]),
            crop_hw=hw(fields["crop_hw"]),
            resample=fields["resample"],
            rescale_factor=float(fields["rescale_factor"]),
            mean=tuple(fields["mean"]),
            std=tuple(fields["std"]),
        )

    def to_dict(self) -> dict:
        return {
            "shortest_edge": self.shortest_edge,
            "resize_hw": self.resize_hw,
            "crop_hw": self.crop_hw,
            "resample": self.resample,
            "rescale_factor": self.rescale_factor,
            "mean": list(self.mean),
            "std": list(self.std),
        }


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


def normalize(frames: np.ndarray | torch.Tensor, spec: ImageSpec) -> torch.Tensor:
    """(..., h, w, 3) uint8 -> (..., 3, h, w) float32, rescaled and normalised."""
    x = torch.as_tensor(frames).float()
    mean = torch.tensor(spec.mean) / spec.rescale_factor
    std = torch.tensor(spec.std) / spec.rescale_factor
    return ((x - mean) / std).movedim(-1, -3).contiguous()


def preprocess_frames(frames: np.ndarray, spec: ImageSpec) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, h, w) float32, what the vision model takes."""
    return normalize(resize_and_crop(frames, spec), spec)
