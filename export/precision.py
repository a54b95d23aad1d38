"""Derive the shipped vision graph from the float32 export: operator fusion, then fp16 or int8.

All three precisions keep float32 inputs and outputs, so engines feed the same pixel_values
whatever the bundle holds:
- fp32: the exported graph (optionally fused);
- fp16: every float weight and activation in half precision (for GPUs), casts only at the edges;
- int8: ONNX Runtime dynamic quantization, int8 weights per output channel with activations
  quantized on the fly (for CPU edge boxes: no calibration set is needed).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import onnx

from vlmcap.export.onnx_graph import EXTERNAL_DATA_THRESHOLD, save_onnx

log = logging.getLogger(__name__)

Precision = Literal["fp32", "fp16", "int8"]


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's converters warn on the root logger about every tensor of a contrib op (whose
    type ONNX shape inference cannot know); those are expected here and drown real messages."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def fuse_transformer_ops(src: Path, dst: Path, num_heads: int, hidden_size: int, threshold: int) -> dict[str, int]:
    """ONNX Runtime's transformer optimizer (CLIP patterns: Attention, SkipLayerNorm, QuickGelu).

    opt_level=0 applies only the provider-independent Python fusions, so the graph stays portable
    between CPU and GPU providers. Returns the count of each fused operator.
    """
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(
        str(src), model_type="clip", num_heads=num_heads, hidden_size=hidden_size, opt_level=0, use_gpu=False
    )
    optimized.topological_sort()
    if not any(op.domain == "com.microsoft" for op in optimized.model.opset_import):
        optimized.model.opset_import.add(domain="com.microsoft", version=1)  # the fused ops live there
    save_onnx(optimized.model, dst, threshold)
    fused = ("Attention", "SkipLayerNormalization", "QuickGelu", "BiasGelu", "FastGelu", "LayerNormalization")
    counts = {op: 0 for op in fused}
    for node in optimized.model.graph.node:
        if node.op_type in counts:
            counts[node.op_type] += 1
    return {op: n for op, n in counts.items() if n}


def convert_precision(src: Path, dst: Path, precision: Precision, threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Write `src` (float32) to `dst` at `precision`."""
    if precision == "fp32":
        save_onnx(onnx.load(str(src)), dst, threshold)
    elif precision == "fp16":
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(onnx.load(str(src)))
        with _quiet_root_logger():
            model.convert_float_to_float16(keep_io_types=True, use_symbolic_shape_infer=True)
        save_onnx(model.model, dst, threshold)
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = dst.with_name(dst.name + ".int8")
        with _quiet_root_logger():
            quantize_dynamic(
                str(src),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=True,
                use_external_data_format=src.with_name(src.name + ".data").exists(),
                # Fused contrib ops (com.microsoft Attention) have no ONNX shape inference; their outputs are float.
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
        save_onnx(onnx.load(str(tmp)), dst, threshold)
        for leftover in tmp.parent.glob(tmp.name + "*"):
            leftover.unlink()
    else:
        raise ValueError(f"unknown precision {precision!r}")
