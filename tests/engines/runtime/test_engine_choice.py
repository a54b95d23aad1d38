"""`auto` engines (engines/runtime/engine_choice.py, calibration.py): measured once per machine and
bundle, cached, chosen by rate behind a margin and only when the check against float32 passes;
explicit requests honoured and checked; a small model not measured at all."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner

from vlmcap import environment
from vlmcap.bundle import load_bundle
from vlmcap.cli import cli
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.runtime import calibration, engine_choice
from vlmcap.engines.runtime.calibration import CHOICE_MARGIN, Trial
from vlmcap.engines.runtime.engine_choice import EngineChoice, engine_settings, split_threads
from vlmcap.errors import ConfigError
from vlmcap.metrics.closeness import Tolerance
from vlmcap.model.generation import GenerationParams


def choose(bundle, **asked):
    settings = BatchConfig(**asked)
    return engine_settings(bundle, settings, GenerationParams.from_bundle(bundle, settings.generation))


def cache_files(home):
    return sorted((home / "cache" / "engines").glob("*.json"))


def test_a_small_model_keeps_its_baseline_unmeasured(tiny_bundle, vlmcap_home) -> None:
    bundle = load_bundle(tiny_bundle)
    before = cache_files(vlmcap_home)
    settings, choice = choose(bundle)
    assert (settings.vision_backend, settings.vllm.dtype) == ("onnx", "float32")
    assert [t.seconds for t in choice.trials] == [None] and "not measured" in choice.trials[0].note
    assert cache_files(vlmcap_home) == before  # nothing measured: nothing cached
    shown = CliRunner().invoke(cli, ["info", "--engine", str(tiny_bundle)])
    assert shown.exit_code == 0 and "vision: onnx (fp32); llm: auto (float32)" in shown.output


def test_measured_choices_follow_the_rule_and_are_cached_per_machine(tiny_bundle, vlmcap_home, monkeypatch) -> None:
    monkeypatch.setattr(calibration, "MEASURE_FROM_BYTES", {"vision": 0, "llm": 0})
    monkeypatch.setattr(calibration, "have_openvino", lambda: False)  # its own tests cover it
    monkeypatch.setattr(calibration, "native_bf16", lambda: True)  # every CPU measures both precisions
    bundle = load_bundle(tiny_bundle)
    settings, choice = choose(bundle, cpu_threads=2, llm_backend="transformers")  # vLLM's: its own test
    assert not [t for t in choice.trials if t.stage == "llm engine"]  # asked for: not measured
    vision = [t for t in choice.trials if t.stage == "vision"]
    llm = [t for t in choice.trials if t.stage == "llm"]
    assert [(t.engine, t.precision) for t in vision] == [("onnx", "fp32"), ("torch", "bf16")]
    assert [t.precision for t in llm] == ["float32", "bfloat16"] and all(t.seconds > 0 for t in vision + llm)
    for trials in (vision, llm):
        chosen = next(t for t in trials if t.note.startswith("chosen"))
        baseline, candidate = trials
        faster = candidate.passed and candidate.seconds * CHOICE_MARGIN <= baseline.seconds
        assert chosen is (candidate if faster else baseline)
    assert 0.9 < vision[1].check <= 1.0 and 0.0 <= llm[1].check <= 1.0
    assert settings.vision_backend == ("torch" if vision[1].note.startswith("chosen") else "onnx")

    assert choice.threads is None and settings.vision_threads is None  # threads asked for: both engines get them
    again_settings, again = choose(bundle, cpu_threads=2, llm_backend="transformers")
    assert again.cached and again.trials == choice.trials and again_settings == settings
    monkeypatch.setattr(engine_choice, "library_version", lambda name: "another")  # a new torch, say
    _, measured_again = choose(bundle, cpu_threads=2, llm_backend="transformers")
    assert not measured_again.cached
    assert len(cache_files(vlmcap_home)) == 2


def test_an_explicit_precision_that_fails_its_check_stops_before_any_video(tiny_bundle, monkeypatch) -> None:
    monkeypatch.setitem(calibration.VISION_TOLERANCE, "bf16", Tolerance(min_cosine=1.0 + 1e-9))  # unreachable
    bundle = load_bundle(tiny_bundle)
    with pytest.raises(ConfigError, match=r"--vision-precision bf16: torch bf16 measured 0\.9\d+ against float32"):
        choose(bundle, vision_backend="torch", vision_precision="bf16")
    with pytest.raises(ConfigError, match="ONNX Runtime computes the bundle's fp32 graph"):
        choose(bundle, vision_backend="onnx", vision_precision="bf16")
    monkeypatch.setattr(calibration, "have_openvino", lambda: False)
    with pytest.raises(ConfigError, match=r"OpenVINO is not installed; pip install 'vlmcap\[openvino\]'"):
        choose(bundle, vision_backend="openvino")


def test_bf16_on_a_cpu_without_it_runs_and_says_so_once(tiny_bundle, monkeypatch, caplog) -> None:
    from vlmcap.engines.runtime.vision import TorchVisionEngine

    monkeypatch.setattr(environment, "native_bf16", lambda: False)
    monkeypatch.setattr(environment, "_WARNED_EMULATED", set())
    bundle = load_bundle(tiny_bundle)
    with caplog.at_level(logging.WARNING):
        for _ in range(2):
            engine = TorchVisionEngine.from_bundle(bundle, "cpu", 1, 1, "bf16")
    assert engine.name == "torch (cpu, bfloat16)"
    warnings = [r.message for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == 1


def test_a_lower_precision_is_recorded_with_its_check(tiny_bundle) -> None:
    bundle = load_bundle(tiny_bundle)
    choice = EngineChoice(
        "torch",
        "bf16",
        "bfloat16",
        trials=[
            Trial("vision", "onnx", "fp32", 1.0, None, True, "reference"),
            Trial("vision", "torch", "bf16", 0.3, 0.9999871, True, "chosen"),
            Trial("llm", "transformers", "float32", 1.0, None, True, "reference"),
            Trial("llm", "transformers", "bfloat16", 0.4, 0.97, True, "chosen"),
        ],
    )
    settings = BatchConfig()
    params = GenerationParams.from_bundle(bundle, settings.generation)
    fields = Provenance.of_run(bundle, settings, params, choice).fields
    assert fields["vision"]["checked"] == {"min_row_cosine": 0.999987, "against": "float32"}
    assert fields["llm"]["checked"] == {"token_agreement": 0.97, "against": "float32"}
    assert json.loads(json.dumps(choice.to_dict()))["trials"][1]["check"] == 0.9999871


@pytest.mark.parametrize(
    ("cores", "vision_s", "llm_s", "split"),
    [
        (2, 7.0, 4.7, (1, 1)),
        (1, 7.0, 4.7, (1, 1)),
        (12, 7.0, 4.7, (7, 5)),
        (12, 30.0, 1.0, (11, 1)),
        (8, 1.0, 3.0, (2, 6)),
    ],
)
def test_the_cores_are_split_by_each_engines_cost(cores, vision_s, llm_s, split) -> None:
    assert split_threads(cores, vision_s, llm_s) == split


def test_without_a_thread_count_the_measured_costs_split_the_cores(tiny_bundle, vlmcap_home, monkeypatch) -> None:
    monkeypatch.setattr(calibration, "MEASURE_FROM_BYTES", {"vision": 0, "llm": 0})
    monkeypatch.setattr(calibration, "have_openvino", lambda: False)
    monkeypatch.setattr(calibration, "native_bf16", lambda: True)
    monkeypatch.setattr(engine_choice, "usable_cpus", lambda: 10)  # 10 cores, 2 decode workers: 8 to split
    bundle = load_bundle(tiny_bundle)
    settings, choice = choose(bundle, workers=2, llm_backend="transformers")
    chosen = {t.stage: t for t in choice.trials if t.note.startswith("chosen")}
    assert chosen["llm"].video_s > 0  # a whole video's prompt and caption, from the timed prefill and steps
    vision, llm = split_threads(8, chosen["vision"].seconds, chosen["llm"].video_s)
    assert choice.threads == {"vision": vision, "llm": llm} and vision + llm == 8
    assert (settings.vision_threads, settings.llm_threads) == (vision, llm)
    assert f"threads: vision {vision}, llm {llm}" in "\n".join(choice.lines())
    own, _ = choose(
        bundle, workers=2, llm_threads=3, llm_backend="transformers"
    )  # a stage's own setting wins over the split
    assert (own.vision_threads, own.llm_threads) == (vision, 3)


def test_auto_times_vllm_against_transformers_and_keeps_vllm_unless_transformers_is_faster(
    tiny_bundle, vlmcap_home, monkeypatch
) -> None:
    monkeypatch.setattr(calibration, "MEASURE_FROM_BYTES", {"vision": 0, "llm": 0})
    monkeypatch.setattr(calibration, "have_openvino", lambda: False)
    monkeypatch.setattr(calibration, "native_bf16", lambda: False)  # float32 only: the dtype is not timed
    bundle = load_bundle(tiny_bundle)
    eager = {"vllm": {"enforce_eager": True}}  # vLLM starts in half the time (docs/TESTING.md)
    settings, choice = choose(bundle, cpu_threads=1, **eager)
    engines = {t.engine: t for t in choice.trials if t.stage == "llm engine"}
    assert set(engines) == {"vllm", "transformers"}
    vllm, transformers = engines["vllm"], engines["transformers"]
    assert vllm.precision == transformers.precision == "float32"
    assert vllm.seconds > 0 and vllm.video_s > 0 and transformers.video_s > 0
    faster = transformers.video_s * CHOICE_MARGIN <= vllm.video_s
    assert choice.llm_backend == ("transformers" if faster else "vllm")
    assert settings.llm_backend == ("transformers" if faster else "auto")  # auto: vLLM, or transformers if it fails
    assert (transformers if faster else vllm).note == "chosen"
    assert "llm engine vllm float32" in "\n".join(choice.lines())
    _, again = choose(bundle, cpu_threads=1, **eager)
    assert again.cached and again.llm_backend == choice.llm_backend  # vLLM is not started again
    streamed, _ = choose(bundle, cpu_threads=1, llm_schedule="stream", **eager)  # vLLM's own schedule: vLLM, unmeasured
    assert streamed.llm_backend == "auto"
