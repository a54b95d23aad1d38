"""Training on labelled segments: manifest lines with start_s/end_s, frames from inside the window,
feature-cache entries per window, and the synthetic multi-scene set that provides them."""

from __future__ import annotations

import itertools
import json
import logging
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vlmcap.cli import cli
from vlmcap.errors import ConfigError
from vlmcap.labelled_manifest import load_manifest
from vlmcap.presets.synthetic import parse_attributes
from vlmcap.training.data import DataPosition, VideoBatches
from vlmcap.training.features import FeatureCache
from vlmcap.training.synth import MULTI_SCENE_S, SynthSpec, write_multiscene_set, write_synthetic_dataset
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.pool import DecodePool
from vlmcap.video.probe import probe_video
from vlmcap.video.segments import Segment

SPEC = ImageSpec.from_dict({"size": {"height": 32, "width": 32}})


@pytest.fixture(scope="module")
def multiscene(tmp_path_factory) -> Path:
    """multiscene.jsonl of two synthetic videos of 3-5 scenes (5 s each)."""
    return write_multiscene_set(tmp_path_factory.mktemp("multiscene"), SynthSpec(seed=11, multi_scene=2))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_segment_fields_are_checked_with_file_and_line(multiscene, tmp_path, caplog) -> None:
    video = os.path.relpath(multiscene.parent / _lines(multiscene)[0]["video"], tmp_path)
    duration_s = probe_video(str(multiscene.parent / _lines(multiscene)[0]["video"])).duration_s
    rows = [
        {"start_s": 0, "end_s": 5},  # 1: fine, and 2 touches it without overlapping
        {"start_s": 5.0, "end_s": 10.0},
        {"start_s": 1},  # 3
        {"start_s": "0", "end_s": 2},  # 4
        {"start_s": 3, "end_s": 3},  # 5
        {"start_s": 4, "end_s": 6},  # 6: overlaps lines 1 and 2
        {"start_s": 15, "end_s": duration_s + 1},  # 7: past the end
        {"start_s": True, "end_s": 2},  # 8: a bool is no number
        {"start_s": -1, "end_s": 2},  # 9
    ]
    path = tmp_path / "segments.jsonl"
    path.write_text("".join(json.dumps({"video": video, "caption": "장면", **r}) + "\n" for r in rows))
    with caplog.at_level(logging.ERROR, logger="vlmcap.labelled_manifest"), pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert str(err.value) == (
        f"{path}:3: field 'start_s' without 'end_s': give both, or neither for the whole video (and 7 more problems)"
    )
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        f"{path}:3: field 'start_s' without 'end_s': give both, or neither for the whole video",
        f"{path}:4: field 'start_s' must be a number of seconds, got \"0\"",
        f"{path}:5: segment start_s=3 end_s=3: needs 0 <= start_s < end_s",
        f"{path}:6: segment 4-6 s overlaps 0-5 s of the same video at line 1; segments of one video must not overlap",
        f"{path}:6: segment 4-6 s overlaps 5-10 s of the same video at line 2; segments of one video must not overlap",
        f"{path}:7: segment 15-{duration_s + 1:g} s ends after the video, which is {duration_s:.3f} s long",
        f"{path}:8: field 'start_s' must be a number of seconds, got true",
        f"{path}:9: segment start_s=-1 end_s=2: needs 0 <= start_s < end_s",
    ]
    # Valid lines load; an end written a few ms past the last frame is within the one-frame tolerance.
    good = [rows[0], rows[1], {"start_s": 10, "end_s": duration_s + 0.04}, {}]
    path.write_text("".join(json.dumps({"video": video, "caption": "장면", **r}) + "\n" for r in good))
    samples = load_manifest(path)
    assert [s.window for s in samples] == [Segment(0, 5), Segment(5, 10), Segment(10, duration_s + 0.04), None]


def test_synth_multi_scene_manifest_matches_the_videos(tmp_path) -> None:
    plain = write_synthetic_dataset(tmp_path / "plain", SynthSpec(num_videos=10, seed=4))
    result = CliRunner().invoke(
        cli, ["synth", str(tmp_path / "multi"), "--num-videos", "10", "--seed", "4", "--multi-scene", "2"]
    )
    assert result.exit_code == 0, result.output
    assert "multiscene              2 videos" in result.output
    multi = tmp_path / "multi"
    # The other splits are byte-identical with or without the multi-scene videos.
    for split in ("train", "val", "val_heldout_pairs"):
        assert (multi / f"{split}.jsonl").read_bytes() == plain[split].read_bytes()
    assert (multi / "videos/00007.mp4").read_bytes() == (tmp_path / "plain/videos/00007.mp4").read_bytes()
    assert not (tmp_path / "plain/multiscene.jsonl").exists()

    rows = _lines(multi / "multiscene.jsonl")
    by_video: dict[str, list[dict]] = {}
    for row in rows:
        by_video.setdefault(row["video"], []).append(row)
        assert parse_attributes(row["caption"]) == {k: row["attributes"][k] for k in ("colour", "shape", "motion")}
    assert len(by_video) == 2
    for video, scenes in by_video.items():
        assert 3 <= len(scenes) <= 5
        starts = [s["start_s"] for s in scenes]
        assert starts == [i * MULTI_SCENE_S for i in range(len(scenes))]
        assert all(a["end_s"] == b["start_s"] for a, b in itertools.pairwise(scenes))
        assert scenes[-1]["end_s"] == pytest.approx(probe_video(str(multi / video)).duration_s, abs=1e-3)
    assert len(load_manifest(multi / "multiscene.jsonl")) == len(rows)  # the loader's own checks agree


def test_windows_decode_frames_inside_the_window(multiscene) -> None:
    path = str(multiscene.parent / _lines(multiscene)[0]["video"])
    items = [path, (path, Segment(5.0, 10.0)), (path, Segment(12.5, 15.0))]
    with DecodePool(DecodeOptions(num_frames=4), None, num_workers=1) as pool:
        results = {r.index: r for r in pool.imap_unordered(items)}
    assert all(r.ok for r in results.values())
    whole, second, late = (results[i].video.timestamps_s for i in range(3))
    assert min(whole) < 5.0 and max(whole) > 10.0  # the whole file
    assert all(5.0 <= t < 10.0 for t in second) and len(set(second)) == 4
    assert all(12.5 <= t < 15.0 for t in late)


def test_feature_cache_keys_each_window_and_batches_read_it(multiscene, tmp_path) -> None:
    samples = [s for s in load_manifest(multiscene) if s.video == load_manifest(multiscene)[0].video]
    decode = DecodeOptions(num_frames=4)
    cache = FeatureCache(tmp_path / "cache", "encoder")
    cached = VideoBatches(samples, 2, seed=0, image_spec=SPEC, decode=decode, num_workers=1, cache=cache)
    # An "encoder" that keeps each frame's mean: scenes differ in colour, so their features differ.
    cached.fill_cache(lambda pixels: pixels.mean(dim=(2, 3, 4)), DataPosition())
    features = [cache.get(s.video, s.window) for s in samples]
    assert all(f is not None and f.shape == (4,) for f in features)
    assert not cache.contains(samples[0].video)  # no whole-file entry
    assert len({tuple(f.tolist()) for f in features}) == len(samples)  # one entry per window

    decoded = VideoBatches(samples, 2, seed=0, image_spec=SPEC, decode=decode, num_workers=1)
    from_cache, from_frames = cached.batches(DataPosition()), decoded.batches(DataPosition())
    for _ in range(len(samples) // 2):
        (a, _), (b, _) = next(from_cache), next(from_frames)
        assert [s.source for s in a.samples] == [s.source for s in b.samples]  # the same order either way
        means = b.pixel_values.mean(dim=(2, 3, 4))
        assert torch.allclose(a.features, means, atol=1e-2)  # decoding in the batch path reads the same window


def test_trainer_trains_on_segments(multiscene, tmp_path) -> None:
    from vlmcap.config.loading import load_config
    from vlmcap.training.trainer import run_training

    overrides = [f"train.data={multiscene}", f"train.val=[{multiscene}]", "train.batch_size=2", "train.max_steps=2"]
    config = load_config(preset="tiny", overrides=[*overrides, "train.eval_every=2", "train.feature_cache=true"])
    result = run_training(config, tmp_path / "run")
    assert result.step == 2 and result.final_dir is not None
    (records,) = (tmp_path / "run").glob("**/*multiscene*.jsonl")  # validation captions, one per segment
    rows = _lines(records)
    assert [(r["start_s"], r["end_s"]) for r in rows] == [(r["start_s"], r["end_s"]) for r in _lines(multiscene)]
