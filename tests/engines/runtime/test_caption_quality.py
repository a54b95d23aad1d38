"""Caption guards (engines/runtime/caption_quality.py; docs/BATCH.md, "Caption quality"), and the
provenance every record carries (engines/batch/provenance.py).

The failures come from real engines: bundles whose LLM really loops or really ends at once
(tests/forced_models.py), and the trained tiny bundle cut at max_new_tokens or prompted in English.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from forced_models import forced_token_bundle

import vlmcap
from vlmcap.cli import cli
from vlmcap.config.schema import QualityConfig
from vlmcap.engines.runtime.caption_quality import CaptionGuard, Quality, choose, repeated_fraction

EOS = 735  # <|im_end|> of the tiny preset's tokenizer, the bundle's stop token
LATIN_G = 70  # "g" in the tiny preset's byte-level vocabulary
KOREAN = "이 영상을 한국어로 자세히 설명해 주세요."


@pytest.fixture(scope="module")
def two_videos(small_synth) -> list[str]:
    return [str(p) for p in sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))[:2]]


@pytest.fixture(scope="module")
def looping_bundle(tiny_bundle, tmp_path_factory) -> Path:
    return forced_token_bundle(tiny_bundle, tmp_path_factory.mktemp("forced") / "loop", LATIN_G)


@pytest.fixture(scope="module")
def silent_bundle(tiny_bundle, tmp_path_factory) -> Path:
    return forced_token_bundle(tiny_bundle, tmp_path_factory.mktemp("forced") / "silent", EOS)


def run_batch(videos: list[str], bundle: Path, out: Path, *args: str):
    stats = out.with_suffix(".stats.json")
    argv = ["batch", *videos, "--out", str(out), "--engine", str(bundle), "--llm-backend", "transformers"]
    result = CliRunner().invoke(cli, [*argv, "--stats", str(stats), *args], catch_exceptions=False)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()] if out.exists() else []
    return result, records, json.loads(stats.read_text()) if stats.exists() else None


# --- the checks, on their own ------------------------------------------------------------------


def guard(**settings) -> CaptionGuard:
    return CaptionGuard(QualityConfig(**settings), stop_token_ids=[EOS])


def test_repeated_fraction_separates_loops_from_sentences() -> None:
    assert repeated_fraction([7] * 20, 3) == pytest.approx(1 - 1 / 18)
    sentence = list(range(10))
    assert repeated_fraction(sentence, 3) == 0.0
    assert repeated_fraction(sentence * 4, 3) > 0.6  # a sentence said four times
    assert repeated_fraction([1, 2], 3) == 0.0


def test_each_check_flags_its_failure_and_only_it() -> None:
    g = guard()
    clean = [*range(20), EOS]
    assert g.flags("노란색 원이 움직입니다.", clean, "stop", KOREAN) == ()
    assert g.flags("노란색 원이 움직입니다.", [5] * 20, "stop", KOREAN) == ("repetition",)
    assert g.flags("노란색 원이", clean[:5], "length", KOREAN) == ("truncated",)
    assert g.flags("A yellow circle moves.", clean, "stop", KOREAN) == ("wrong_script",)
    assert g.flags("  ", [EOS], "stop", KOREAN) == ("empty",)
    # The stop token is not content: 11 ids + end of turn is under the loop check's 12.
    assert g.flags("노란색", [5] * 11 + [EOS], "stop", KOREAN) == ()


def test_expected_script_follows_the_prompt_or_the_setting() -> None:
    assert guard().expected_script(KOREAN) == "Hangul"
    assert guard().expected_script("Describe this video.") == "Latin"
    assert guard().expected_script("<video> 123") is None  # the placeholder is no language; no letters left
    assert guard().expected_script("<video>\n이 영상을 설명하세요") == "Hangul"
    assert guard(script="none").flags("A circle.", [1, 2, EOS], "stop", KOREAN) == ()
    assert guard(script="Han+Hiragana+Katakana").flags("東京タワーの写真", [1, 2, EOS], "stop", KOREAN) == ()
    assert guard(checks=["empty"]).flags("gggg", [LATIN_G] * 30, "length", KOREAN) == ()


def test_the_retry_is_kept_unless_it_is_worse_and_segments_combine() -> None:
    assert choose(("truncated",), ()) == Quality((), True, ("truncated",), "retry")
    assert choose(("empty",), ("repetition", "truncated")) == Quality(("empty",), True, ("empty",), "first")
    assert choose(("empty",), ("truncated",)).used == "retry"  # a tie: the retry
    video = Quality.combine([Quality(), Quality(("truncated",), True, ("repetition", "truncated"), "retry")])
    assert video == Quality(("truncated",), True, ("repetition", "truncated"), "retry")
    assert Quality.from_dict(video.to_dict()) == video
    assert Quality().to_dict() == {"flags": [], "retried": False}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--quality-checks", "repetition,loops"], "'loops': Input should be 'repetition', 'truncated'"),
        (["--expected-script", "Klingon"], "unknown Unicode script 'Klingon'"),
        (["--llm-backend", "vllm", "--config", "{penalty}"], "--repetition-penalty 1.3 with --llm-backend vllm"),
        (["--llm-backend", "vllm", "--temperature", "2.5"], "--temperature 2.5 with --llm-backend vllm: vLLM accepts"),
    ],
)
def test_bad_guard_settings_fail_before_any_work(tiny_bundle, two_videos, tmp_path, args, message) -> None:
    penalty = tmp_path / "penalty.yaml"
    penalty.write_text("batch:\n  quality:\n    retry_generation: {repetition_penalty: 1.3}\n")
    out = tmp_path / "c.jsonl"
    argv = ["batch", *two_videos, "--out", str(out), "--engine", str(tiny_bundle)]
    result = CliRunner().invoke(cli, argv + [a.replace("{penalty}", str(penalty)) for a in args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not out.exists()


# --- real engines producing each failure ---------------------------------------------------------


def test_a_looping_model_is_flagged_retried_and_rejected_when_strict(looping_bundle, two_videos, tmp_path) -> None:
    result, records, stats = run_batch(two_videos, looping_bundle, tmp_path / "loop.jsonl", "--max-new-tokens", "16")
    assert result.exit_code == 0, result.output
    for r in records:
        assert r["caption"] == "g" * 16 and r["finish_reason"] == "length"  # the model really loops
        assert r["quality"] == {
            "flags": ["repetition", "truncated", "wrong_script"],
            "retried": True,
            "retried_for": ["repetition", "truncated", "wrong_script"],
            "used": "retry",
        }
    flagged = {"repetition": 2, "truncated": 2, "wrong_script": 2}
    assert stats["quality"] == {
        "flagged": flagged,
        "retried": 2,
        "recovered": 0,
        "still_flagged": flagged,
        "rejected": 0,
    }
    assert "caption guards flagged: repetition 2, truncated 2, wrong_script 2; retried 2" in result.output

    # Provenance: what produced the line, without the run's logs.
    provenance = records[0]["provenance"]
    assert provenance["vlmcap"] == vlmcap.__version__
    assert provenance["vision"] == {"precision": "fp32", "engine": "onnxruntime (CPU, fp32)"}
    assert provenance["llm"] == {"dtype": "float32", "quantization": None, "engine": "transformers (cpu, float32)"}
    generation = {"max_new_tokens": 16, "stop_token_ids": [EOS], "temperature": 0.0, "top_p": 1.0}
    assert provenance["generation"] == {**generation, "repetition_penalty": 1.0, "seed": None}
    assert provenance["retry_generation"] == {**provenance["generation"], "temperature": 0.7, "top_p": 0.9}
    manifest = json.loads((looping_bundle / "bundle.json").read_text())
    assert records[0]["bundle"] == manifest["id"] and records[0]["prompt"] == manifest["prompt"]["default_prompt"]

    strict = tmp_path / "strict.jsonl"
    result, records, stats = run_batch(two_videos, looping_bundle, strict, "--max-new-tokens", "16", "--strict-quality")
    assert result.exit_code == 1, result.output  # some videos failed: their error lines are written
    assert len(records) == 2
    for r in records:
        assert r["status"] == "error" and r["error"]["type"] == "CaptionQualityError"
        assert r["error"]["message"].endswith("caption flagged after a retry: repetition, truncated, wrong_script")
        assert r["quality"]["flags"] == ["repetition", "truncated", "wrong_script"] and "provenance" in r
    assert stats["quality"]["rejected"] == 2 and stats["quality"]["still_flagged"] == {} and stats["failed"] == 2


def test_a_model_that_ends_at_once_is_flagged_empty(silent_bundle, two_videos, tmp_path) -> None:
    result, records, stats = run_batch(two_videos[:1], silent_bundle, tmp_path / "silent.jsonl")
    assert result.exit_code == 0, result.output
    (r,) = records
    assert r["caption"] == "" and r["num_tokens"] == 1 and r["finish_reason"] == "stop"
    assert r["quality"]["flags"] == ["empty"] and r["quality"]["retried"]
    assert stats["quality"]["flagged"] == {"empty": 1}


def test_a_cut_caption_recovers_on_the_retry_and_no_retry_keeps_it(tiny_bundle, two_videos, tmp_path) -> None:
    config = tmp_path / "retry.yaml"
    config.write_text("batch:\n  quality:\n    retry_generation: {max_new_tokens: 32, temperature: 0.0}\n")
    out = tmp_path / "cut.jsonl"
    result, records, stats = run_batch(two_videos, tiny_bundle, out, "--max-new-tokens", "3", "--config", str(config))
    assert result.exit_code == 0, result.output
    for r in records:
        assert r["quality"] == {"flags": [], "retried": True, "retried_for": ["truncated"], "used": "retry"}
        assert r["finish_reason"] == "stop" and r["num_tokens"] > 3  # the retry's caption, whole
        assert r["provenance"]["retry_generation"]["max_new_tokens"] == 32
    assert stats["quality"]["recovered"] == 2 and stats["quality"]["flagged"] == {"truncated": 2}

    out = tmp_path / "kept.jsonl"
    result, records, stats = run_batch(two_videos, tiny_bundle, out, "--max-new-tokens", "3", "--no-quality-retry")
    assert result.exit_code == 0, result.output
    for r in records:
        assert r["quality"] == {"flags": ["truncated"], "retried": False} and r["num_tokens"] == 3
        assert "retry_generation" not in r["provenance"]
    assert stats["quality"]["still_flagged"] == {"truncated": 2} and stats["quality"]["retried"] == 0


def test_korean_captions_for_an_english_prompt_are_the_wrong_script(tiny_bundle, two_videos, tmp_path) -> None:
    out = tmp_path / "english.jsonl"
    result, records, _ = run_batch(two_videos[:1], tiny_bundle, out, "--prompt", "Describe this video in one sentence.")
    assert result.exit_code == 0, result.output
    (r,) = records
    assert any("\uac00" <= ch <= "\ud7a3" for ch in r["caption"])  # the tiny model answers in Korean
    assert "wrong_script" in r["quality"]["flags"] and r["quality"]["retried"]
