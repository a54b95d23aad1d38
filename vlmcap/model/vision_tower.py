"""The frozen vision encoder: frames in, per-patch features of one hidden layer out."""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from vlmcap.config.schema import VisionConfig
from vlmcap.errors import ModelError


def vision_config_of(config: PretrainedConfig) -> PretrainedConfig:
    """The vision part of a config: CLIP/SigLIP checkpoints hold text + vision; take the vision half."""
    return getattr(config, "vision_config", None) or config


class VisionTower(nn.Module):
    """Wraps any transformers vision model that returns hidden states (CLIP, SigLIP, ...).

    Always frozen: parameters never require grad, the module stays in eval mode even when the
    surrounding model is put in train mode, and features are computed under no_grad.
    """

    def __init__(self, model: PreTrainedModel, feature_layer: int = -2) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.feature_layer = feature_layer
        cfg = model.config
        self.image_size = int(cfg.image_size)
        self.patch_size = int(cfg.patch_size)
        self.hidden_size = int(cfg.hidden_size)
        if self.image_size % self.patch_size:
            raise ModelError(f"vision model: image_size {self.image_size} is not a multiple of patch {self.patch_size}")
        self.grid_size = self.image_size // self.patch_size
        n_layers = int(cfg.num_hidden_layers)
        if not -(n_layers + 1) <= feature_layer <= n_layers:
            raise ModelError(
                f"model.vision.feature_layer={feature_layer} is out of range for a model with {n_layers} layers"
            )

    @property
    def num_patches(self) -> int:
        return self.grid_size**2

    def train(self, mode: bool = True) -> VisionTower:
        # Frozen means frozen: dropout and friends stay off whatever the caller does.
        return super().train(False)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, T, 3, H, W) -> (B, T, N, Dv); all B*T frames go through the encoder as one batch."""
        b, t = pixel_values.shape[:2]
        frames = pixel_values.flatten(0, 1).to(dtype=self.model.dtype)
        out = self.model(pixel_values=frames, output_hidden_states=True)
        features = out.hidden_states[self.feature_layer]
        if features.shape[1] == self.num_patches + 1:  # CLIP prepends a CLS token; SigLIP has none
            features = features[:, 1:]
        elif features.shape[1] != self.num_patches:
            raise ModelError(
                f"vision model returned {features.shape[1]} tokens per frame, expected {self.num_patches} patches"
            )
        return features.reshape(b, t, self.num_patches, features.shape[-1])


def load_vision_tower(
    source: str, config: VisionConfig, dtype: torch.dtype = torch.float32, random_init: bool = False
) -> VisionTower:
    """Load (or, for random presets, build) the encoder from a hub id or local directory."""
    try:
        full_config = AutoConfig.from_pretrained(source, revision=config.revision, trust_remote_code=False)
    except OSError as e:
        raise ModelError(f"model.vision.model={config.model!r}: cannot load its config ({e})") from None
    vcfg = vision_config_of(full_config)
    try:
        model_cls = AutoModel._model_mapping[type(vcfg)]
    except KeyError:
        raise ModelError(
            f"model.vision.model={config.model!r}: {type(vcfg).__name__} is not a vision model transformers knows"
        ) from None
    if random_init:
        model = model_cls._from_config(vcfg, dtype=dtype)
    else:
        # use_safetensors: never unpickle weights from a checkpoint.
        model = model_cls.from_pretrained(
            source, dtype=dtype, revision=config.revision, use_safetensors=True, trust_remote_code=False
        )
    return VisionTower(model, feature_layer=config.feature_layer)
