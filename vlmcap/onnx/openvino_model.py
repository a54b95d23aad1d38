"""OpenVINO: an ONNX file compiled for a device, at a precision, with its compiled blob cached.

The OpenVINO vision engine and `vlmcap bench vision` both compile here (a core module, as
vlmcap/onnx/session.py is for ONNX Runtime), so the benchmark times what the engine runs. OpenVINO
reads the bundle's own standard-operator vision.onnx; no conversion step and no second file.

Intel GPUs and NPUs are other `device` names on the same path ("GPU", "NPU"); only "CPU" is tested.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vlmcap.environment import usable_cpus
from vlmcap.errors import BundleError, ConfigError
from vlmcap.storage.home import vlmcap_home

log = logging.getLogger(__name__)

OPENVINO_MISSING = "OpenVINO is not installed; pip install 'vlmcap[openvino]'"
# vlmcap's precision names -> OpenVINO's INFERENCE_PRECISION_HINT, and back.
HINTS = {"fp32": "f32", "bf16": "bf16"}
COMPUTED = {"f32": "fp32", "bf16": "bf16", "f16": "fp16"}


def import_openvino() -> Any:
    """The openvino module, or the one-line ConfigError (exit 2) that names the extra."""
    try:
        import openvino
    except ImportError:
        raise ConfigError(f"--vision-backend openvino: {OPENVINO_MISSING}") from None
    return openvino


def cache_dir(graph_id: str, device: str, precision: str) -> Path:
    """Where the compiled blob of one graph, device, precision and OpenVINO version is kept.

    OpenVINO's own cache key cannot be trusted to tell these apart (measured with openvino 2026.4.1,
    tests/engines/runtime/test_vision_openvino.py): it keys a file by its path, so a bundle exported
    again to the same folder reuses the old graph's blob and computes the old weights; and a blob
    compiled with the f32 hint is reused for a bf16 compile of the same file, which then returns
    only NaN. So every (graph, device, precision, version) gets its own folder, and `graph_id` is
    the content hash of the graph's files, never its path.
    """
    openvino = import_openvino()
    version = re.sub(r"[^A-Za-z0-9.]+", "_", openvino.get_version().split("-")[0])
    return vlmcap_home() / "cache" / "openvino" / f"{graph_id}-{device.lower()}-{precision}-ov{version}"


def compile_onnx(
    path: Path, precision: str, threads: int | None = None, cache: Path | None = None, device: str = "CPU"
) -> Any:
    """`path` compiled by OpenVINO for `device`, computing in `precision` (fp32 or bf16).

    The LATENCY hint: the vision stage runs one synchronous request per batch, so all threads serve
    that one request. THROUGHPUT splits the threads into streams that only pay with several requests
    in flight (docs/BATCH.md, "OpenVINO").

    On a CPU without native bf16 OpenVINO computes f32 whatever the hint (its CPU plugin drops an
    unsupported inference precision); `computed_precision` says what it chose.
    """
    openvino = import_openvino()
    config: dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
    }
    if device == "CPU":
        config["INFERENCE_NUM_THREADS"] = threads or usable_cpus()
    if cache is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            config["CACHE_DIR"] = str(cache)
        except OSError as e:  # a read-only home: compile every time, and go on
            log.warning("%s: cannot cache OpenVINO's compiled model (%s)", cache, e.strerror)
    try:
        # On a thread of its own: OpenVINO's CPU plugin installs an alternate signal stack on the
        # thread that compiles and later frees it (openvino 2026.4.1), after which a signal handled on
        # that thread (SIGALRM, SIGINT) runs on freed memory and kills the process with SIGSEGV.
        with ThreadPoolExecutor(1, thread_name_prefix="vlmcap-openvino-compile") as compiler:
            return compiler.submit(openvino.Core().compile_model, str(path), device, config).result()
    except RuntimeError as e:  # OpenVINO's errors: "Exception from <source>:<line>:" lines, then the reason
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        reason = next((line for line in lines if not line.startswith("Exception from")), "unknown error")
        raise BundleError(f"{path}: OpenVINO cannot compile it for {device} ({reason})") from None


def computed_precision(compiled: Any) -> str:
    """What the compiled model computes in: fp32 or bf16 (fp16 on devices that choose it)."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    return COMPUTED.get(hint, hint)


def loaded_from_cache(compiled: Any) -> bool:
    return bool(compiled.get_property("LOADED_FROM_CACHE"))
