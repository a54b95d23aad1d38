"""`vlmcap export`: a training run in, a verified engine bundle out (docs/EXPORT.md).

    run_dir/final (projector.safetensors, adapter/, config.yaml)
        -> vision.onnx   frozen encoder + trained projector, verified against PyTorch
        -> llm/          LoRA merged into the base, verified against the un-merged model
        -> bundle.json   everything an engine needs to know, and the sha256 of every file

The bundle is assembled in a hidden staging directory beside the destination and published with
one rename, so an interrupted export leaves no half bundle and never damages an existing one.

One module past 300 lines: the export's order (destination checks, vision graph, LLM, manifest,
publish) is read top to bottom here; each step's machinery lives in its own module.
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
from vlmcap.bundle import LLM_DIR, MANIFEST, REFERENCE_DIR, VISION_ONNX, read_manifest, write_manifest
from vlmcap.bundle.manifest import (
    BundleManifest,
    ExportRecord,
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
from vlmcap.config.loading import dump_config
from vlmcap.config.schema import VIDEO_PLACEHOLDER, ExportConfig, VlmcapConfig
from vlmcap.errors import BundleError, ConfigError
from vlmcap.export.caption_gate import GateInputs
from vlmcap.export.memory import PeakMemory, release_freed_memory
from vlmcap.export.merge_llm import Calibration, export_llm, shipped_dtype
from vlmcap.export.onnx_graph import EXTERNAL_DATA_THRESHOLD, export_onnx
from vlmcap.export.precision import convert_precision
from vlmcap.export.publish import publish, staging_directory
from vlmcap.export.quantize_llm import check_scheme
from vlmcap.export.samples import calibration_samples, manifest_videos, sample_pixels
from vlmcap.export.verify import VISION_TOLERANCE, check, compare
from vlmcap.model.vision_graph import INPUT_NAME, OUTPUT_NAME, VisionGraph, build_vision_graph
from vlmcap.onnx.session import create_session
from vlmcap.presets import resolve_model_source
from vlmcap.storage.output_guard import check_apart
from vlmcap.storage.run_dir import CONFIG_FILE, WEIGHTS_FILE, resolve_weights_dir, trained_step, weights_config
from vlmcap.video.image_spec import ImageSpec

log = logging.getLogger(__name__)


@dataclass
class ExportRequest:
    run: Path  # run directory, its final/, or one checkpoint directory
    out: Path
    options: ExportConfig
    sample_videos: list[Path] = field(default_factory=list)
    device: str | None = None  # where the LLM is merged; default cuda when present
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD


def _check_destination(out: Path, request: ExportRequest, weights_dir: Path, config: VlmcapConfig) -> None:
    """Publishing replaces `out` wholesale: only ever replace nothing, an empty folder, or a bundle that
    holds nothing but its own files; and never anything the export reads (vlmcap/storage/output_guard.py)."""
    reads: list[tuple[str, Any]] = [("RUN", request.run), ("the run's weights", weights_dir)]
    reads += [("--sample-video", video) for video in request.sample_videos]
    models = {"model.vision.model": config.model.vision.model, "model.llm.model": config.model.llm.model}
    reads += [(key, model) for key, model in models.items() if Path(model).exists()]  # local model folders
    check_apart("--out", out, reads, folder=True)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a directory")
    if not (out / MANIFEST).is_file():
        raise ConfigError(f"--out {out}: exists and is not an engine bundle (no {MANIFEST}); refusing to replace it")
    try:
        files = set(read_manifest(out).files)
    except BundleError as e:
        raise ConfigError(f"--out {out}: not a bundle this export may replace ({e})") from None
    for path in sorted(out.rglob("*")):
        name = path.relative_to(out).as_posix()
        if (path.is_file() or path.is_symlink()) and name != MANIFEST and name not in files:
            raise ConfigError(
                f"--out {out}: holds {name}, which is no file of its bundle; publishing would delete it: "
                "move it out, or choose another --out"
            )


def run_export_config(run: Path, overrides: dict[str, Any]) -> ExportConfig:
    """The run's `export:` section with command-line values on top, validated."""
    config = weights_config(resolve_weights_dir(run, "run"))
    merged = config.export.model_dump()
    for key, value in overrides.items():  # dotted keys (`gate.min_chrf`) set nested fields
        *sections, name = key.split(".")
        section = merged
        for part in sections:
            section = section[part]
        section[name] = value
    try:
        return ExportConfig.model_validate(merged)
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
    steps: dict[str, Any] = {}
    if options.precision != "fp32":  # an fp32 bundle ships the traced graph: verified once, below
        steps["traced_fp32"] = verify(work / "traced.onnx", "fp32", "exported vision graph")
    # Standard ONNX at every precision (export/precision.py): ONNX Runtime fuses when a session opens.
    convert_precision(work / "traced.onnx", stage / VISION_ONNX, options.precision, threshold)
    final = verify(stage / VISION_ONNX, options.precision, f"{request.out / VISION_ONNX}")
    shutil.rmtree(work)
    return {
        "file": VISION_ONNX,
        "external_data": (stage / (VISION_ONNX + ".data")).exists(),
        "precision": options.precision,
        "opset": options.opset,
        "fused_ops": {},  # nothing fused into the file; bundles from before issue 34 list their com.microsoft ops
        "input": {"name": INPUT_NAME, "shape": ["batch", *pixels.shape[1:]], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", *reference.shape[1:]], "dtype": "float32"},
        "verification": {"final": final, **steps},
        "seconds": round(time.perf_counter() - start, 2),
    }


def _rows(graph: VisionGraph, pixels: torch.Tensor, chunk: int = 4) -> torch.Tensor:
    """float32 vision rows of (N, T, 3, H, W) pixels, a few videos at a time."""
    with torch.no_grad():
        return torch.cat([graph(pixels[i : i + chunk]) for i in range(0, len(pixels), chunk)])


def _lossy_parts(options: ExportConfig, llm_dtype: str) -> list[str]:
    """What rounds numbers in this bundle compared with float32 (each triggers the caption gate)."""
    parts = [f"vision {options.precision}"] if options.precision != "fp32" else []
    if llm_dtype != "float32":
        parts.append(f"llm {llm_dtype}")
    if options.llm_quant != "none":
        parts.append(f"llm {options.llm_quant}")
    return parts


def _meta_llm(config: VlmcapConfig) -> torch.nn.Module:
    """The LLM's module structure without weights: what a quantization scheme is checked against."""
    from transformers import AutoConfig, AutoModelForCausalLM

    source = resolve_model_source(config.model.llm.model, seed=config.seed)
    llm_config = AutoConfig.from_pretrained(source.path, revision=config.model.llm.revision, trust_remote_code=False)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(llm_config, trust_remote_code=False)


def _shipped_rows(path: Path, pixels: torch.Tensor) -> torch.Tensor:
    """Vision rows of the shipped vision.onnx; its session is closed on return, before the LLM loads."""
    session = create_session(path)
    rows = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: pixels.numpy()})[0])
    del session
    release_freed_memory()
    return rows


def _mb(num_bytes: int) -> float:
    return round(num_bytes / 1e6, 1)


def export_bundle(request: ExportRequest) -> BundleManifest:
    """Build, verify and publish the bundle; returns its manifest."""
    memory = PeakMemory()  # this export's own peak, whatever the process held before
    weights_dir = resolve_weights_dir(request.run, "run")
    config = weights_config(weights_dir)
    options = request.options
    device = torch.device(request.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    vision_source = resolve_model_source(config.model.vision.model, seed=config.seed)
    spec = ImageSpec.from_pretrained(vision_source.path, config.model.vision.revision)
    llm_dtype = shipped_dtype(config, options.llm_dtype, device)
    out = request.out.expanduser().resolve()  # a symlinked destination is replaced where it points
    _check_destination(out, request, weights_dir, config)
    with memory.phase("vision: load the run, sample frames and rows"):
        graph = build_vision_graph(config, weights_dir)
        calibration = None
        if options.llm_quant != "none":  # a scheme the model cannot take, or no calibration data, fails before work
            check_scheme(_meta_llm(config), options.llm_quant, options.llm_quant_group_size)
            cal_pixels, cal_samples = calibration_samples(config, spec, options.calibration_videos)
            calibration = Calibration(
                _rows(graph, cal_pixels), [s.prompt for s in cal_samples], [s.caption for s in cal_samples]
            )
            del cal_pixels
        candidates = [*request.sample_videos, *manifest_videos(config)]
        pixels, sample_sources = sample_pixels(config, spec, candidates, options.verify_videos)
        vision_rows = _rows(graph, pixels)
        lossy = _lossy_parts(options, llm_dtype)
        if lossy:
            gate_pixels, gate_sources = sample_pixels(config, spec, candidates, options.gate.videos)
            gate_reference_rows = _rows(graph, gate_pixels)
    # What the manifest needs of the graph, so that the graph can go before the LLM loads.
    tokens_per_frame = graph.projector.tokens_per_frame
    vision_hidden_size, vision_grid_size = graph.vision.hidden_size, graph.vision.grid_size

    with staging_directory(out) as stage:
        log.info("exporting the vision graph (%s)", options.precision)
        with memory.phase("vision: export and verify the graph"):
            vision = _export_vision(graph, pixels, request, stage)
        del graph, pixels
        release_freed_memory()  # the vision side's memory, before the LLM takes its own
        gate = None
        if lossy:
            with memory.phase("vision: the shipped graph's gate rows"):
                shipped_rows = _shipped_rows(stage / VISION_ONNX, gate_pixels)
            gate = GateInputs(gate_reference_rows, shipped_rows, gate_sources, lossy)
            del gate_pixels
        log.info(
            "merging the LLM (%s, into %s weights%s)",
            llm_dtype,
            options.merge_into,
            f", quantized {options.llm_quant}" if options.llm_quant != "none" else "",
        )
        start = time.perf_counter()
        llm = export_llm(
            config, weights_dir, stage / LLM_DIR, vision_rows, options, llm_dtype, device, calibration, gate, memory
        )
        if llm.caption_gate is not None:
            log.info(
                "caption gate passed (%s): chrF++ %.2f, exact match %.2f, token agreement %.3f on %d videos",
                ", ".join(lossy),
                llm.caption_gate["chrf"],
                llm.caption_gate["exact_match"],
                llm.caption_gate["token_agreement"],
                llm.caption_gate["videos"],
            )
        reference = stage / REFERENCE_DIR  # lets the PyTorch vision engine rebuild the same graph
        reference.mkdir()
        shutil.copy2(weights_dir / WEIGHTS_FILE, reference / WEIGHTS_FILE)
        (reference / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
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
                hidden_size=vision_hidden_size,
                grid_size=vision_grid_size,
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
                quantization=llm.quantization,
                seconds=round(time.perf_counter() - start, 2),
            ),
            caption_gate=llm.caption_gate,
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
            export=ExportRecord(
                **options.model_dump(),
                peak_rss_mb=_mb(memory.peak_bytes()),
                phase_peak_rss_mb={name: _mb(peak) for name, peak in memory.phases.items()} or None,
            ),
        )
        manifest = write_manifest(stage, manifest)
        publish(stage, out)
    log.info("bundle %s written to %s (peak memory %.1f GB)", manifest.id, out, manifest.export.peak_rss_mb / 1e3)
    return manifest
