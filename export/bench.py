"""`vlmcap bench vision`: frames/s of the vision graph in PyTorch, ONNX Runtime and OpenVINO.

The graph is built from a config preset with its seeded random projector (no training run
needed), exported and derived exactly as `vlmcap export` does (standard ONNX at each precision),
and timed on the same frames. Each ONNX Runtime and OpenVINO row also reports its min row cosine
against float32 PyTorch on those frames, and what opening the graph cost: the ONNX Runtime session
(its graph fusions included) or OpenVINO's compile, cold and again from its cache.
"""

from __future__ import annotations

import importlib.util
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmcap.bench.timer import time_call
from vlmcap.config.schema import VlmcapConfig
from vlmcap.environment import native_bf16, usable_cpus
from vlmcap.export.onnx_graph import export_onnx
from vlmcap.export.precision import convert_precision
from vlmcap.export.samples import sample_pixels
from vlmcap.export.verify import compare
from vlmcap.model.vision_graph import INPUT_NAME, build_vision_graph
from vlmcap.onnx.fusion import fuse_into
from vlmcap.onnx.session import create_session
from vlmcap.presets import resolve_model_source
from vlmcap.video.image_spec import ImageSpec

OPENVINO_PRECISIONS = ("fp32", "bf16")


def bench_vision(
    config: VlmcapConfig,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    batch_videos: int = 1,
    repeat: int = 3,
    device: str = "cpu",
    providers: Sequence[str] | None = None,
    openvino_precisions: Sequence[str] = OPENVINO_PRECISIONS,
) -> list[dict[str, Any]]:
    """One row per engine and precision; OpenVINO rows (its fp32 graph, computed in fp32 and bf16) only
    where the `openvino` extra is installed."""
    torch.set_num_threads(usable_cpus())
    graph = build_vision_graph(config)
    spec = ImageSpec.from_pretrained(resolve_model_source(config.model.vision.model, config.seed).path)
    pixels, _ = sample_pixels(config, spec, [], batch_videos)
    frames = pixels.shape[0] * pixels.shape[1]
    rows: list[dict[str, Any]] = []

    def row(backend: str, precision: str, provider: str, seconds: float, **extra) -> None:
        rows.append(
            {
                "backend": backend,
                "precision": precision,
                "provider": provider,
                "frames": frames,
                "frames_per_s": round(frames / seconds, 2),
                "ms_per_video": round(1000 * seconds / pixels.shape[0], 1),
                **extra,
            }
        )

    def accuracy(out) -> dict[str, float]:
        stats = compare(reference, out)
        return {"min_cosine": round(stats["min_cosine"], 6), "max_abs_scaled": float(f"{stats['max_abs_scaled']:.3g}")}

    with torch.no_grad():
        reference = graph(pixels).numpy()  # every row's first call is its warm-up, and checks its output
        # The torch rows run as the torch engine does (SDPA attention; the same seeded weights), each
        # precision on its own copy: casting `graph` and back would round the exported weights to bf16.
        engine_graph = build_vision_graph(config, attention="sdpa")
        row("torch", "fp32", "cpu", time_call(lambda g=engine_graph: g(pixels), repeat=repeat, warmup=0).median_s)
        # bf16 weights and activations, as the torch engine computes where `auto` takes it (native bf16)
        bf16, x_bf16 = engine_graph.to(torch.bfloat16), pixels.to(torch.bfloat16)  # in place: no second copy
        out = bf16(x_bf16).float().numpy()
        seconds = time_call(lambda g=bf16: g(x_bf16), repeat=repeat, warmup=0).median_s
        row("torch", "bf16", "cpu", seconds, **accuracy(out), native_bf16=native_bf16())
        if device == "cuda":
            gpu, x = bf16.to("cuda"), pixels.to("cuda", torch.bfloat16)
            row("torch", "bf16", "cuda", time_call(lambda g=gpu: g(x), repeat=repeat, device="cuda").median_s)
            del gpu
        del engine_graph, bf16

    with tempfile.TemporaryDirectory(prefix="vlmcap-bench-") as tmp:
        work = Path(tmp)
        export_onnx(graph, pixels, work / "traced.onnx", config.export.opset)
        del graph  # its weights, before ONNX Runtime and OpenVINO load theirs
        feed = {INPUT_NAME: pixels.numpy()}
        for precision in precisions:
            path = work / f"{precision}.onnx"
            convert_precision(work / "traced.onnx", path, precision)  # type: ignore[arg-type]
            start = time.perf_counter()
            runs = fuse_into(path, work / f"fused-{precision}", precision)  # as the engine runs it (cached there)
            fuse_s = time.perf_counter() - start
            start = time.perf_counter()
            session = create_session(runs, providers)  # ONNX Runtime's own fusions happen here
            session_s = time.perf_counter() - start
            out = session.run(None, feed)[0]
            seconds = time_call(lambda s=session: s.run(None, feed), repeat=repeat, warmup=0).median_s
            provider = session.get_providers()[0].replace("ExecutionProvider", "").lower()
            size_mb = round(sum(p.stat().st_size for p in work.glob(f"{precision}.onnx*")) / 1e6, 1)
            row(
                "onnxruntime",
                precision,
                provider,
                seconds,
                **accuracy(out),
                file_mb=size_mb,
                open_s=round(session_s, 2),
                fused_once_s=round(fuse_s, 1) if runs != path else None,
            )
            del session
        if importlib.util.find_spec("openvino") is not None:
            for precision in openvino_precisions:
                cache = work / f"openvino-cache-{precision}"
                label, seconds, out, opened = _openvino_run(work / "traced.onnx", precision, cache, feed, repeat)
                row("openvino", label, "cpu", seconds, **accuracy(out), native_bf16=native_bf16(), **opened)
    torch_fp32 = rows[0]["frames_per_s"]
    for r in rows:
        r["speedup_vs_torch_fp32"] = round(r["frames_per_s"] / torch_fp32, 2)
    return rows


def _openvino_run(
    path: Path, precision: str, cache: Path, feed: dict[str, Any], repeat: int
) -> tuple[str, float, Any, dict[str, Any]]:
    """OpenVINO on the fp32 graph as the engine compiles it: (label, seconds per call, output, what
    compiling cost cold and again from its cache)."""
    from vlmcap.onnx.openvino_model import compile_onnx, computed_precision, loaded_from_cache

    start = time.perf_counter()
    compiled = compile_onnx(path, precision, usable_cpus(), cache)
    open_s = time.perf_counter() - start
    request = compiled.create_infer_request()
    inputs = dict(enumerate(feed.values()))
    out = request.infer(inputs)[0]
    seconds = time_call(lambda r=request: r.infer(inputs), repeat=repeat, warmup=0).median_s
    computed = computed_precision(compiled)
    del request, compiled
    start = time.perf_counter()
    again = compile_onnx(path, precision, usable_cpus(), cache)
    cached_open_s = round(time.perf_counter() - start, 2) if loaded_from_cache(again) else None
    # Without native bf16 OpenVINO computes f32 whatever the hint: the row says what it computed.
    label = precision if computed == precision else f"{precision} (computed {computed})"
    return label, seconds, out, {"open_s": round(open_s, 2), "cached_open_s": cached_open_s}
