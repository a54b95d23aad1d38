"""Decoded frames -> vision rows through the engines' staging buffer (engines/runtime/frame_staging.py).

The CPU runs the same functions a GPU does: the buffer is written in place, the handoff is
`Tensor.to` (the identity here, the one host->device copy there), and the rows must equal the old
path's, `encode(pixel_batch(...))`, exactly in float32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmcap.config.schema import BatchConfig
from vlmcap.engines.runtime.engines import Engines
from vlmcap.engines.runtime.vision import OnnxVisionEngine, OpenVinoVisionEngine, TorchVisionEngine, pixel_batch
from vlmcap.model.generation import GenerationParams

ENGINES = {"onnx": OnnxVisionEngine, "torch": TorchVisionEngine.from_bundle, "openvino": OpenVinoVisionEngine}


def opened(bundle, engine) -> Engines:
    return Engines(bundle, engine, None, GenerationParams(max_new_tokens=1, stop_token_ids=[]))


@pytest.mark.parametrize("kind", list(ENGINES))
def test_staged_rows_equal_the_old_path_batch_after_batch_with_one_buffer_and_one_transfer_each(
    bundle, kind, monkeypatch, decoded_frames
) -> None:
    engine = ENGINES[kind](bundle, batch_size=3)
    model = opened(bundle, engine)
    spec = bundle.manifest.image.spec()
    batches = [decoded_frames(bundle, 3, seed=1), decoded_frames(bundle, 3, seed=2), decoded_frames(bundle, 1, seed=3)]
    expected = [model.encode(pixel_batch(frames, spec)) for frames in batches]
    pointer = engine.staging.buffer.data_ptr()

    def no_stack(*args, **kwargs):
        raise AssertionError("frames must be written into the staging buffer, not stacked")

    monkeypatch.setattr(np, "stack", no_stack)
    for n, (frames, rows) in enumerate(zip(batches, expected, strict=True), start=1):
        got = model.encode_frames(frames)
        assert got.dtype == np.float32
        assert got.shape == (len(frames), bundle.manifest.tokens_per_video, bundle.manifest.llm.hidden_size)
        np.testing.assert_array_equal(got, rows)  # the last batch is partial: 1 of 3 slots
        assert engine.staging.transfers == n
    assert engine.staging.buffer.data_ptr() == pointer
    assert engine.staging.allocations == 1 and engine.staging.capacity == 3


def test_without_a_batch_size_the_buffer_is_sized_by_the_first_batch_and_grows_to_fit(bundle, decoded_frames) -> None:
    engine = TorchVisionEngine.from_bundle(bundle)
    assert engine.staging.capacity == 0
    spec = bundle.manifest.image.spec()
    for size, capacity in ((1, 1), (3, 3), (2, 3)):
        frames = decoded_frames(bundle, size, seed=size)
        np.testing.assert_array_equal(engine.encode_frames(frames), engine.encode(pixel_batch(frames, spec)))
        assert engine.staging.capacity == capacity
    assert engine.staging.allocations == 2 and engine.staging.transfers == 3


def test_the_buffer_waits_for_a_batch_size_and_pinning_needs_cuda(bundle) -> None:
    from vlmcap.engines.runtime.frame_staging import FrameStaging

    assert OnnxVisionEngine(bundle).staging.buffer is None  # sized by the first batch
    staging = FrameStaging(
        bundle.manifest.video.num_frames, bundle.manifest.image.spec(), host_normalize=False, pinned=True, capacity=2
    )
    assert staging.pinned == staging.buffer.is_pinned() == torch.cuda.is_available()


@pytest.mark.parametrize("kind", list(ENGINES))
@pytest.mark.parametrize("problem", ["frames", "size", "dtype", "empty"])
def test_a_video_of_the_wrong_shape_is_one_clear_error(bundle, kind, problem, decoded_frames) -> None:
    engine = ENGINES[kind](bundle, batch_size=2)
    frames = decoded_frames(bundle, 2)
    expected = (bundle.manifest.video.num_frames, *bundle.manifest.image.size, 3)
    if problem == "frames":
        frames[1] = frames[1][:-1]
    elif problem == "size":
        frames[1] = frames[1][:, 1:]
    elif problem == "dtype":
        frames[1] = frames[1].astype(np.float32)
    else:
        frames = []
    with pytest.raises(ValueError) as raised:
        opened(bundle, engine).encode_frames(frames)
    message = str(raised.value)
    assert "\n" not in message
    if problem == "empty":
        assert "empty" in message
    else:
        assert message.startswith("video 1 of the batch") and f"expected {expected} uint8" in message


def test_an_fp16_graph_takes_the_same_staged_float32_input(bundle, tmp_path, decoded_frames) -> None:
    """fp16 bundles keep float32 I/O (export/precision.py): the staged buffer feeds them unchanged."""
    from vlmcap.export.precision import convert_precision
    from vlmcap.export.verify import VISION_TOLERANCE, row_cosines
    from vlmcap.onnx.session import create_session

    fp16 = tmp_path / "vision-fp16.onnx"
    convert_precision(bundle.root / bundle.manifest.vision.file, fp16, "fp16")
    engine = OnnxVisionEngine(bundle, batch_size=2)
    frames = decoded_frames(bundle, 2)
    reference = engine.encode_frames(frames)
    engine.session = create_session(fp16)
    rows = engine.encode_frames(frames)
    assert rows.dtype == np.float32 and engine.staging.allocations == 1 and engine.staging.transfers == 2
    assert row_cosines(reference, rows).min() >= VISION_TOLERANCE["fp16"].min_cosine


def test_the_vision_engine_is_warmed_up_while_the_llm_engine_starts(bundle) -> None:
    settings = BatchConfig(vision_backend="torch", vision_precision="fp32", llm_backend="transformers", vision_batch=2)
    model = Engines.open(bundle, settings, GenerationParams(max_new_tokens=1, stop_token_ids=[]))
    assert model.llm is not None
    assert model.vision.staging.transfers == 1  # one call on a black video, before any real one
    assert model.vision.staging.allocations == 1  # in the buffer the run's calls use
