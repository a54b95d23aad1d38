"""Vision engines: pixel_values (B, T, 3, H, W) float32 -> vision rows (B, T*M, Dl) float32.

`OnnxVisionEngine` runs the bundle's vision.onnx (what production uses); `TorchVisionEngine`
rebuilds the encoder + trained projector in PyTorch from the bundle's reference/ copy of the run
(for checking the ONNX path, or where ONNX Runtime is missing); `OpenVinoVisionEngine` compiles the
same vision.onnx with OpenVINO (the `openvino` extra: bf16 on CPUs with AMX / AVX-512 BF16). Each is
constructed once and then called per batch, like vLLM's `LLM`.

`encode_frames` is the pipeline's entry: decoded uint8 frames go into the engine's reused staging
buffer (engines/runtime/frame_staging.py) and reach the device in one copy per batch. The torch engine
copies the uint8 bytes and normalises on the device; ONNX Runtime and OpenVINO normalise on the
host into a float32 buffer they read themselves. `encode` takes pixel_values already normalised
(callers that have them: benchmarks, tests).

Only CUDA machines run the GPU branches (pinned buffers, the asynchronous copy, ONNX Runtime's
IO binding); the CPU tests go through the same functions with `Tensor.to` as the identity and
ONNX Runtime's plain `run` on the staged array.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from vlmcap.bundle import REFERENCE_DIR, Bundle
from vlmcap.engines.runtime.frame_staging import FrameStaging
from vlmcap.environment import warn_if_bf16_emulated
from vlmcap.errors import BundleError, ConfigError
from vlmcap.storage.run_dir import CONFIG_FILE
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import normalize

log = logging.getLogger(__name__)


def pixel_batch(frames: Sequence[np.ndarray] | np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Decoded, already resized+cropped uint8 (T, H, W, 3) per video -> (B, T, 3, H, W) float32."""
    return normalize(np.stack(list(frames)), spec).numpy()


def vision_graph_id(bundle: Bundle) -> str:
    """The content hash of the bundle's vision graph (and its external data): what caches of a graph
    derived from it are keyed by, never its path (a bundle exported again into the same folder)."""
    vision = bundle.manifest.vision
    files = [vision.file] + ([vision.file + ".data"] if vision.external_data else [])
    return "-".join(bundle.manifest.files[name].sha256[:16] for name in files)


class VisionEngine(Protocol):
    name: str

    def encode(self, pixel_values: np.ndarray) -> np.ndarray: ...

    def encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray: ...


class OnnxVisionEngine:
    def __init__(
        self,
        bundle: Bundle,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        from vlmcap.onnx.fusion import fused_graph
        from vlmcap.onnx.session import create_session

        vision = bundle.manifest.vision
        path = bundle.root / vision.file
        if not vision.fused_ops:  # a standard graph (bundles before it shipped fused): fused once, cached
            path = fused_graph(path, vision_graph_id(bundle), vision.precision)
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
        # float32 whatever the graph's precision (fp16 graphs cast inside); the staging device stays
        # the CPU because ONNX Runtime copies the bound buffer to its own device.
        self.staging = FrameStaging(
            bundle.manifest.video.num_frames,
            bundle.manifest.image.spec(),
            host_normalize=True,
            pinned=self.provider != "CPUExecutionProvider",
            capacity=batch_size or 0,
        )
        self._staging_lock = threading.Lock()  # one buffer: batches from several threads take turns

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run(np.ascontiguousarray(pixel_values, dtype=np.float32))

    def encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded uint8 (T, h, w, 3) per video -> vision rows, through the staging buffer."""
        with self._staging_lock:
            return self._run(self.staging.to_device(self.staging.write(frames)).numpy())

    def _run(self, pixel_values: np.ndarray) -> np.ndarray:
        if self.provider == "CPUExecutionProvider":  # reads the array in place: no copy
            return self.session.run([self.output_name], {self.input_name: pixel_values})[0]
        # GPU providers (only on CUDA machines): bind the host buffer and let ONNX Runtime copy it to
        # the device itself, one copy (a direct DMA when the buffer is the pinned staging one),
        # instead of the default path's extra staging copies; results come back to host memory.
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, pixel_values)
        binding.bind_output(self.output_name, "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class TorchVisionEngine:
    """Encoder + projector in PyTorch, fed through a staging buffer. `precision` auto: bf16 on CUDA,
    float32 on a CPU (engines/runtime/engine_choice.py asks for bf16 where it is native and faster)."""

    def __init__(
        self,
        graph,
        num_frames: int,
        spec: ImageSpec,
        device: str = "cpu",
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> None:
        import torch

        self.device = torch.device(device)
        if precision == "auto":
            precision = "bf16" if self.device.type == "cuda" else "fp32"
        if precision == "bf16" and self.device.type == "cpu":
            warn_if_bf16_emulated("the torch vision engine")
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.graph = graph.to(self.device, self.dtype)
        self.name = f"torch ({self.device.type}, {str(self.dtype).removeprefix('torch.')})"
        # uint8 frames cross to the device (a quarter of float32's bytes) and are normalised there.
        self.staging = FrameStaging(
            num_frames,
            spec,
            host_normalize=False,
            pinned=self.device.type == "cuda",
            device=self.device,
            capacity=batch_size or 0,
        )
        self._staging_lock = threading.Lock()  # one buffer: batches from several threads take turns

    @classmethod
    def from_bundle(
        cls,
        bundle: Bundle,
        device: str = "cpu",
        threads: int | None = None,
        batch_size: int | None = None,
        precision: str = "auto",
    ) -> TorchVisionEngine:
        """The bundle's trained graph, rebuilt from its reference/ copy of the run."""
        import torch

        from vlmcap.config.loading import load_config
        from vlmcap.model.vision_graph import build_vision_graph

        if torch.device(device).type == "cpu" and threads:
            torch.set_num_threads(threads)
        reference = bundle.root / REFERENCE_DIR
        graph = build_vision_graph(load_config(reference / CONFIG_FILE), reference, "sdpa")
        manifest = bundle.manifest
        return cls(graph, manifest.video.num_frames, manifest.image.spec(), device, batch_size, precision)

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self._run(torch.from_numpy(np.ascontiguousarray(pixel_values)).to(self.device, self.dtype))

    def encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded uint8 (T, h, w, 3) per video -> vision rows, through the staging buffer."""
        import torch

        with self._staging_lock, torch.no_grad():
            raw = self.staging.to_device(self.staging.write(frames))
            # Normalised in float32, then cast: bf16 pixels equal `encode`'s (float32 from the host, cast).
            return self._run(self.staging.normalize(raw).to(self.dtype))

    def _run(self, pixels) -> np.ndarray:
        # The read-back synchronises the device, so the staging buffer's asynchronous copy is done
        # before the next batch writes into it.
        return self.graph(pixels).float().cpu().numpy()


class OpenVinoVisionEngine:
    """The bundle's vision.onnx compiled by OpenVINO (the `openvino` extra), on the CPU by default.

    `precision` auto is fp32, as for the torch engine on a CPU: bf16 is taken when asked for, or when
    engines/runtime/engine_choice.py measured it faster and checked it against float32. The compiled
    blob is cached under $VLMCAP_HOME/cache/openvino/ (vlmcap/onnx/openvino_model.py says how it is keyed),
    so only the first start of a bundle on a machine pays for compiling. Bundles exported before
    vision.onnx was standard ONNX (with ONNX Runtime's com.microsoft Attention, SkipLayerNormalization
    and QuickGelu) load too: OpenVINO's ONNX reader knows those operators.
    """

    def __init__(
        self,
        bundle: Bundle,
        precision: str = "auto",
        threads: int | None = None,
        batch_size: int | None = None,
        device: str = "CPU",
    ) -> None:
        from vlmcap.onnx.openvino_model import (
            cache_dir,
            compile_onnx,
            computed_precision,
            import_openvino,
            loaded_from_cache,
        )

        import_openvino()  # the one-line error naming the extra, before anything else
        vision = bundle.manifest.vision
        if precision == "auto":
            precision = "fp32"
        self.compiled = compile_onnx(
            bundle.root / vision.file, precision, threads, cache_dir(vision_graph_id(bundle), device, precision), device
        )
        self.loaded_from_cache = loaded_from_cache(self.compiled)
        self.precision = computed_precision(self.compiled)
        self.name = f"openvino ({device}, {self.precision})"
        if self.precision != precision:  # OpenVINO does not emulate bf16: it falls back to f32
            log.warning(
                "OpenVINO computes %s on this %s, not %s: it has no native %s",
                self.precision,
                device,
                precision,
                precision,
            )
        self._request = self.compiled.create_infer_request()
        self.staging = FrameStaging(
            bundle.manifest.video.num_frames,
            bundle.manifest.image.spec(),
            host_normalize=True,
            pinned=False,  # OpenVINO reads host memory; a GPU/NPU device copies it itself
            capacity=batch_size or 0,
        )
        self._lock = threading.Lock()  # one staging buffer and one infer request: batches take turns

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        with self._lock:
            return self._run(np.ascontiguousarray(pixel_values, dtype=np.float32))

    def encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded uint8 (T, h, w, 3) per video -> vision rows, through the staging buffer."""
        with self._lock:
            return self._run(self.staging.to_device(self.staging.write(frames)).numpy())

    def _run(self, pixel_values: np.ndarray) -> np.ndarray:
        # share_inputs: OpenVINO reads the staged array in place; the output is copied out, because
        # the request's own output memory is overwritten by the next batch.
        return self._request.infer({0: pixel_values}, share_inputs=True)[0]
