"""`vlmcap export` / `vlmcap inspect`: verified ONNX + merged LLM, hashed bundle, atomic publish, tamper checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from vlmcap.bundle import FORMAT_VERSION, load_bundle
from vlmcap.cli import cli
from vlmcap.config.loading import load_config
from vlmcap.config.schema import ExportConfig
from vlmcap.errors import BundleError, ConfigError, ExportError
from vlmcap.export.exporter import ExportRequest, export_bundle


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export(run: Path, out: Path, **options) -> dict:
    threshold = options.pop("external_data_threshold", None)
    request = ExportRequest(run, out, ExportConfig(**options))
    if threshold is not None:
        request.external_data_threshold = threshold
    return export_bundle(request).to_json_dict()


def beside(folder: Path) -> list[str]:
    """What is in the folder holding a bundle, but for the record of verified file stamps loading keeps there."""
    return sorted(p.name for p in folder.iterdir() if not p.name.endswith(".verified.json"))


def trained_model(run: Path):
    from vlmcap.model.vlm import VideoLanguageModel
    from vlmcap.training.checkpoint import load_weights

    config = load_config(run / "final" / "config.yaml")
    model = VideoLanguageModel.from_config(config, lora=True)
    load_weights(model, run / "final")
    return model.eval()


def val_pixels(run: Path, count: int = 3) -> torch.Tensor:
    from vlmcap.export.samples import manifest_videos, sample_pixels
    from vlmcap.presets import resolve_model_source
    from vlmcap.video.image_spec import ImageSpec

    config = load_config(run / "final" / "config.yaml")
    spec = ImageSpec.from_pretrained(resolve_model_source(config.model.vision.model).path)
    pixels, sources = sample_pixels(config, spec, manifest_videos(config), count)
    assert "synthetic" not in sources  # real decoded videos from the run's manifests
    return pixels


def test_bundle_has_every_design_field_and_true_hashes(tiny_bundle: Path) -> None:
    manifest = json.loads((tiny_bundle / "bundle.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    for key in ("vlmcap_version", "created", "source_run", "model", "projector", "video", "image", "vision", "llm"):
        assert key in manifest, key
    assert manifest["tokens_per_video"] == manifest["projector"]["tokens_per_frame"] * manifest["video"]["num_frames"]
    assert manifest["image"]["size"] == [112, 112] and len(manifest["image"]["mean"]) == 3
    assert manifest["vision"]["feature_layer"] == -2
    assert manifest["vision"]["fused_ops"] == {}  # standard ONNX: ONNX Runtime fuses when its session opens
    assert manifest["prompt"]["default_prompt"] == "이 영상을 한국어로 자세히 설명해 주세요."
    assert "<|im_start|>" in manifest["prompt"]["chat_template"]
    assert manifest["generation"]["temperature"] == 0.0
    files = {p.relative_to(tiny_bundle).as_posix() for p in tiny_bundle.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"bundle.json"}
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(tiny_bundle / rel) and entry["size"] == (tiny_bundle / rel).stat().st_size
    assert not list(tiny_bundle.parent.glob(".*tmp*"))  # no staging left behind
    llm_config = json.loads((tiny_bundle / "llm" / "config.json").read_text())
    assert "quantization_config" not in llm_config
    generation = json.loads((tiny_bundle / "llm" / "generation_config.json").read_text())
    assert generation["eos_token_id"] == manifest["generation"]["stop_token_ids"]
    assert load_bundle(tiny_bundle).id == manifest["id"]


def test_onnx_vision_equals_pytorch_at_any_batch_size(tiny_run: Path, tiny_bundle: Path) -> None:
    from vlmcap.onnx.session import create_session

    model = trained_model(tiny_run)
    pixels = val_pixels(tiny_run, 3)
    with torch.no_grad():
        reference = model.vision_rows(pixels).numpy()
    session = create_session(tiny_bundle / "vision.onnx")
    for batch in (pixels, pixels[:1]):
        out = session.run(None, {"pixel_values": batch.numpy()})[0]
        assert out.shape == (len(batch), 128, 128)
        np.testing.assert_allclose(out, reference[: len(batch)], atol=1e-5, rtol=0)


def test_bundle_captions_equal_the_trained_model(tiny_run: Path, tiny_bundle: Path) -> None:
    """ONNX vision rows + the merged checkpoint, loaded by plain transformers, caption like training's model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from vlmcap.model.embeddings import build_inputs_embeds
    from vlmcap.model.prompt import PromptBuilder
    from vlmcap.onnx.session import create_session

    model = trained_model(tiny_run)
    pixels = val_pixels(tiny_run, 3)
    expected = model.generate(pixels, max_new_tokens=24)

    manifest = load_bundle(tiny_bundle).manifest
    rows = create_session(tiny_bundle / "vision.onnx").run(None, {"pixel_values": pixels.numpy()})[0]
    llm = AutoModelForCausalLM.from_pretrained(tiny_bundle / "llm", use_safetensors=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bundle / "llm")
    prompts = PromptBuilder(tokenizer, manifest.prompt.default_prompt, manifest.prompt.system_prompt)
    batch = build_inputs_embeds(torch.from_numpy(rows), [prompts.encode(None)] * 3, llm.get_input_embeddings(), "left")
    with torch.no_grad():
        out = llm.generate(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, max_new_tokens=24)
    captions = [c.strip() for c in tokenizer.batch_decode(out, skip_special_tokens=True)]
    assert captions == expected
    assert any(captions)

    # The adapter mattered: the base LLM without it answers differently on the same inputs.
    base = trained_model(tiny_run)
    with base.llm.disable_adapter():
        assert base.generate(pixels, max_new_tokens=24) != expected


def test_qlora_run_merges_into_the_dequantized_weights_it_was_trained_on(tiny_run_4bit: Path, tmp_path: Path) -> None:
    """Default merge reproduces the 4-bit + adapter logits; merging into the originals does not."""
    from transformers import AutoModelForCausalLM

    from vlmcap.model.embeddings import build_inputs_embeds

    trained = trained_model(tiny_run_4bit)
    assert trained.config.model.llm.quantize == "4bit"
    pixels = val_pixels(tiny_run_4bit, 2)
    # In train mode bitsandbytes computes exactly as it did during training (dequantize, then a float32
    # matmul); in eval mode on CPUs with AVX512-BF16 it repacks the weights for a bfloat16 kernel.
    # Dropout is 0 in the tiny preset, so train mode changes nothing else.
    trained.llm.train()
    with torch.no_grad():
        batch = trained.embed(pixels, [trained.prompts.encode(None)] * 2, "right")
        reference = trained.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits
        rows = trained.vision_rows(pixels)

    def max_diff(bundle: Path) -> float:
        llm = AutoModelForCausalLM.from_pretrained(bundle / "llm", use_safetensors=True).eval()
        merged = build_inputs_embeds(rows, [trained.prompts.encode(None)] * 2, llm.get_input_embeddings(), "right")
        with torch.no_grad():
            logits = llm(inputs_embeds=merged.inputs_embeds, attention_mask=merged.attention_mask).logits
        return float((logits - reference).abs().max())

    dequantized = export(tiny_run_4bit, tmp_path / "dq")
    original = export(tiny_run_4bit, tmp_path / "orig", merge_into="original")
    assert dequantized["llm"]["merge_into"] == "dequantized" and original["llm"]["merge_into"] == "original"
    assert "quantization_config" not in json.loads((tmp_path / "dq" / "llm" / "config.json").read_text())
    dq, orig = max_diff(tmp_path / "dq"), max_diff(tmp_path / "orig")
    assert dq < 1e-4 and orig > 100 * dq, (dq, orig)


def assert_standard_onnx_that_openvino_runs(tiny_run: Path, bundle: Path, precision: str) -> None:
    """The shipped vision.onnx is valid standard ONNX (no com.microsoft operator: TensorRT, MIGraphX and
    OpenVINO load it), and OpenVINO computes what ONNX Runtime computes, within the precision's tolerance."""
    import onnx

    from vlmcap.export.verify import check, compare
    from vlmcap.metrics.closeness import VISION_TOLERANCE
    from vlmcap.onnx.openvino_model import compile_onnx
    from vlmcap.onnx.session import create_session

    path = bundle / "vision.onnx"
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert {opset.domain for opset in model.opset_import} <= {"", "ai.onnx"}
    pixels = val_pixels(tiny_run, 2).numpy()
    onnx_rows = create_session(path).run(None, {"pixel_values": pixels})[0]
    openvino_rows = compile_onnx(path, "fp32", 1).create_infer_request().infer({0: pixels})[0]
    check(compare(onnx_rows, openvino_rows), VISION_TOLERANCE[precision], f"OpenVINO against ONNX Runtime, {precision}")


def test_the_fp32_graph_is_standard_onnx_that_openvino_runs(tiny_run: Path, tiny_bundle: Path) -> None:
    assert_standard_onnx_that_openvino_runs(tiny_run, tiny_bundle, "fp32")


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_graphs_are_verified_by_cosine(
    tiny_run: Path, tiny_bundle: Path, tmp_path, precision
) -> None:
    manifest = export(tiny_run, tmp_path / precision, precision=precision)
    final = manifest["vision"]["verification"]["final"]
    assert final["passed"] and final["min_cosine"] >= final["tolerance"]["min_cosine"]
    assert manifest["vision"]["verification"]["traced_fp32"]["max_abs_scaled"] < 1e-4
    assert_standard_onnx_that_openvino_runs(tiny_run, tmp_path / precision, precision)
    size = (tmp_path / precision / "vision.onnx").stat().st_size
    fp32_size = (tiny_bundle / "vision.onnx").stat().st_size
    # int8 quantizes the MatMuls only (export/precision.py): the tiny C-Abstractor's float convolutions
    # are a larger share of its weights than at CLIP-L/336, where int8 is 0.29 of fp32.
    assert size < 0.6 * fp32_size
    if precision == "int8":
        import onnx

        ops = {node.op_type for node in onnx.load(str(tmp_path / precision / "vision.onnx")).graph.node}
        assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops and "ConvInteger" not in ops


def test_failed_verification_leaves_no_bundle_and_keeps_the_old_one(tiny_run, tiny_bundle, tmp_path, monkeypatch):
    from vlmcap.export import verify

    out = tmp_path / "engine"
    shutil.copytree(tiny_bundle, out)
    before = load_bundle(out).id
    monkeypatch.setitem(verify.VISION_TOLERANCE, "int8", verify.Tolerance(min_cosine=0.99999999))
    with pytest.raises(ExportError, match=r"vision.onnx \(int8, batch 2\): verification failed: min row cosine"):
        export(tiny_run, out, precision="int8")
    assert load_bundle(out).id == before
    assert beside(tmp_path) == ["engine"]


def test_export_replaces_an_existing_bundle_atomically(tiny_run, tiny_bundle, tmp_path) -> None:
    out = tmp_path / "engine"
    shutil.copytree(tiny_bundle, out)
    manifest = export(tiny_run, out, precision="int8")
    assert load_bundle(out).id == manifest["id"] != load_bundle(tiny_bundle).id
    assert beside(tmp_path) == ["engine"]


def test_large_graphs_use_external_data(tiny_run, tmp_path) -> None:
    manifest = export(tiny_run, tmp_path / "ext", external_data_threshold=0)
    assert manifest["vision"]["external_data"] is True
    assert "vision.onnx.data" in manifest["files"]
    assert (tmp_path / "ext" / "vision.onnx").stat().st_size < 200_000  # graph only, weights beside it
    assert manifest["vision"]["verification"]["final"]["passed"]


def test_kill_9_during_export_never_damages_the_existing_bundle(tiny_run, tiny_bundle, tmp_path) -> None:
    out = tmp_path / "engine"
    shutil.copytree(tiny_bundle, out)
    before = load_bundle(out).id
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmcap.cli", "export", str(tiny_run), "--out", str(out), "--precision", "int8"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    staging = tmp_path / f".engine.vlmcap-tmp-{proc.pid}"
    while not (staging / "vision.onnx").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "export finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert load_bundle(out).id == before
    assert staging.exists()  # what a killed export leaves; the next export removes it
    export(tiny_run, out)
    assert beside(tmp_path) == ["engine"]


def _copy(bundle: Path, tmp_path: Path) -> Path:
    out = tmp_path / "copy"
    shutil.copytree(bundle, out)
    return out


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: _flip_byte(b / "llm" / "model.safetensors"), r"llm/model.safetensors: sha256 does not match"),
        (lambda b: _flip_byte(b / "vision.onnx"), r"vision.onnx: sha256 does not match"),
        (lambda b: os.truncate(b / "vision.onnx", 100), r"vision.onnx: 100 bytes, bundle.json says"),
        (lambda b: (b / "llm" / "tokenizer.json").unlink(), r"llm/tokenizer.json: listed in bundle.json but missing"),
        (lambda b: (b / "llm" / "extra.safetensors").write_bytes(b"x"), r"llm/extra.safetensors: not listed"),
        (lambda b: (b / "bundle.json").unlink(), r"bundle.json: missing"),
        (lambda b: (b / "bundle.json").write_text("{"), r"bundle.json: not valid JSON"),
    ],
)
def test_damaged_bundles_are_refused_naming_the_file(tiny_bundle, tmp_path, damage, message) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    damage(bundle)
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    result = CliRunner().invoke(cli, ["inspect", str(bundle)])
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and "vlmcap: error:" in result.output


def test_unknown_format_version_is_refused(tiny_bundle, tmp_path) -> None:
    bundle = _copy(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["format_version"] = FORMAT_VERSION + 1
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=rf"format_version {FORMAT_VERSION + 1} is not supported"):
        load_bundle(bundle)


def test_cli_export_chains_from_the_latest_run_to_the_default_engine(tiny_run, vlmcap_home) -> None:
    runs = vlmcap_home / "runs"
    runs.mkdir(exist_ok=True)
    shutil.copytree(tiny_run, runs / "latest")
    result = CliRunner().invoke(cli, ["export", "--precision", "int8"])
    assert result.exit_code == 0, result.output
    engine = vlmcap_home / "engines" / "default"
    assert "sha256 of every file verified" in result.output and f"wrote {engine}" in result.output
    shown = CliRunner().invoke(cli, ["inspect", "--json"])
    assert shown.exit_code == 0
    report = json.loads(shown.output)
    assert report["verified"] is True and report["vision"]["precision"] == "int8"
    assert report["path"] == str(engine.resolve())
    text = CliRunner().invoke(cli, ["inspect"]).output
    assert "c-abstractor  16 tokens/frame x 8 frames = 128 tokens/video" in text


def test_cli_export_rejects_bad_options_before_any_work(tiny_run, tmp_path) -> None:
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "b"), "--opset", "9"])
    assert result.exit_code == 2
    assert "'--opset': 9 is not in the range 14<=x<=21" in result.output  # the field's bounds, on the flag
    missing = CliRunner().invoke(cli, ["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "b")])
    assert missing.exit_code == 2 and "no final/ or checkpoint" in missing.output
    assert not (tmp_path / "b").exists()


def test_export_never_replaces_a_directory_that_is_not_a_bundle(tiny_run, tmp_path) -> None:
    precious = tmp_path / "my-data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="is not an engine bundle"):
        export(tiny_run, precious)
    with pytest.raises(ConfigError, match=r"--out .*: is RUN .*, which this command also uses"):
        export(tiny_run, tiny_run)
    assert (precious / "notes.txt").read_text() == "keep me" and (tiny_run / "final").is_dir()
