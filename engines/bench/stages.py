"""`vlmcap bench stages`: vision, LLM prefill and LLM decode throughput of a preset, against the roofline.

PyTorch, random weights at the preset's real shapes, the sequence layout of a real request
(T*M vision rows + the prompt's text tokens). FLOPs are counted by `torch.utils.flop_counter`
on the actual forward pass, not estimated, so "fraction of peak" means achieved / peak FLOP/s.
Decode is memory-bound: each step reads every weight once, so it is also reported as achieved
bytes/s against the memory bandwidth. Peaks are known for the GPUs listed in `GPU_PEAKS`; on CPU
the fractions are left out (a CPU's peak depends on its vector units and clocks).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlmcap.bench.timer import time_call
from vlmcap.config import VlmcapConfig
from vlmcap.embeddings import EmbeddedBatch
from vlmcap.environment import usable_cpus
from vlmcap.generation import Generation, GenerationParams, generate_from_embeds

# Dense bf16 tensor-core FLOP/s (no sparsity) and HBM bandwidth, from NVIDIA's datasheets.
GPU_PEAKS = {
    "H200": {"bf16_flops": 989e12, "bytes_per_s": 4.8e12},
    "H100 PCIe": {"bf16_flops": 756e12, "bytes_per_s": 2.0e12},
    "H100": {"bf16_flops": 989e12, "bytes_per_s": 3.35e12},  # SXM / HBM3
    "A100": {"bf16_flops": 312e12, "bytes_per_s": 2.0e12},
}


def gpu_peaks(device: torch.device) -> dict[str, float] | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, peaks in GPU_PEAKS.items():  # most specific first
        if key in name:
            return {**peaks, "device": name}
    return None


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def bench_stages(
    config: VlmcapConfig,
    device: str = "cpu",
    batch_videos: int = 1,
    prompt_tokens: int = 40,
    new_tokens: int = 16,
    repeat: int = 2,
) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmcap.presets import resolve_model_source
    from vlmcap.vision_graph import build_vision_graph

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.set_num_threads(usable_cpus())
    torch.manual_seed(config.seed)
    peaks = gpu_peaks(dev)
    rows: dict[str, Any] = {}

    with torch.no_grad():
        graph = build_vision_graph(config, attention="sdpa").to(dev, dtype)
        size = graph.vision.image_size
        frames = batch_videos * config.video.num_frames
        pixels = torch.randn(batch_videos, config.video.num_frames, 3, size, size, device=dev, dtype=dtype)
        flops = _flops(lambda: graph(pixels))
        seconds = time_call(lambda: graph(pixels), repeat=repeat, device=dev).median_s
        rows["vision"] = _row(frames / seconds, "frames/s", flops / seconds, None, peaks, frames=frames)
        tokens_per_video = graph.projector.tokens_per_frame * config.video.num_frames
        graph.cpu()  # free accelerator memory for the LLM

        source = resolve_model_source(config.model.llm.model, seed=config.seed)
        hf_config = AutoConfig.from_pretrained(source.path, trust_remote_code=False)
        llm = AutoModelForCausalLM.from_config(hf_config, dtype=dtype).to(dev).eval()
        hidden = hf_config.hidden_size
        length = tokens_per_video + prompt_tokens
        embeds = torch.randn(batch_videos, length, hidden, device=dev, dtype=dtype) * 0.02
        mask = torch.ones(batch_videos, length, dtype=torch.long, device=dev)
        prefill_tokens = batch_videos * length
        flops = _flops(lambda: llm(inputs_embeds=embeds, attention_mask=mask))
        seconds = time_call(lambda: llm(inputs_embeds=embeds, attention_mask=mask), repeat=repeat, device=dev).median_s
        rows["llm_prefill"] = _row(
            prefill_tokens / seconds, "tokens/s", flops / seconds, None, peaks, tokens=prefill_tokens
        )

        # Generation as the engines run it (vlmcap/generation.py), with no stop token: every row
        # decodes `new_tokens`, whatever the random weights predict.
        request = EmbeddedBatch(embeds, mask, None, [length] * batch_videos, "left")
        params = GenerationParams(max_new_tokens=new_tokens, stop_token_ids=[])
        generated: list[Generation] = []

        def generate() -> None:
            generated[:] = generate_from_embeds(llm, request, params, pad_token_id=0)

        total = time_call(generate, repeat=repeat, device=dev).median_s
        decode_s = max(total - seconds, 1e-9)  # generate = one prefill + (tokens - 1) decode steps
        steps = max(len(g.token_ids) for g in generated) - 1
        weight_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
        rows["llm_decode"] = _row(
            batch_videos * steps / decode_s,
            "tokens/s",
            None,
            weight_bytes * steps / decode_s,
            peaks,
            batch=batch_videos,
            weights_gb=round(weight_bytes / 1e9, 2),
        )
    return {
        "device": peaks["device"] if peaks else dev.type,
        "dtype": str(dtype).removeprefix("torch."),
        "vision_model": config.model.vision.model,
        "llm": config.model.llm.model,
        "projector": config.model.projector.kind,
        "tokens_per_video": tokens_per_video,
        "prompt_tokens": prompt_tokens,
        "batch_videos": batch_videos,
        "stages": rows,
    }


def _row(
    rate: float, unit: str, flops_per_s: float | None, bytes_per_s: float | None, peaks, **extra
) -> dict[str, Any]:
    row: dict[str, Any] = {"rate": round(rate, 2), "unit": unit, **extra}
    if flops_per_s is not None:
        row["tflops_per_s"] = round(flops_per_s / 1e12, 4)
        if peaks:
            row["fraction_of_peak_flops"] = round(flops_per_s / peaks["bf16_flops"], 3)
    if bytes_per_s is not None:
        row["weight_gb_per_s"] = round(bytes_per_s / 1e9, 2)
        if peaks:
            row["fraction_of_peak_bandwidth"] = round(bytes_per_s / peaks["bytes_per_s"], 3)
    return row
