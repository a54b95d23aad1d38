"""ONNX Runtime's transformer fusions applied to a bundle's standard vision graph on first use
(vlmcap/onnx/fusion.py): made once per graph and ONNX Runtime version, checked, cached outside the
bundle; the bundle's own file stays standard ONNX."""

from __future__ import annotations

import numpy as np
import onnx

from vlmcap.bundle import load_bundle
from vlmcap.engines.runtime.vision import OnnxVisionEngine, vision_graph_id
from vlmcap.onnx.fusion import fuse_into, fused_graph
from vlmcap.onnx.session import create_session


def _domains(path) -> set[str]:
    return {node.domain for node in onnx.load(str(path), load_external_data=False).graph.node}


def test_the_standard_graph_runs_fused_from_a_cache(tiny_bundle, vlmcap_home, tmp_path) -> None:
    bundle = load_bundle(tiny_bundle)
    standard = tiny_bundle / bundle.manifest.vision.file
    assert _domains(standard) <= {"", "ai.onnx"}
    fused = fused_graph(standard, vision_graph_id(bundle), "fp32")
    assert fused.is_relative_to(vlmcap_home / "cache" / "onnxruntime") and "com.microsoft" in _domains(fused)
    assert fused_graph(standard, vision_graph_id(bundle), "fp32") == fused  # made once
    pixels = np.random.default_rng(1).standard_normal((2, *create_session(standard).get_inputs()[0].shape[1:]))
    feed = {"pixel_values": pixels.astype(np.float32)}
    expected = create_session(standard).run(None, feed)[0]
    assert np.abs(create_session(fused).run(None, feed)[0] - expected).max() < 1e-4
    engine = OnnxVisionEngine(bundle)
    assert np.abs(engine.encode(feed["pixel_values"]) - expected).max() < 1e-4
    assert _domains(standard) <= {"", "ai.onnx"}  # the bundle keeps its portable file

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a graph")
    assert fuse_into(broken, tmp_path / "out", "fp32") == broken  # the standard graph always runs
    assert fuse_into(standard, tmp_path / "int8", "int8") == standard
