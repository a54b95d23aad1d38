"""Vision engines: pixel_values (B, T, 3, H, W) float32 -> vision rows (B, T*M, Dl) float32.

`OnnxVisionEngine` runs the bundle's vision.onnx (what production uses); `TorchVisionEngine`
rebuilds the encoder + trained projector in PyTorch from the bundle's reference/ copy of the run
(for checking the ONNX path, or where ONNX Runtime is missing). Both are constructed once and
then called per batch, like vLLM's `LLM`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vlmcap.bundle import REFERENCE_DIR, Bundle
from vlmcap.errors import BundleError, ConfigError
from vlmcap.run_dir import CONFIG_FILE
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import normalize


def pixel_batch(frames: Sequence[np.ndarray] | np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Decoded, already resized+cropped uint8 (T, H, W, 3) per video -> (B, T, 3, H, W) float32."""
    return normalize(np.stack(list(frames)), spec).numpy()


class VisionEngine(Protocol):
    name: str

    def encode(self, pixel_values: np.ndarray) -> np.ndarray: ...


class OnnxVisionEngine:
    def __init__(self, bundle: Bundle, providers: Sequence[str] | None = None, threads: int | None = None) -> None:
        from vlmcap.onnx_session import create_session

        vision = bundle.manifest.vision
        path = bundle.root / vision.file
        try:
            self.session = create_session(path, providers, threads)
        except ConfigError:
            raise
        except Exception as e:  # ONNX Runtime's own error types (InvalidProtobuf, Fail, ...) are not ours to list
            raise BundleError(f"{path}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.input_name = vision.input.name
        self.output_name = vision.output.name
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime ({self.provider.replace('ExecutionProvider', '')}, {vision.precision})"

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        pixel_values = np.ascontiguousarray(pixel_values, dtype=np.float32)
        if self.provider == "CPUExecutionProvider":
            return self.session.run([self.output_name], {self.input_name: pixel_values})[0]
        # GPU providers: bind the host buffer once and let ONNX Runtime copy it to the device itself,
        # instead of the default path's extra staging copies; results come back to host memory.
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, pixel_values)
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class TorchVisionEngine:
    def __init__(self, bundle: Bundle, device: str = "cpu", threads: int | None = None) -> None:
        import torch

        from vlmcap.config import load_config
        from vlmcap.vision_graph import build_vision_graph

        reference = bundle.root / REFERENCE_DIR
        config = load_config(reference / CONFIG_FILE)
        self.device = torch.device(device)
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(threads)
        self.dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.graph = build_vision_graph(config, reference, "sdpa").to(self.device, self.dtype)
        self.name = f"torch ({self.device.type}, {str(self.dtype).removeprefix('torch.')})"

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            x = torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device, self.dtype)
            return self.graph(x).float().cpu().numpy()
