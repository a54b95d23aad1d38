"""What a vision model expects of its input images, read from its preprocessor_config.json.

Kept apart from the preprocessing itself (vlmcap.video.preprocess, which needs torch) so the
bundle format and `vlmcap batch`'s checks before the lock import no torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

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
