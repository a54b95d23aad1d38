"""The OpenVINO vision engine (engines/runtime/vision.py, vlmcap/onnx/openvino_model.py) on the tiny bundle: its
rows against ONNX Runtime's, its compiled-model cache, the one-line error without the extra, and bundles
exported before vision.onnx was standard ONNX (issue 34)."""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from vlmcap.bundle import load_bundle
from vlmcap.bundle.hashing import bundle_id, sha256_file
from vlmcap.engines.runtime.vision import OnnxVisionEngine, OpenVinoVisionEngine, pixel_batch
from vlmcap.environment import native_bf16
from vlmcap.errors import ConfigError
from vlmcap.export.verify import compare
from vlmcap.metrics.closeness import VISION_TOLERANCE, row_cosines


def assert_fp32_close(reference: np.ndarray, rows: np.ndarray) -> None:
    assert compare(reference, rows)["max_abs_scaled"] <= VISION_TOLERANCE["fp32"].max_abs_scaled


def test_fp32_rows_equal_onnx_runtime_and_bf16_rows_stay_close(bundle, decoded_frames) -> None:
    frames = decoded_frames(bundle, 3)
    reference = OnnxVisionEngine(bundle).encode_frames(frames)
    fp32 = OpenVinoVisionEngine(bundle, "fp32", 1, batch_size=3)
    assert fp32.name == "openvino (CPU, fp32)"
    rows = fp32.encode_frames(frames)
    assert rows.dtype == np.float32 and rows.shape == reference.shape
    assert_fp32_close(reference, rows)
    np.testing.assert_array_equal(fp32.encode(pixel_batch(frames, bundle.manifest.image.spec())), rows)
    # Compiled after fp32 in the same home: OpenVINO's own cache would hand bf16 the f32 blob (all NaN).
    bf16 = OpenVinoVisionEngine(bundle, "bf16", 1, batch_size=3)
    assert bf16.name == f"openvino (CPU, {'bf16' if native_bf16() else 'fp32'})"  # OpenVINO's f32 fallback
    rows = bf16.encode_frames(frames)
    assert np.isfinite(rows).all() and row_cosines(reference, rows).min() >= VISION_TOLERANCE["bf16"].min_cosine


def relist(bundle: Path, **changes) -> None:
    """bundle.json with every file listed as it is now and its id recomputed (a bundle as export wrote it)."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    for section, fields in changes.items():
        manifest[section].update(fields)
    files = sorted(p for p in bundle.rglob("*") if p.is_file() and p.name != "bundle.json")
    manifest["files"] = {
        p.relative_to(bundle).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files
    }
    manifest["id"] = bundle_id(manifest)
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def test_the_compiled_model_is_cached_per_graph_and_precision_and_reused(
    bundle, tmp_path, monkeypatch, decoded_frames
) -> None:
    monkeypatch.setenv("VLMCAP_HOME", str(tmp_path / "home"))
    cache = tmp_path / "home" / "cache" / "openvino"
    frames = decoded_frames(bundle, 2)
    first = OpenVinoVisionEngine(bundle, "fp32", 1)
    assert not first.loaded_from_cache
    (folder,) = cache.iterdir()
    assert list(folder.glob("*.blob"))
    again = OpenVinoVisionEngine(bundle, "fp32", 1)
    assert again.loaded_from_cache
    np.testing.assert_array_equal(again.encode_frames(frames), first.encode_frames(frames))
    OpenVinoVisionEngine(bundle, "bf16", 1)
    assert len(list(cache.iterdir())) == 2

    # Exported again to the same folder: OpenVINO's own key (the file's path) would serve the old blob.
    changed = tmp_path / "bundle"
    shutil.copytree(bundle.root, changed)
    graph = onnx.load(str(changed / "vision.onnx"))
    weight = max(graph.graph.initializer, key=lambda t: len(t.raw_data))
    weight.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(graph, str(changed / "vision.onnx"))
    relist(changed)
    changed_bundle = load_bundle(changed)
    recompiled = OpenVinoVisionEngine(changed_bundle, "fp32", 1)
    assert not recompiled.loaded_from_cache and len(list(cache.iterdir())) == 3
    assert_fp32_close(OnnxVisionEngine(changed_bundle).encode_frames(frames), recompiled.encode_frames(frames))


def test_without_the_extra_openvino_is_one_line_before_any_work(tiny_bundle, six_videos, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets where it is not installed
    with pytest.raises(ConfigError, match=r"^--vision-backend openvino: OpenVINO is not installed; pip install "):
        OpenVinoVisionEngine(load_bundle(tiny_bundle))

    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['openvino'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "captions.jsonl"
    command = [sys.executable, "-m", "vlmcap.cli", "batch", str(six_videos), "--engine", str(tiny_bundle)]
    result = subprocess.run(
        [*command, "--vision-backend", "openvino", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.endswith("OpenVINO is not installed; pip install 'vlmcap[openvino]'")
    assert not out.exists()


def test_a_bundle_from_before_the_standard_graph_still_loads_and_runs(bundle, tmp_path, decoded_frames) -> None:
    """Bundles exported before issue 34 hold ONNX Runtime's fused com.microsoft operators and
    `export.optimize` in bundle.json: both engines still run them, and `inspect` says what they hold."""
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoConfig

    from vlmcap.config.loading import load_config
    from vlmcap.export.describe import describe_bundle
    from vlmcap.presets import resolve_model_source

    old = tmp_path / "old"
    shutil.copytree(bundle.root, old)
    vision = load_config(old / "reference" / "config.yaml").model.vision.model
    clip = AutoConfig.from_pretrained(resolve_model_source(vision).path)
    clip = getattr(clip, "vision_config", clip)
    fused = optimize_model(  # what export did before: ONNX Runtime's offline transformer fusion
        str(old / "vision.onnx"), "clip", clip.num_attention_heads, clip.hidden_size, opt_level=0, use_gpu=False
    )
    fused.topological_sort()
    fused.model.opset_import.add(domain="com.microsoft", version=1)
    onnx.save(fused.model, str(old / "vision.onnx"))
    ops = {n.op_type for n in fused.model.graph.node if n.domain == "com.microsoft"}
    assert {"Attention", "SkipLayerNormalization", "QuickGelu"} <= ops
    relist(old, vision={"fused_ops": {"Attention": 3}}, export={"optimize": True})

    loaded = load_bundle(old)
    frames = decoded_frames(bundle, 2)
    reference = OnnxVisionEngine(bundle).encode_frames(frames)
    for engine in (OnnxVisionEngine(loaded), OpenVinoVisionEngine(loaded, "fp32", 1)):
        assert_fp32_close(reference, engine.encode_frames(frames))
    assert "ONNX Runtime operators: Attention x3" in describe_bundle(loaded.manifest, verified=True)
    assert "standard ONNX operators" in describe_bundle(bundle.manifest, verified=True)


def _signal_stack() -> tuple[int, int, int]:
    """The calling thread's alternate signal stack (sigaltstack(2)): address, flags, size."""

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    stack = Stack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack)) == 0
    return stack.sp or 0, stack.flags, stack.size


def test_compiling_leaves_the_callers_signal_stack_alone(bundle, decoded_frames) -> None:
    # OpenVINO's CPU plugin puts an alternate signal stack on the thread that compiles and frees it
    # later: compiled on the caller's thread, the next SIGALRM (scripts/gpu-check's section budget)
    # ran on freed memory and the process died with SIGSEGV.
    before = _signal_stack()
    for precision in ("fp32", "bf16"):
        engine = OpenVinoVisionEngine(bundle, precision, 1)
        engine.encode_frames(decoded_frames(bundle, 1))
        assert _signal_stack() == before
        del engine
    gc.collect()
    caught = []
    previous = signal.signal(signal.SIGUSR1, lambda *_: caught.append(True))
    try:
        signal.raise_signal(signal.SIGUSR1)  # handled on the stack the thread had all along
    finally:
        signal.signal(signal.SIGUSR1, previous)
    assert caught == [True] and _signal_stack() == before
