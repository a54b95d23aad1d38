"""Preprocessing equals the vision model's own image processor (transformers' PIL CLIP processor)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmcap.presets import clip_preprocessor_config, resolve_model_source
from vlmcap.video.decoders import decode_video
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import normalize, preprocess_frames, resize_and_crop, resize_output_hw


def reference(frames: np.ndarray, config: dict) -> torch.Tensor:
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(**{k: v for k, v in config.items() if k != "image_processor_type"})
    return torch.from_numpy(np.stack(processor(list(frames), return_tensors="np")["pixel_values"]))


def assert_matches_reference(ours: torch.Tensor, theirs: torch.Tensor, spec: ImageSpec) -> None:
    """Equal up to PIL's fixed-point rounding: at most 2 uint8 levels, on under 1% of the values."""
    assert ours.shape == theirs.shape
    diff = (ours - theirs).abs()
    one_level = 1 / 255 / min(spec.std)
    assert diff.max().item() <= 2 * one_level + 1e-5
    assert (diff > 1e-4).float().mean().item() < 0.01


@pytest.mark.parametrize("size", [336, 224])
def test_clip_preprocessing_matches_transformers_on_real_frames(real_clips, size: int) -> None:
    config = clip_preprocessor_config(size)
    spec = ImageSpec.from_dict(config)
    for name in ("bigbuckbunny", "bikes", "carphone_pristine"):
        frames = decode_video(str(real_clips[name])).frames
        ours = preprocess_frames(frames, spec)
        assert ours.shape == (8, 3, size, size) and ours.dtype == torch.float32
        assert_matches_reference(ours, reference(frames, config), spec)


@pytest.mark.parametrize("name", ["odd_97x61", "portrait", "rotated_90"])
def test_odd_and_portrait_shapes_match_too(clips, name: str) -> None:
    config = clip_preprocessor_config(112)
    spec = ImageSpec.from_dict(config)
    frames = decode_video(str(clips[name])).frames
    assert_matches_reference(preprocess_frames(frames, spec), reference(frames, config), spec)


def test_resize_size_follows_transformers_truncation() -> None:
    spec = ImageSpec.from_dict(clip_preprocessor_config(336))
    assert resize_output_hw(720, 1280, spec) == (336, 597)  # int(336 * 1280 / 720) = 597
    assert resize_output_hw(1280, 720, spec) == (597, 336)
    assert resize_output_hw(61, 97, spec) == (336, 534)


def test_split_pipeline_equals_one_call_and_batches(real_clips) -> None:
    spec = ImageSpec.from_dict(clip_preprocessor_config(112))
    frames = decode_video(str(real_clips["bikes"])).frames
    cropped = resize_and_crop(frames, spec)
    assert cropped.dtype == np.uint8 and cropped.shape == (8, 112, 112, 3)
    batch = normalize(np.stack([cropped, cropped]), spec)  # (B, T, 3, h, w) in one call
    assert batch.shape == (2, 8, 3, 112, 112)
    torch.testing.assert_close(batch[1], preprocess_frames(frames, spec))


def test_spec_is_read_from_the_model_directory() -> None:
    spec = ImageSpec.from_pretrained(resolve_model_source("preset:tiny-clip").path)
    assert spec.crop_hw == (112, 112) and spec.shortest_edge == 112 and spec.resample == "bicubic"
    assert spec.mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))


def test_siglip_style_fixed_size_without_crop() -> None:
    spec = ImageSpec.from_dict(
        {
            "do_resize": True,
            "size": {"height": 64, "width": 64},
            "resample": 2,
            "image_mean": [0.5] * 3,
            "image_std": [0.5] * 3,
            "do_normalize": True,
            "do_rescale": True,
            "rescale_factor": 1 / 255,
        }
    )
    frames = np.full((2, 90, 160, 3), 255, np.uint8)
    out = preprocess_frames(frames, spec)
    assert out.shape == (2, 3, 64, 64)
    torch.testing.assert_close(out, torch.ones_like(out))  # (1 - 0.5) / 0.5
