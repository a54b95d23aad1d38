"""Text rows equal the model's own for every LLM family (docs/EXPORT.md, "Text rows").

Tiny random Llama, Gemma 3 and EXAONE 4 checkpoints (Qwen3 is the default preset, tested everywhere
else) are trained a few steps, exported, and captioned through the engines. Gemma scales its
embedding rows by sqrt(hidden_size) inside its embedding layer: 8 at hidden 64.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vlmcap.bundle import load_bundle
from vlmcap.config.loading import load_config
from vlmcap.config.schema import ExportConfig
from vlmcap.engines.runtime.engines import Engines
from vlmcap.engines.runtime.llm_transformers import TransformersEngine
from vlmcap.engines.runtime.vision import OnnxVisionEngine
from vlmcap.export.exporter import ExportRequest, export_bundle
from vlmcap.export.samples import manifest_videos, sample_pixels
from vlmcap.model.generation import GenerationParams
from vlmcap.model.text_rows import EmbeddingTable
from vlmcap.model.vlm import VideoLanguageModel
from vlmcap.presets import resolve_model_source
from vlmcap.training.checkpoint import load_weights
from vlmcap.training.trainer import run_training
from vlmcap.video.image_spec import ImageSpec

SCALE = {"llama": 1.0, "gemma3": 8.0, "exaone4": 1.0}


@pytest.fixture(scope="module", params=list(SCALE))
def family_bundle(request, small_synth, tmp_path_factory) -> tuple[str, object, Path, Path]:
    family = request.param
    config = load_config(
        preset="tiny",
        overrides=[
            f"model.llm.model=preset:tiny-{family}-random",
            "model.llm.quantize=none",
            f"train.data={small_synth['train']}",
            f"train.val=[{small_synth['val']}]",
            "train.stage=lora",
            "train.batch_size=4",
            "train.max_steps=4",
            "train.eval_every=100",
            "train.lr_projector=2e-3",
            "train.lr_lora=1e-2",
        ],
    )
    run = tmp_path_factory.mktemp(f"run-{family}")
    run_training(config, run)
    out = tmp_path_factory.mktemp(f"bundle-{family}") / "bundle"
    export_bundle(ExportRequest(run, out, ExportConfig()))
    return family, config, run, out


def test_the_bundle_records_the_scale_and_the_engines_rows_are_the_models(family_bundle) -> None:
    family, config, run, out = family_bundle
    bundle = load_bundle(out)
    llm = bundle.manifest.llm
    assert llm.embed_scale == SCALE[family]
    assert llm.verification.text_rows_checked == llm.vocab_size  # a small vocabulary: every id
    model = VideoLanguageModel.from_config(config, lora=True)
    load_weights(model, run / "final")
    ids = torch.arange(llm.vocab_size)
    theirs = model.llm.get_input_embeddings()(ids).detach()
    table = EmbeddingTable(bundle.llm_dir, llm.embed_tokens, llm.embed_scale)
    assert torch.equal(table(ids), theirs)
    plain = EmbeddingTable(bundle.llm_dir, llm.embed_tokens)  # what the engines read before the scale was recorded
    assert torch.equal(plain(ids) * SCALE[family], theirs)
    assert torch.equal(plain(ids), theirs) == (SCALE[family] == 1.0)

    # Greedy captions through the engines (ONNX vision rows, table rows, transformers) = the training-time model.
    spec = ImageSpec.from_pretrained(resolve_model_source(config.model.vision.model).path)
    pixels, _ = sample_pixels(config, spec, manifest_videos(config), 3)
    expected = model.eval().generate(pixels, max_new_tokens=12)
    params = GenerationParams(max_new_tokens=12, stop_token_ids=list(bundle.manifest.generation.stop_token_ids))
    engines = Engines(bundle, OnnxVisionEngine(bundle), TransformersEngine(bundle), params)
    captions = engines.caption(engines.encode(pixels.numpy()), [None] * len(pixels))
    assert [c.text for c in captions] == expected


@pytest.mark.parametrize("family_bundle", ["gemma3"], indirect=True)
def test_vllm_captions_a_gemma3_bundle_like_transformers(family_bundle, tmp_path) -> None:
    """The family whose rows are scaled, through vLLM fed prompt embeds (one engine start: ~1 minute)."""
    _, config, _, out = family_bundle
    videos = tmp_path / "videos"
    videos.mkdir()
    for video in manifest_videos(config)[:4]:
        shutil.copy2(video, videos / Path(video).name)
    captions = {}
    for backend in ("transformers", "vllm"):
        jsonl = tmp_path / f"{backend}.jsonl"
        # --enforce-eager: vLLM starts in ~28 s instead of ~49 s (no torch.compile); the compiled default
        # is run by tests/engines/batch/test_batch.py::test_vllm_engine_writes_the_same_captions_as_transformers.
        args = [str(videos), "--out", str(jsonl), "--engine", str(out), "--llm-backend", backend, "--enforce-eager"]
        run_ = subprocess.run(
            # The barely trained model's captions are flagged (cut, wrong script) and a guard's retry
            # samples: compare the engines' greedy captions, not two samples.
            [sys.executable, "-m", "vlmcap", "batch", *args, "--max-new-tokens", "12", "--no-quality-retry"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run_.returncode == 0, run_.stderr[-3000:]
        captions[backend] = {r["video"]: r["caption"] for r in map(json.loads, jsonl.read_text().splitlines())}
    assert len(captions["vllm"]) == 4 and captions["vllm"] == captions["transformers"]
