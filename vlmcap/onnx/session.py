"""ONNX Runtime sessions: which execution providers, how many threads.

Export verification, the vision engine and the benchmarks all open sessions here (a core module,
so the export and engine stages share it without importing each other), so a graph is checked
with the same providers and settings it later runs with.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from vlmcap.environment import AUTO_ORT_PROVIDERS, usable_cpus
from vlmcap.errors import ConfigError

PROVIDER_ALIASES = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


def pick_providers(requested: Sequence[str] | None = None) -> list[str]:
    """Installed providers in preference order; `requested` (aliases or full names) narrows them."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    if not requested:
        return [p for p in AUTO_ORT_PROVIDERS if p in available]
    chosen = []
    for name in requested:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if full not in available:
            raise ConfigError(
                f"ONNX Runtime provider {name!r} is not installed here (available: {', '.join(available)})"
            )
        chosen.append(full)
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")  # ops a GPU provider lacks fall back to CPU
    return chosen


def create_session(path: Path, providers: Sequence[str] | None = None, threads: int | None = None, exact: bool = False):
    """An InferenceSession on `path` with the picked providers.

    `exact` turns off TF32 in the CUDA provider (on by default on Ampere and newer), so float32
    graphs compute in float32: export verification compares them with PyTorch at 1e-4.

    On CPU, intra-op threads default to the CPUs this process may use and inter-op parallelism
    is off: one large graph per call gains nothing from running branches concurrently, and more
    threads than cores only adds contention with the decode workers.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads or usable_cpus()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # warnings about unused initializers etc. are not the user's business
    chosen: list = pick_providers(providers)
    if exact:
        chosen = [(p, {"use_tf32": 0}) if p == "CUDAExecutionProvider" else p for p in chosen]
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=chosen)
