"""vision.onnx: the vision graph (vlmcap.model.vision_graph) traced to ONNX, with external data when large.

pixel_values (B, T, 3, H, W) float32 -> vision_embeds (B, T*M, Dl) float32, B dynamic. The graph
is exported in float32 with eager attention (plain MatMul/Softmax: standard ONNX at every opset,
which ONNX Runtime fuses when its session opens); lower precisions are derived from it.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import onnx
import torch

from vlmcap.model.vision_graph import INPUT_NAME, OUTPUT_NAME, VisionGraph

log = logging.getLogger(__name__)

EXTERNAL_DATA_THRESHOLD = 2**31 - 2**24  # protobuf's 2 GiB limit, with room for the graph itself


def export_onnx(
    graph: VisionGraph,
    example: torch.Tensor,
    path: Path,
    opset: int,
    external_data_threshold: int = EXTERNAL_DATA_THRESHOLD,
) -> None:
    """Trace `graph` with `example` (B, T, 3, H, W) and write it to `path` (+ `path.data` if large)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(path.name + ".export")
    raw.mkdir(exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings flag Python ints taken from shapes; B stays symbolic because of dynamic_axes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph,
            (example,),
            str(raw / "model.onnx"),
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
        )
    model = onnx.load(str(raw / "model.onnx"))
    save_onnx(model, path, external_data_threshold)
    shutil.rmtree(raw)


def save_onnx(model: onnx.ModelProto, path: Path, external_data_threshold: int = EXTERNAL_DATA_THRESHOLD) -> None:
    """Save as one file, or with all weights in `<name>.data` beside it when the graph is too big for one."""
    for stale in (path, path.with_name(path.name + ".data")):
        stale.unlink(missing_ok=True)
    size = sum(t.ByteSize() for t in model.graph.initializer)
    external = size > external_data_threshold
    onnx.save_model(
        model,
        str(path),
        save_as_external_data=external,
        all_tensors_to_one_file=True,
        location=path.name + ".data",
        size_threshold=0 if external else 1024,
    )
    log.info("wrote %s (%.1f MB of weights%s)", path, size / 1e6, ", external data" if external else "")
