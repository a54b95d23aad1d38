"""Frames to verify an export on: real videos when there are any, synthetic scenes otherwise.

Real frames matter: the statistics of natural images (and of the user's own videos) are what
fp16 overflow or int8 rounding would break, and random noise would not show it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ConfigError, VlmcapError
from vlmcap.labelled_manifest import Sample, load_manifest
from vlmcap.video.decoders import DecodeOptions, decode_video
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import preprocess_frames

log = logging.getLogger(__name__)


def manifest_videos(config: VlmcapConfig) -> list[str]:
    """Videos of the run's validation and training manifests, in that order (missing files skipped)."""
    videos: list[str] = []
    for manifest in [*config.train.val, *([config.train.data] if config.train.data else [])]:
        try:
            videos += [s.video for s in load_manifest(manifest)[:8]]
        except VlmcapError as e:  # the data may live elsewhere now; synthetic frames still verify
            log.info("not taking sample frames from %s: %s", manifest, e)
    return videos


def sample_pixels(
    config: VlmcapConfig, spec: ImageSpec, candidates: Iterable[str | Path], count: int = 2
) -> tuple[torch.Tensor, list[str]]:
    """(count, T, 3, H, W) float32 pixel values and where each video came from."""
    num_frames = config.video.num_frames
    options = DecodeOptions(num_frames=num_frames)
    videos, sources = [], []
    for path in candidates:
        if len(videos) == count:
            break
        try:
            decoded = decode_video(str(path), options)
        except VlmcapError as e:
            log.warning("sample video %s skipped: %s", path, e)
            continue
        videos.append(preprocess_frames(decoded.frames, spec))
        sources.append(str(path))
    rng = random.Random(config.seed)
    while len(videos) < count:
        from vlmcap.presets.synthetic import Scene, render_video

        frames = render_video(Scene.random(rng), num_frames, max(spec.output_hw), rng)
        videos.append(preprocess_frames(np.ascontiguousarray(frames), spec))
        sources.append("synthetic")
    return torch.stack(videos), sources


def calibration_samples(config: VlmcapConfig, spec: ImageSpec, count: int) -> tuple[torch.Tensor, list[Sample]]:
    """Up to `count` decodable videos of the run's training manifest, with their captions, for LLM
    quantization; ConfigError (before any export work) when there is none."""
    manifest = config.train.data
    if not manifest:
        raise ConfigError("export.llm_quant needs calibration data: the run has no training manifest (train.data)")
    try:
        samples = load_manifest(manifest)
    except VlmcapError as e:
        raise ConfigError(f"export.llm_quant needs calibration data: {e}") from None
    options = DecodeOptions(num_frames=config.video.num_frames)
    videos, kept = [], []
    for sample in samples:
        if len(kept) == count:
            break
        try:
            decoded = decode_video(sample.video, options, sample.window)  # a labelled segment: its frames
        except VlmcapError as e:
            log.warning("calibration video %s skipped: %s", sample.video, e)
            continue
        videos.append(preprocess_frames(decoded.frames, spec))
        kept.append(sample)
    if not kept:
        raise ConfigError(f"export.llm_quant needs calibration data: no video of {manifest} could be decoded")
    return torch.stack(videos), kept
