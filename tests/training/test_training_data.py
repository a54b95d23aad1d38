"""Manifests, the synthetic data set, metrics, feature cache and checkpoint files."""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np
import pytest
import torch

from vlmcap.errors import ConfigError
from vlmcap.labelled_manifest import load_manifest
from vlmcap.metrics.captions import caption_metrics, caption_scores, cider_d
from vlmcap.presets.synthetic import parse_attributes
from vlmcap.storage.run_dir import latest_checkpoint
from vlmcap.training.checkpoint import (
    optimizer_from_files,
    optimizer_to_files,
    rng_from_files,
    rng_to_files,
    write_checkpoint,
)
from vlmcap.training.features import FeatureCache
from vlmcap.training.synth import HELDOUT_PAIRS, SynthSpec, write_synthetic_dataset


def test_manifest_problems_name_file_and_line(tmp_path, clips) -> None:
    good = os.path.relpath(clips["h264_mp4"], tmp_path)
    path = tmp_path / "train.jsonl"
    path.write_text(
        json.dumps({"video": good, "caption": "빨간색 원"})
        + "\n"
        + "{not json\n"
        + json.dumps({"video": good})
        + "\n"
        + json.dumps({"video": "missing.mp4", "caption": "x"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as err:
        load_manifest(path)
    assert (
        str(err.value)
        == f"{path}:2: not valid JSON (Expecting property name enclosed in double quotes) (and 2 more problems)"
    )
    path.write_text(json.dumps({"video": "missing.mp4", "caption": "x"}) + "\n")
    with pytest.raises(ConfigError, match=r"train\.jsonl:1: video 'missing.mp4' not found"):
        load_manifest(path)
    path.write_text(json.dumps({"video": good, "caption": " 빨간색 원 ", "prompt": "설명해 주세요."}) + "\n\n")
    (sample,) = load_manifest(path)
    assert sample.video == str(tmp_path / good) and sample.caption == "빨간색 원" and sample.prompt == "설명해 주세요."
    with pytest.raises(ConfigError, match="manifest not found"):
        load_manifest(tmp_path / "nope.jsonl")


def test_synthetic_dataset_splits_and_captions(small_synth) -> None:
    train = [json.loads(line) for line in small_synth["train"].read_text().splitlines()]
    heldout = [json.loads(line) for line in small_synth["val_heldout_pairs"].read_text().splitlines()]
    assert len(train) == 48 and len(heldout) == 6 and len(load_manifest(small_synth["val"])) == 6
    pairs = {(r["attributes"]["colour"], r["attributes"]["shape"]) for r in train}
    assert not pairs & set(HELDOUT_PAIRS)
    assert {(r["attributes"]["colour"], r["attributes"]["shape"]) for r in heldout} <= set(HELDOUT_PAIRS)
    for record in train + heldout:
        parsed = parse_attributes(record["caption"])
        assert parsed == {k: record["attributes"][k] for k in ("colour", "shape", "motion")}


def test_synthetic_dataset_is_deterministic(tmp_path) -> None:
    a = write_synthetic_dataset(tmp_path / "a", SynthSpec(num_videos=10, seed=3))
    b = write_synthetic_dataset(tmp_path / "b", SynthSpec(num_videos=10, seed=3))
    assert a["train"].read_text() == b["train"].read_text()
    assert (tmp_path / "a/videos/00003.mp4").read_bytes() == (tmp_path / "b/videos/00003.mp4").read_bytes()


def test_synthetic_motion_is_visible_in_the_frames(small_synth) -> None:
    from vlmcap.video.decoders import decode_video

    record = json.loads(small_synth["train"].read_text().splitlines()[0])
    frames = decode_video(str(small_synth["train"].parent / record["video"])).frames.astype(float)
    bright = [np.argwhere(f.max(-1) > 100).mean(0) for f in (frames[0], frames[-1])]  # (row, col) of the object
    axis, sign = {"left_to_right": (1, 1), "right_to_left": (1, -1), "top_to_bottom": (0, 1), "bottom_to_top": (0, -1)}[
        record["attributes"]["motion"]
    ]
    assert sign * (bright[1][axis] - bright[0][axis]) > 30


def test_metrics() -> None:
    refs = [
        "빨간색 원이 왼쪽에서 오른쪽으로 움직입니다.",
        "파란색 사각형이 위에서 아래로 이동합니다.",
        "노란색 삼각형이 아래에서 위로 지나갑니다.",
    ]
    perfect = caption_metrics(refs, refs, parse_attributes)
    assert perfect["chrf++"] == 100.0 and perfect["cider_d"] == pytest.approx(10.0) and perfect["exact_match"] == 1.0
    assert perfect["attribute_accuracy"]["all"] == 1.0 and "characters" in perfect["cider_d_tokens"]
    assert "attribute_accuracy" not in caption_metrics(refs, refs)  # the metrics know no data set's attributes
    wrong = caption_metrics(
        ["빨간색 원이 오른쪽에서 왼쪽으로 움직입니다.", "파란색 원", "모릅니다"], refs, parse_attributes
    )
    assert 0 < wrong["cider_d"] < 10 and wrong["chrf++"] < 100
    assert wrong["attribute_accuracy"] == {"colour": 2 / 3, "shape": 1 / 3, "motion": 0.0, "all": 0.0}
    assert (
        caption_metrics(["좋은 날"], ["좋은 날씨"], parse_attributes).get("attribute_accuracy") is None
    )  # refs don't parse
    per_caption = caption_scores("빨간색 원이 오른쪽에서 왼쪽으로 움직입니다.", refs[0], parse_attributes)
    assert per_caption["attributes"] == {"colour": True, "shape": True, "motion": False}
    assert 0 < per_caption["chrf++"] < 100 and caption_scores(refs[1], refs[1])["chrf++"] == 100.0
    assert "attributes" not in caption_scores("좋은 날", "좋은 날씨", parse_attributes)
    # Length penalty: a correct but padded caption scores lower than the exact one.
    padded = [refs[0] + " 그리고 계속 움직입니다", *refs[1:]]
    assert cider_d(padded, [[r] for r in refs]) < cider_d(refs, [[r] for r in refs])


def test_feature_cache_never_returns_stale_entries(tmp_path, clips) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(clips["h264_mp4"].read_bytes())
    cache = FeatureCache(tmp_path / "cache", "encoder-a")
    assert cache.get(str(video)) is None
    features = torch.randn(8, 4, 16)
    cache.put(str(video), features)
    torch.testing.assert_close(cache.get(str(video)), features.half())
    assert FeatureCache(tmp_path / "cache", "encoder-b").get(str(video)) is None  # another encoder/layer/T
    time.sleep(0.01)
    video.write_bytes(clips["vp9_webm"].read_bytes())  # the file changed
    assert cache.get(str(video)) is None
    assert not list((tmp_path / "cache").rglob("*.vlmcap-tmp-*"))


def test_optimizer_and_rng_state_round_trip_without_pickle(tmp_path) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    optimizer_to_files(optimizer, tmp_path)
    rng_to_files(tmp_path)
    expected = (torch.rand(3), random.random(), np.random.rand())
    restored = torch.optim.AdamW(model.parameters(), lr=0.5)
    optimizer_from_files(restored, tmp_path)
    for a, b in zip(optimizer.state_dict()["state"].values(), restored.state_dict()["state"].values(), strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key])
    assert restored.param_groups[0]["lr"] == 0.1
    rng_from_files(tmp_path)
    assert (torch.rand(3), random.random(), np.random.rand())[1:] == expected[1:]
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".safetensors", ".safetensors"]


def test_interrupted_checkpoint_writes_are_never_trusted(tmp_path) -> None:
    def contents(out):
        (out / "projector.safetensors").write_bytes(b"x")
        (out / "trainer_state.json").write_text("{}")

    write_checkpoint(tmp_path, 5, contents, keep_last=2)
    (tmp_path / ".checkpoint-10.tmp").mkdir()  # killed mid-write
    (tmp_path / ".checkpoint-10.tmp" / "projector.safetensors").write_bytes(b"partial")
    (tmp_path / "checkpoint-12").mkdir()  # a directory without its state file
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-5"
    for step in (6, 7, 8):
        write_checkpoint(tmp_path, step, contents, keep_last=2)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-8"
    assert not (tmp_path / "checkpoint-6").exists() and not (tmp_path / ".checkpoint-10.tmp").exists()


def test_metrics_of_an_empty_set_do_not_crash() -> None:
    assert caption_metrics([], []) == {"n": 0}
