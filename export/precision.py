"""Derive the shipped vision graph from the float32 export: fp32 as traced, fp16, or int8.

Every precision is standard ONNX: each node in the default domain, none of ONNX Runtime's
com.microsoft operators. TensorRT's ONNX parser (NVIDIA/TensorRT#1515), AMD MIGraphX
(ROCm/AMDMIGraphX#2760) and OpenVINO then load the bundle's own file. ONNX Runtime loses nothing: its
session applies its fusions itself when it opens the graph (docs/EXPORT.md, "A portable vision
graph"; at CLIP-L/336 on a CPU, fp32 within 3% of the offline-fused graph and int8 4% faster,
docs/PERFORMANCE.md).

All three keep float32 inputs and outputs, so engines feed the same pixel_values whatever the bundle
holds:
- fp32: the traced graph;
- fp16: every float weight and activation in half precision (for GPUs), casts only at the edges;
- int8: ONNX Runtime dynamic quantization of the MatMuls, int8 weights per output channel with
  activations quantized on the fly (for CPU edge boxes: no calibration set is needed).
"""

from __future__ import annotations

import collections
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import onnx

from vlmcap.errors import ExportError
from vlmcap.export.onnx_graph import EXTERNAL_DATA_THRESHOLD, save_onnx

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]
STANDARD_DOMAINS = ("", "ai.onnx")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's converters warn on the root logger (advice to pre-process before quantizing, and
    the like); those are expected here and drown real messages."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def nonstandard_operators(model: onnx.ModelProto) -> dict[str, int]:
    """`domain::op` -> count of every node outside the standard ONNX domain (subgraphs included)."""
    counts: collections.Counter[str] = collections.Counter()

    def visit(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            if node.domain not in STANDARD_DOMAINS:
                counts[f"{node.domain}::{node.op_type}"] += 1
            for attribute in node.attribute:
                for sub in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
                    visit(sub)

    visit(model.graph)
    return dict(counts)


def _save_standard(model: onnx.ModelProto, dst: Path, threshold: int) -> None:
    """Save `model`, refusing any operator outside standard ONNX: the bundle promises a portable graph."""
    foreign = nonstandard_operators(model)
    if foreign:
        found = ", ".join(f"{op} x{n}" for op, n in sorted(foreign.items()))
        raise ExportError(f"{dst.name}: the converted graph holds non-standard operators ({found})")
    save_onnx(model, dst, threshold)


def convert_precision(src: Path, dst: Path, precision: Precision, threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Write `src` (float32, standard ONNX) to `dst` at `precision`, still standard ONNX."""
    if precision == "fp32":
        _save_standard(onnx.load(str(src)), dst, threshold)
    elif precision == "fp16":
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(onnx.load(str(src)))
        with _quiet_root_logger():
            model.convert_float_to_float16(keep_io_types=True, use_symbolic_shape_infer=True)
        model.topological_sort()  # the input casts are appended last; ONNX's checker wants them first
        _save_standard(model.model, dst, threshold)
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = dst.with_name(dst.name + ".int8")
        with _quiet_root_logger():
            quantize_dynamic(
                str(src),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                # MatMuls only (standard DynamicQuantizeLinear + MatMulInteger; weights only, since
                # dynamic quantization defaults to MatMulConstBOnly): the encoder's and projector's
                # linear layers, where the time goes. Convolutions stay float: ConvInteger has no fast
                # CPU kernel in ONNX Runtime, and quantizing the C-Abstractor's convolutions took
                # CLIP-L/336 (3 layers) from 2.0 to 7.7 s per video and its min row cosine from
                # 0.99981 to 0.99852. The graph fused offline left them float too, by accident: ONNX
                # shape inference stopped at its com.microsoft operators, and the quantizer skips
                # tensors of unknown type.
                op_types_to_quantize=["MatMul"],
                use_external_data_format=src.with_name(src.name + ".data").exists(),
            )
        _save_standard(onnx.load(str(tmp)), dst, threshold)
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink()
    else:
        raise ValueError(f"unknown precision {precision!r}")
