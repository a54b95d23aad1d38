"""Quantized LLM exports (docs/EXPORT.md, "Quantized LLM" and "Caption gate") and serving them
(docs/BATCH.md, "Quantized LLMs"), with the real compressed-tensors, transformers and vLLM CPU engine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors import safe_open

from vlmcap.bundle import load_bundle
from vlmcap.cli import cli
from vlmcap.config.schema import CaptionGateConfig, ExportConfig
from vlmcap.engines.runtime.quant_support import vllm_cpu_dtype, vllm_quant_problem
from vlmcap.errors import ExportError
from vlmcap.export.caption_gate import GateInputs, judge
from vlmcap.export.exporter import ExportRequest, export_bundle


def _linear_bytes(llm_dir: Path) -> int:
    """Bytes of the decoder's linear layers (what quantization shrinks): every tensor but the
    embedding table and the norms."""
    total = 0
    with safe_open(str(llm_dir / "model.safetensors"), "pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
            if "embed_tokens" not in key and "norm" not in key:
                tensor = f.get_tensor(key)
                total += tensor.numel() * tensor.element_size()
    return total


@pytest.fixture(scope="module")
def w4a16_bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quantized") / "w4a16-int8"
    options = ExportConfig(llm_quant="w4a16", precision="int8", calibration_videos=16)
    export_bundle(ExportRequest(tiny_run, out, options))
    return out


@pytest.fixture(scope="module")
def w8a8_bundle(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quantized") / "w8a8"
    export_bundle(ExportRequest(tiny_run, out, ExportConfig(llm_quant="w8a8", calibration_videos=16)))
    return out


def _batch(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vlmcap", "batch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


# The vLLM runs here pass --enforce-eager: vLLM starts in ~28 s instead of ~49 s on 2 cores (no
# torch.compile), and the quantized kernels are the same; the compiled default is run by
# tests/engines/batch/test_batch.py::test_vllm_engine_writes_the_same_captions_as_transformers.


def _captions(path: Path) -> dict[str, str]:
    return {r["video"]: r["caption"] for r in map(json.loads, path.read_text().splitlines()) if r["status"] == "ok"}


def test_w4a16_bundle_records_its_scheme_and_gate_and_an_eighth_of_the_bytes(w4a16_bundle, tiny_bundle) -> None:
    manifest = load_bundle(w4a16_bundle).manifest
    q = manifest.llm.quantization
    assert (q.scheme, q.format, q.group_size) == ("w4a16", "pack-quantized", 128)
    assert q.calibration_sequences == 16 and q.calibration_tokens > 16 * manifest.tokens_per_video
    assert q.error_reduction_vs_minmax >= 0  # min-max rounding is one candidate of the search
    config = json.loads((w4a16_bundle / "llm" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors"
    assert config["quantization_config"]["config_groups"]["group_0"]["weights"]["group_size"] == 128
    with safe_open(str(w4a16_bundle / "llm" / "model.safetensors"), "pt") as f:
        packed = f.get_tensor("model.layers.0.mlp.up_proj.weight_packed")
    assert packed.dtype == torch.int32  # eight 4-bit weights per int32
    # 4 bits + one float32 scale per 128 weights, against float32: 1/8 + 1/128 of the bytes.
    ratio = _linear_bytes(w4a16_bundle / "llm") / _linear_bytes(tiny_bundle / "llm")
    assert 0.125 < ratio < 0.14, ratio
    gate = manifest.caption_gate
    assert gate.lossy == ["vision int8", "llm w4a16"] and gate.videos == 8 and gate.passed
    assert gate.chrf >= 70 and gate.exact_match >= 0.5 and gate.token_agreement >= 0.9
    shown = CliRunner().invoke(cli, ["inspect", str(w4a16_bundle)])
    assert "quantized  llm w4a16 (pack-quantized" in shown.output
    assert f"chrF++ {gate.chrf:.2f} (min 70)" in shown.output


def test_an_unrounded_bundle_has_no_gate(tiny_bundle) -> None:
    manifest = load_bundle(tiny_bundle).manifest
    assert manifest.caption_gate is None and manifest.llm.quantization is None


def test_quantized_bundles_caption_through_transformers_and_auto_says_why_not_vllm(
    w4a16_bundle, tiny_bundle, six_videos, tmp_path
) -> None:
    reference, quantized = tmp_path / "fp32.jsonl", tmp_path / "w4a16.jsonl"
    common = ["--max-new-tokens", "16", "--batch-size", "4", "--enforce-eager"]
    assert _batch(str(six_videos), "--out", str(reference), "--engine", str(tiny_bundle), "--llm-backend",
                  "transformers", *common).returncode == 0  # fmt: skip
    stats = tmp_path / "stats.json"
    run = _batch(str(six_videos), "--out", str(quantized), "--engine", str(w4a16_bundle), "--stats", str(stats),
                 *common)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    llm = json.loads(stats.read_text())["engines"]["llm"]
    problem = vllm_quant_problem("w4a16")
    if problem:  # this CPU: auto took transformers and the stats say why
        assert llm.startswith("transformers (cpu, float32, w4a16); auto chose it: ") and problem in llm
    else:
        assert llm.startswith(f"vllm ({vllm_cpu_dtype('w4a16') or 'float32'}, w4a16)")
    got, expected = _captions(quantized), _captions(reference)
    assert len(got) == 6 and got.keys() == expected.keys()  # the export gate measured such captions equal
    assert sum(got[v] == expected[v] for v in got) >= len(got) - 1


def test_vllm_serves_w8a8_with_prompt_embeds(w8a8_bundle, six_videos, tmp_path) -> None:
    """vLLM's CPU build runs int8 W8A8 (oneDNN) on every x86 CPU: its captions against transformers
    computing the same quantized numbers (activations rounded per token) in PyTorch."""
    common = ["--engine", str(w8a8_bundle), "--max-new-tokens", "16", "--batch-size", "4", "--enforce-eager"]
    reference = tmp_path / "transformers.jsonl"
    assert _batch(str(six_videos), "--out", str(reference), "--llm-backend", "transformers", *common).returncode == 0
    out, stats = tmp_path / "vllm.jsonl", tmp_path / "stats.json"
    run = _batch(str(six_videos), "--out", str(out), "--llm-backend", "vllm", "--stats", str(stats), *common)
    assert run.returncode == 0, run.stderr[-3000:]
    # bfloat16 where this CPU's int8 kernel takes nothing else (AMX: engines/runtime/quant_support.py)
    assert json.loads(stats.read_text())["engines"]["llm"] == f"vllm ({vllm_cpu_dtype('w8a8') or 'float32'}, w8a8)"
    got, expected = _captions(out), _captions(reference)
    assert len(got) == 6 and got.keys() == expected.keys()
    assert sum(got[v] == expected[v] for v in got) >= len(got) - 1  # int8 GEMMs round differently from PyTorch's


@pytest.mark.skipif(vllm_quant_problem("w4a16") is not None, reason="vLLM's W4A16 CPU kernel needs AVX-512")
def test_vllm_serves_w4a16_where_it_has_the_kernel(w4a16_bundle, six_videos, tmp_path) -> None:
    out, stats = tmp_path / "vllm.jsonl", tmp_path / "stats.json"
    run = _batch(str(six_videos), "--out", str(out), "--engine", str(w4a16_bundle), "--llm-backend", "vllm",
                 "--stats", str(stats), "--max-new-tokens", "16", "--enforce-eager")  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(stats.read_text())["engines"]["llm"] == f"vllm ({vllm_cpu_dtype('w4a16') or 'float32'}, w4a16)"


def test_fp8_exports_on_cpu_and_vllm_refuses_it_before_any_work(tiny_run, six_videos, tmp_path) -> None:
    bundle = tmp_path / "fp8"
    export_bundle(ExportRequest(tiny_run, bundle, ExportConfig(llm_quant="fp8", calibration_videos=4)))
    assert load_bundle(bundle).manifest.llm.quantization.format == "float-quantized"
    out = tmp_path / "c.jsonl"
    run = _batch(str(six_videos), "--out", str(out), "--engine", str(bundle), "--llm-backend", "vllm", timeout=120)
    assert run.returncode == 2
    assert "no kernel for FP8 with per-channel weights; fp8 bundles run on GPUs" in run.stderr
    assert not out.exists()


def _export(run: Path, out: Path, *flags: str):
    return CliRunner().invoke(cli, ["export", str(run), "--out", str(out), *flags])


def test_a_scheme_the_model_cannot_take_fails_before_work_and_keeps_the_bundle(tiny_run, tiny_bundle, tmp_path):
    out = tmp_path / "default"
    shutil.copytree(tiny_bundle, out)
    before = (out / "bundle.json").read_bytes()
    result = _export(tiny_run, out, "--llm-quant", "w4a16", "--llm-quant-group-size", "48")
    assert result.exit_code == 2
    assert "export.llm_quant_group_size=48 does not divide model.layers.0.self_attn.q_proj's 128 inputs" in (
        result.output
    )
    assert (out / "bundle.json").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["default"]  # no staging directory was made


def test_quantization_without_calibration_data_fails_before_work(tiny_run, tiny_bundle, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run / "final", run / "final")
    config = yaml.safe_load((run / "final" / "config.yaml").read_text())
    config["train"]["data"] = str(tmp_path / "gone.jsonl")
    (run / "final" / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    out = tmp_path / "default"
    shutil.copytree(tiny_bundle, out)
    result = _export(run, out, "--llm-quant", "w8a8")
    assert result.exit_code == 2
    assert f"export.llm_quant needs calibration data: {tmp_path / 'gone.jsonl'}: manifest not found" in result.output
    assert load_bundle(out).id == load_bundle(tiny_bundle).id


def test_the_gate_refuses_with_every_number_it_missed() -> None:
    reference = ["빨간색 원이 위에서 아래로 움직입니다.", "파란색 사각형이 왼쪽에서 오른쪽으로 움직입니다."]
    candidate = ["빨간색 원이 위에서 아래로 움직입니다.", "파란색 삼각형이 오른쪽에서 왼쪽으로 움직입니다."]
    inputs = GateInputs(torch.zeros(1), torch.zeros(1), ["a.mp4", "b.mp4"], ["llm w4a16"])
    record = judge(reference, candidate, 0.93, inputs, CaptionGateConfig())
    assert record["passed"] and record["exact_match"] == 0.5 and 70 < record["chrf"] < 100
    assert judge(["", ""], ["", ""], 1.0, inputs, CaptionGateConfig())["chrf"] == 100.0  # agreeing, if empty
    with pytest.raises(ExportError) as failed:
        judge(reference, candidate, 0.93, inputs, CaptionGateConfig(min_exact_match=0.9, min_token_agreement=0.95))
    message = str(failed.value)
    assert "caption gate failed for llm w4a16 against float32 on 2 held-out videos" in message
    assert "exact match 0.5 < 0.9; token agreement 0.93 < 0.95" in message and "chrF++" not in message
