"""`vlmcap bench vision`: frames/s of the vision graph in PyTorch and in ONNX Runtime at each precision.

The graph is built from a config preset with its seeded random projector (no training run
needed), exported and derived exactly as `vlmcap export` does, and timed on the same frames.
Each ONNX row also reports its min row cosine against float32 PyTorch on those frames.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from vlmcap.bench.timer import time_call
from vlmcap.config import VlmcapConfig
from vlmcap.environment import usable_cpus
from vlmcap.export.onnx_graph import export_onnx
from vlmcap.export.precision import convert_precision, fuse_transformer_ops
from vlmcap.export.samples import sample_pixels
from vlmcap.export.verify import compare
from vlmcap.onnx_session import create_session
from vlmcap.presets import resolve_model_source
from vlmcap.video.image_spec import ImageSpec
from vlmcap.vision_graph import INPUT_NAME, build_vision_graph


def bench_vision(
    config: VlmcapConfig,
    precisions: Sequence[str] = ("fp32", "fp16", "int8"),
    batch_videos: int = 1,
    repeat: int = 3,
    device: str = "cpu",
    providers: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    torch.set_num_threads(usable_cpus())
    graph = build_vision_graph(config)
    vision = graph.vision
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

    with torch.no_grad():
        reference = graph(pixels).numpy()
        row("torch", "fp32", "cpu", time_call(lambda: graph(pixels), repeat=repeat).median_s)
        if device == "cuda":
            gpu = graph.to("cuda", torch.bfloat16)
            x = pixels.to("cuda", torch.bfloat16)

            row("torch", "bf16", "cuda", time_call(lambda: gpu(x), repeat=repeat, device="cuda").median_s)
            graph.to("cpu", torch.float32)

    with tempfile.TemporaryDirectory(prefix="vlmcap-bench-") as tmp:
        work = Path(tmp)
        export_onnx(graph, pixels, work / "traced.onnx", config.export.opset)
        cfg = vision.model.config
        fuse_transformer_ops(work / "traced.onnx", work / "fused.onnx", cfg.num_attention_heads, cfg.hidden_size, 2**62)
        feed = {INPUT_NAME: pixels.numpy()}
        for precision in precisions:
            path = work / f"{precision}.onnx"
            convert_precision(work / "fused.onnx", path, precision)  # type: ignore[arg-type]
            session = create_session(path, providers)
            out = session.run(None, feed)[0]
            stats = compare(reference, out)
            seconds = time_call(lambda s=session: s.run(None, feed), repeat=repeat).median_s
            provider = session.get_providers()[0].replace("ExecutionProvider", "").lower()
            size_mb = round(sum(p.stat().st_size for p in work.glob(f"{precision}.onnx*")) / 1e6, 1)
            row(
                "onnxruntime",
                precision,
                provider,
                seconds,
                min_cosine=round(stats["min_cosine"], 6),
                max_abs_scaled=float(f"{stats['max_abs_scaled']:.3g}"),
                file_mb=size_mb,
            )
            del session
    torch_fp32 = rows[0]["frames_per_s"]
    for r in rows:
        r["speedup_vs_torch_fp32"] = round(r["frames_per_s"] / torch_fp32, 2)
    return rows
