"""`vlmcap eval` on a manifest of segments: per-segment pairing by overlap, counts, boundary recall."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from vlmcap.bundle import load_bundle
from vlmcap.cli import cli
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.eval.evaluate import evaluate_bundle
from vlmcap.errors import ConfigError
from vlmcap.metrics.segments import best_match, boundaries_found, inner_boundaries
from vlmcap.training.synth import SynthSpec, write_multiscene_set
from vlmcap.video.scenes import detect_cuts
from vlmcap.video.segments import Segment, overlap_s


@pytest.fixture(scope="module")
def multiscene(tmp_path_factory) -> Path:
    # Seed 11: two videos of four scenes whose every cut PySceneDetect finds (within 0.125 s).
    return write_multiscene_set(tmp_path_factory.mktemp("multiscene-eval"), SynthSpec(seed=11, multi_scene=2))


def test_pairing_and_boundaries() -> None:
    predicted = [Segment(0, 4.9), Segment(4.9, 10.2), Segment(10.2, 15)]
    assert best_match(Segment(5, 10), predicted) == 1
    assert best_match(Segment(4.8, 5.0), predicted) == 0  # 0.1 s in the first, 0.1 s in the second: the earlier
    assert best_match(Segment(20, 21), [Segment(0, 5), Segment(5, 15)]) == 1  # none overlaps: the nearest
    reference = inner_boundaries([Segment(0, 5), Segment(5, 10), Segment(10, 15)], 15.0)
    assert reference == [5.0, 10.0]  # the video's own start and end are no cuts
    assert boundaries_found(reference, inner_boundaries(predicted, 15.0)) == 2
    assert boundaries_found(reference, [5.6]) == 0


def test_eval_scores_each_reference_segment(tiny_bundle, multiscene, tmp_path) -> None:
    references = [json.loads(line) for line in multiscene.read_text(encoding="utf-8").splitlines()]
    # No segments in the settings: a manifest of segments is captioned per detected scene.
    result = evaluate_bundle(load_bundle(tiny_bundle), multiscene, BatchConfig(llm_backend="transformers"))
    metrics, records = result["metrics"], result["records"]
    assert metrics["segments"] == "scenes" and metrics["failed"] == 0
    assert metrics["n"] == metrics["segments_reference"] == len(references)
    # The counts and the recall are those of the detector's own cuts, computed here independently.
    cuts = {v: detect_cuts(str(multiscene.parent / v), 27.0, 2.0) for v in {r["video"] for r in references}}
    assert metrics["segments_predicted"] == sum(len(c) + 1 for c in cuts.values()) == len(references)
    found = sum(
        boundaries_found([r["start_s"] for r in references if r["video"] == v and r["start_s"] > 0], c)
        for v, c in cuts.items()
    )
    assert metrics["boundary_recall"] == found / (len(references) - len(cuts)) == 1.0
    assert metrics["boundary_tolerance_s"] == 0.5
    assert 0 <= metrics["chrf++"] <= 100 and "attribute_accuracy" in metrics
    assert [(r["start_s"], r["end_s"], r["reference"]) for r in records] == [
        (r["start_s"], r["end_s"], r["caption"]) for r in references
    ]
    for r in records:  # each reference is paired with the predicted scene that covers most of it
        predicted = Segment(r["predicted_start_s"], r["predicted_end_s"])
        assert overlap_s(predicted, Segment(r["start_s"], r["end_s"])) >= 4.5 and r["caption"]

    # --segments none, given: one whole-file caption per video is what every reference is compared with.
    out = tmp_path / "records.jsonl"
    args = ["eval", "--engine", str(tiny_bundle), "--data", str(multiscene), "--llm-backend", "transformers"]
    cli_run = CliRunner().invoke(cli, [*args, "--segments", "none", "--json", "--records", str(out)])
    assert cli_run.exit_code == 0, cli_run.output
    whole = json.loads(cli_run.stdout)
    assert whole["segments"] == "none" and whole["n"] == len(references)
    assert whole["segments_predicted"] == 2 and whole["boundary_recall"] == 0.0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == len(references) and {r["predicted_start_s"] for r in rows} == {0.0}


def test_eval_refuses_whole_videos_mixed_with_segments(tiny_bundle, multiscene, tmp_path) -> None:
    first = json.loads(multiscene.read_text(encoding="utf-8").splitlines()[0])
    video = str(multiscene.parent / first["video"])
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(
        json.dumps({"video": video, "caption": "장면", "start_s": 0, "end_s": 5})
        + "\n"
        + json.dumps({"video": video, "caption": "영상 전체"})
        + "\n"
    )
    with pytest.raises(ConfigError, match=r"mixed\.jsonl:2: a whole-video line in a manifest of segments"):
        evaluate_bundle(load_bundle(tiny_bundle), mixed, BatchConfig(llm_backend="transformers"))
