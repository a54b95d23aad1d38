"""`vlmcap export`: a training run in, a verified engine bundle out (docs/EXPORT.md).

    run_dir/final (projector.safetensors, adapter/, config.yaml)
        -> vision.onnx   frozen encoder + trained projector, verified against PyTorch
        -> llm/          LoRA merged into the base, verified against the un-merged model
        -> bundle.json   everything an engine needs to know, and the sha256 of every file

The bundle is assembled in a hidden staging directory beside the destination and published with
one rename, so an interrupted export leaves no half bundle and never damages an existing one.
"""

from __future__ import annotations

import datetime
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlmcap import __version__
from vlmcap.bundle import LLM_DIR, MANIFEST, REFERENCE_DIR, VISION_ONNX, write_manifest
from vlmcap.bundle.manifest import (
    BundleManifest,
    GenerationInfo,
    ImageInfo,
    LLMInfo,
    ModelIds,
    ProjectorInfo,
    PromptInfo,
    SourceRun,
    VideoInfo,
    VisionInfo,
)
from vlmcap.config import VIDEO_PLACEHOLDER, ExportConfig, dump_config
from vlmcap.errors import ConfigError
from vlmcap.export.merge_llm import export_llm, shipped_dtype
from vlmcap.export.onnx_graph import EXTERNAL_DATA_THRESHOLD, export_onnx
from vlmcap.export.precision import convert_precision, fuse_transformer_ops
from vlmcap.export.publish import publish, staging_directory
from vlmcap.export.samples import manifest_videos, sample_pixels
from vlmcap.export.verify import VISION_TOLERANCE, check, compare
from vlmcap.onnx_session import create_session
from vlmcap.presets import resolve_model_source
from vlmcap.run_dir import CONFIG_FILE, WEIGHTS_FILE, resolve_weights_dir, trained_step, weights_config
from vlmcap.video.image_spec import ImageSpec
from vlmcap.vision_graph import INPUT_NAME, OUTPUT_NAME, VisionGraph, build_vision_graph

log = logging.getLogger(__name__)


@dataclass
class ExportRequest:
    run: Path  # run directory, its final/, or one checkpoint directory
    out: Path
    options: ExportConfig
    sample_videos: list[Path] = field(default_factory=list)
    device: str | None = None  # where the LLM is merged; default cuda when present
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD


def _check_destination(out: Path, weights_dir: Path) -> None:
    """Publishing replaces `out` wholesale: only ever replace nothing, an empty folder or a bundle."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if weights_dir.resolve().is_relative_to(out):
        raise ConfigError(f"--out {out}: contains the run being exported; choose another directory")
    if any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise ConfigError(f"--out {out}: exists and is not an engine bundle (no {MANIFEST}); refusing to replace it")


def run_export_config(run: Path, overrides: dict[str, Any]) -> ExportConfig:
    """The run's `export:` section with command-line values on top, validated."""
    config = weights_config(resolve_weights_dir(run, "run"))
    try:
        return ExportConfig.model_validate({**config.export.model_dump(), **overrides})
    except ValueError as e:
        raise ConfigError(f"export options: {e}") from None


def _export_vision(graph: VisionGraph, pixels: torch.Tensor, request: ExportRequest, stage: Path) -> dict[str, Any]:
    """Write stage/vision.onnx at the requested precision; verify every intermediate graph too."""
    options, threshold = request.options, request.external_data_threshold
    work = stage / ".vision-work"
    with torch.no_grad():
        reference = graph(pixels).numpy()
        reference_b1 = reference[:1]

    def verify(path: Path, precision: str, what: str) -> dict[str, Any]:
        session = create_session(path, exact=True)
        out = session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0]
        out_b1 = session.run([OUTPUT_NAME], {INPUT_NAME: pixels[:1].numpy()})[0]
        record = check(
            compare(reference, out), VISION_TOLERANCE[precision], f"{what} ({precision}, batch {len(pixels)})"
        )
        check(compare(reference_b1, out_b1), VISION_TOLERANCE[precision], f"{what} ({precision}, batch 1)")
        record["providers"] = session.get_providers()
        return record

    start = time.perf_counter()
    export_onnx(graph, pixels, work / "traced.onnx", request.options.opset, threshold)
    steps = {"traced_fp32": verify(work / "traced.onnx", "fp32", "exported vision graph")}
    source = work / "traced.onnx"
    fused: dict[str, int] = {}
    if options.optimize:
        cfg = graph.vision.model.config
        fused = fuse_transformer_ops(source, work / "fused.onnx", cfg.num_attention_heads, cfg.hidden_size, threshold)
        steps["fused_fp32"] = verify(work / "fused.onnx", "fp32", "fused vision graph")
        source = work / "fused.onnx"
    convert_precision(source, stage / VISION_ONNX, options.precision, threshold)
    final = verify(stage / VISION_ONNX, options.precision, f"{request.out / VISION_ONNX}")
    shutil.rmtree(work)
    return {
        "file": VISION_ONNX,
        "external_data": (stage / (VISION_ONNX + ".data")).exists(),
        "precision": options.precision,
        "opset": options.opset,
        "fused_ops": fused,
        "input": {"name": INPUT_NAME, "shape": ["batch", *pixels.shape[1:]], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", *reference.shape[1:]], "dtype": "float32"},
        "verification": {"final": final, **steps},
        "seconds": round(time.perf_counter() - start, 2),
    }


def export_bundle(request: ExportRequest) -> BundleManifest:
    """Build, verify and publish the bundle; returns its manifest."""
    weights_dir = resolve_weights_dir(request.run, "run")
    config = weights_config(weights_dir)
    options = request.options
    device = torch.device(request.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vision_source = resolve_model_source(config.model.vision.model, seed=config.seed)
    spec = ImageSpec.from_pretrained(vision_source.path, config.model.vision.revision)
    graph = build_vision_graph(config, weights_dir)
    candidates = [*request.sample_videos, *manifest_videos(config)]
    pixels, sample_sources = sample_pixels(config, spec, candidates, options.verify_videos)
    with torch.no_grad():
        vision_rows = graph(pixels)
    llm_dtype = shipped_dtype(config, options.llm_dtype, device)

    out = request.out.expanduser().resolve()  # a symlinked destination is replaced where it points
    _check_destination(out, weights_dir)
    with staging_directory(out) as stage:
        log.info("exporting the vision graph (%s)", options.precision)
        vision = _export_vision(graph, pixels, request, stage)
        log.info("merging the LLM (%s, into %s weights)", llm_dtype, options.merge_into)
        start = time.perf_counter()
        llm = export_llm(
            config,
            weights_dir,
            stage / LLM_DIR,
            vision_rows,
            options.merge_into,
            llm_dtype,
            device,
            options.max_new_tokens,
        )
        reference = stage / REFERENCE_DIR  # lets the PyTorch vision engine rebuild the same graph
        reference.mkdir()
        shutil.copy2(weights_dir / WEIGHTS_FILE, reference / WEIGHTS_FILE)
        (reference / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
        tokens_per_frame = graph.projector.tokens_per_frame
        manifest = BundleManifest(
            vlmcap_version=__version__,
            created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            source_run=SourceRun(
                weights=str(weights_dir.resolve()), step=trained_step(weights_dir), stage=config.train.stage
            ),
            model=ModelIds(
                vision=config.model.vision.model,
                vision_revision=config.model.vision.revision,
                llm=config.model.llm.model,
                llm_revision=config.model.llm.revision,
                seed=config.seed,
                trained_quantization=config.model.llm.quantize,
            ),
            projector=ProjectorInfo(
                kind=config.model.projector.kind, tokens_per_frame=tokens_per_frame, config=config.model.projector
            ),
            video=VideoInfo(num_frames=config.video.num_frames),
            image=ImageInfo.from_spec(spec),
            vision=VisionInfo(
                **vision,
                feature_layer=config.model.vision.feature_layer,
                hidden_size=graph.vision.hidden_size,
                grid_size=graph.vision.grid_size,
            ),
            tokens_per_video=tokens_per_frame * config.video.num_frames,
            llm=LLMInfo(
                dir=LLM_DIR,
                dtype=llm.dtype,
                hidden_size=llm.hidden_size,
                vocab_size=llm.vocab_size,
                embed_tokens=llm.embed_tokens_key,
                embed_scale=llm.embed_scale,
                adapter_merged=llm.adapter_merged,
                merge_into=options.merge_into if config.model.llm.quantize == "4bit" else "original",
                verification=llm.verification,
                seconds=round(time.perf_counter() - start, 2),
            ),
            prompt=PromptInfo(
                default_prompt=config.prompt.default_prompt,
                system_prompt=config.prompt.system_prompt,
                placeholder=VIDEO_PLACEHOLDER,
                enable_thinking=False,
                chat_template=llm.chat_template,
            ),
            generation=GenerationInfo(
                max_new_tokens=options.max_new_tokens,
                temperature=0.0,
                repetition_penalty=1.0,
                stop_token_ids=llm.stop_token_ids,
            ),
            verification_inputs=sample_sources,
            export=options,
        )
        manifest = write_manifest(stage, manifest)
        publish(stage, out)
    log.info("bundle %s written to %s", manifest.id, out)
    return manifest
