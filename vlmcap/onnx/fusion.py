"""ONNX Runtime's transformer fusions, applied to a bundle's standard vision graph when ONNX Runtime
first opens it, and kept under `$VLMCAP_HOME/cache/onnxruntime/` (docs/EXPORT.md, "A portable vision
graph").

A bundle ships standard ONNX operators only, so that TensorRT, OpenVINO and any ONNX runtime load it
(NVIDIA/TensorRT#1515, ROCm/AMDMIGraphX#2760). ONNX Runtime's session fuses some patterns of such a
graph itself (GELU, scaled MatMuls), but not CLIP's attention or the residual Add into LayerNorm:
its transformer optimizer does those, into its own com.microsoft operators (Attention,
SkipLayerNormalization, QuickGelu). Run once per graph (by content) and ONNX Runtime version, checked
against the standard graph on one input, the fused copy is what ONNX Runtime runs; the bundle keeps
its portable file. An int8 graph is left as it is: its quantized MatMuls are fused when the session
opens (DynamicQuantizeMatMul), and the optimizer's patterns do not match them.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np

from vlmcap.metrics.closeness import VISION_TOLERANCE, row_cosines
from vlmcap.storage.files import temp_sibling
from vlmcap.storage.home import vlmcap_home

log = logging.getLogger(__name__)

FUSED_FILE = "vision.onnx"
PROTOBUF_LIMIT = 2**31 - 1  # larger graphs keep their weights in an external data file


def fused_graph(path: Path, graph_id: str, precision: str) -> Path:
    """The graph ONNX Runtime should open for the bundle's `path`: the fused copy (made and checked on
    first use), or `path` itself for an int8 graph, or when fusing fails or is not exact."""
    if precision == "int8":
        return path
    import onnxruntime

    folder = vlmcap_home() / "cache" / "onnxruntime" / f"{graph_id}-ort{onnxruntime.__version__}-fused"
    if (folder / FUSED_FILE).is_file():
        return folder / FUSED_FILE
    log.warning("%s: fusing it for ONNX Runtime (once; cached in %s)", path, folder.parent)
    return fuse_into(path, folder, precision)


def fuse_into(path: Path, folder: Path, precision: str) -> Path:
    """The fused copy of `path` made into the new folder `folder` and checked; `path` itself for an int8
    graph, or where the optimizer fails or its graph does not compute what the standard one does."""
    if precision == "int8":
        return path
    try:
        return _fuse(path, folder, precision)
    except Exception as e:  # the optimizer's own errors; the standard graph always runs
        log.warning("%s: ONNX Runtime's transformer fusions failed (%s); running the graph unfused", path, e)
        return path


def _fuse(path: Path, folder: Path, precision: str) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    # num_heads/hidden_size 0: read from the graph. opt_level 0: the optimizer's own Python fusions only,
    # provider-independent; the session adds its hardware-specific ones at every start.
    fused = optimize_model(str(path), model_type="clip", num_heads=0, hidden_size=0, opt_level=0, use_gpu=False)
    fused.topological_sort()
    if not any(op.domain == "com.microsoft" for op in fused.model.opset_import):
        fused.model.opset_import.add(domain="com.microsoft", version=1)  # where the fused operators live
    tmp = temp_sibling(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        external = fused.model.ByteSize() > PROTOBUF_LIMIT
        fused.save_model_to_file(str(tmp / FUSED_FILE), use_external_data_format=external)
        del fused
        if not _same_rows(path, tmp / FUSED_FILE, precision):
            log.warning("%s: the fused graph does not compute what it does; running it unfused", path)
            return path
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / FUSED_FILE


def _same_rows(standard: Path, fused: Path, precision: str) -> bool:
    """Whether both graphs give the same rows for one input, within the export's tolerance."""
    from vlmcap.onnx.session import create_session

    first = create_session(standard, exact=True)
    spec = first.get_inputs()[0]
    shape = [1 if not isinstance(d, int) else d for d in spec.shape]  # one video on the dynamic batch axis
    pixels = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    expected = first.run(None, {spec.name: pixels})[0]
    del first
    got = create_session(fused, exact=True).run(None, {spec.name: pixels})[0]
    tolerance = VISION_TOLERANCE[precision]
    if not np.isfinite(got).all():
        return False
    if tolerance.max_abs_scaled is not None:
        scaled = float(np.abs(expected - got).max()) / max(1.0, float(np.abs(expected).max()))
        return scaled <= tolerance.max_abs_scaled
    return float(row_cosines(expected, got).min()) >= (tolerance.min_cosine or 0.0)
