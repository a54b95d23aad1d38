"""`vlmcap bench stages`: vision, LLM prefill and LLM decode throughput of a preset, against the roofline.

PyTorch, random weights at the preset's real shapes, the sequence layout of a real request
(T*M vision rows + the prompt's text tokens). FLOPs are counted from the layers the forward pass
really calls (vlmcap/bench/flops.py: linears, convolutions, attention, the same on every torch
version), with torch's FlopCounterMode beside them as a cross-check where it works, so "fraction
of peak" means achieved / peak FLOP/s. Decode is timed step by step (one token per row against
the prefill's KV cache, synchronized around each step), never as `generate` minus a prefill,
which on a fast device subtracts two noisy numbers. It is memory-bound: each step reads every
weight once, so it is also reported as achieved bytes/s against the memory bandwidth. Peaks are
known for the GPUs listed in `GPU_PEAKS`; on CPU the fractions are left out (a CPU's peak depends
on its vector units and clocks).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from vlmcap.bench.flops import flops_with_cross_check
from vlmcap.bench.timer import synchronizer, time_call
from vlmcap.config.schema import VlmcapConfig
from vlmcap.environment import usable_cpus

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


def _decode_steps(llm, embeds: torch.Tensor, mask: torch.Tensor, steps: int, device: torch.device) -> list[float]:
    """Seconds of each of `steps` decode steps after one prefill: one new token per row, fed back
    through the KV cache, as an engine decodes (greedy; with random weights the tokens do not matter)."""
    sync = synchronizer(device)
    out = llm(inputs_embeds=embeds, attention_mask=mask, use_cache=True)
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    seconds = []
    for _ in range(steps):
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        sync()
        start = time.perf_counter()
        out = llm(input_ids=token, attention_mask=mask, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        sync()
        seconds.append(time.perf_counter() - start)
        cache = out.past_key_values
    return seconds


def bench_stages(
    config: VlmcapConfig,
    device: str = "cpu",
    batch_videos: int = 1,
    prompt_tokens: int = 40,
    new_tokens: int = 16,
    repeat: int = 2,
) -> dict[str, Any]:
    from transformers import AutoConfig, AutoModelForCausalLM

    from vlmcap.model.vision_graph import build_vision_graph
    from vlmcap.presets import resolve_model_source

    dev = torch.device(device)
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    torch.set_num_threads(usable_cpus())
    torch.manual_seed(config.seed)
    peaks = gpu_peaks(dev)
    rows: dict[str, Any] = {}
    # Materialized before no_grad: a preset made on first use (the tiny ones are pretrained) needs autograd.
    source = resolve_model_source(config.model.llm.model, seed=config.seed)
    resolve_model_source(config.model.vision.model, seed=config.seed)

    with torch.no_grad():
        graph = build_vision_graph(config, attention="sdpa").to(dev, dtype)
        size = graph.vision.image_size
        frames = batch_videos * config.video.num_frames
        pixels = torch.randn(batch_videos, config.video.num_frames, 3, size, size, device=dev, dtype=dtype)
        flops = flops_with_cross_check(lambda: graph(pixels))
        seconds = time_call(lambda: graph(pixels), repeat=repeat, device=dev).median_s
        rows["vision"] = _row(
            frames / seconds, "frames/s", flops["flops"] / seconds, None, peaks, frames=frames, **flops
        )
        tokens_per_video = graph.projector.tokens_per_frame * config.video.num_frames
        graph.cpu()  # free accelerator memory for the LLM

        hf_config = AutoConfig.from_pretrained(source.path, trust_remote_code=False)
        with dev:  # built where it runs: an 8B shape is ready on a GPU in seconds, not minutes on the CPU
            llm = AutoModelForCausalLM.from_config(hf_config, dtype=dtype).eval()
        hidden = hf_config.hidden_size
        length = tokens_per_video + prompt_tokens
        embeds = torch.randn(batch_videos, length, hidden, device=dev, dtype=dtype) * 0.02
        mask = torch.ones(batch_videos, length, dtype=torch.long, device=dev)
        prefill_tokens = batch_videos * length
        flops = flops_with_cross_check(lambda: llm(inputs_embeds=embeds, attention_mask=mask))
        seconds = time_call(lambda: llm(inputs_embeds=embeds, attention_mask=mask), repeat=repeat, device=dev).median_s
        rows["llm_prefill"] = _row(
            prefill_tokens / seconds, "tokens/s", flops["flops"] / seconds, None, peaks, tokens=prefill_tokens, **flops
        )

        step_s = sorted(_decode_steps(llm, embeds, mask, new_tokens, dev))
        median_step_s = step_s[len(step_s) // 2]
        weight_bytes = sum(p.numel() * p.element_size() for p in llm.parameters())
        rows["llm_decode"] = _row(
            batch_videos / median_step_s,
            "tokens/s",
            None,
            weight_bytes / median_step_s,
            peaks,
            batch=batch_videos,
            steps=len(step_s),
            step_ms={"median": round(median_step_s * 1e3, 3), "min": round(step_s[0] * 1e3, 3)},
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
