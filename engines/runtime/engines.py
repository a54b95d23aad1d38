"""A bundle's vision engine + LLM engine + prompt + tokenizer: pixel batches in, captions out.

The two stage methods, `encode` (vision) and `caption` (LLM), are what both drivers call: the
local threaded pipeline and the Ray Data operators.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import AutoTokenizer

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig, QualityConfig
from vlmcap.display_text import drop_cut_character
from vlmcap.engines.runtime.caption_quality import CaptionGuard, Quality, choose
from vlmcap.engines.runtime.llm import LLMEngine
from vlmcap.engines.runtime.llm_vllm import check_params_safe, check_vllm_can_spawn, vllm_spawn_problem
from vlmcap.engines.runtime.quant_support import check_vllm_can_serve, quant_scheme, vllm_quant_problem
from vlmcap.engines.runtime.vision import VisionEngine
from vlmcap.environment import usable_cpus
from vlmcap.errors import ConfigError, ModelError
from vlmcap.model.embeddings import EmbeddedBatch, build_inputs_embeds
from vlmcap.model.generation import Generation, GenerationParams
from vlmcap.model.prompt import PromptBuilder, PromptTokens
from vlmcap.model.text_rows import EmbeddingTable

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caption:
    text: str
    num_tokens: int  # generated, the stop token included
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens reached: the caption is cut)
    quality: Quality = field(default_factory=Quality)  # the guards' flags (engines/runtime/caption_quality.py)


def with_cpu_threads(settings: BatchConfig) -> BatchConfig:
    """`settings` with `cpu_threads` filled in (`cpu_threads_per_engine`) when it is not set."""
    if settings.cpu_threads is not None:
        return settings
    return settings.model_copy(update={"cpu_threads": cpu_threads_per_engine(settings.workers)})


def engine_threads(settings: BatchConfig, stage: str) -> int | None:
    """Threads of one model engine ("vision" or "llm"): its own setting, else `cpu_threads`."""
    return (settings.vision_threads if stage == "vision" else settings.llm_threads) or settings.cpu_threads


def cpu_threads_per_engine(decode_workers: int) -> int:
    """Threads for each of the two model engines when they share the CPUs with the decode workers.

    Every stage runs at once (that is the point of the pipeline), so threads beyond the cores only
    contend: on 2 cores, one thread each for ONNX Runtime and torch instead of two took the
    tiny-preset pipeline from 64 to 77-84 videos/s (docs/PERFORMANCE.md).
    """
    return max(1, (usable_cpus() - decode_workers) // 2)


def llm_seqs(settings: BatchConfig) -> int:
    """Sequences the LLM engine must hold at once: the streaming bound if set, else one batch."""
    return settings.max_inflight or settings.batch_size


def decodings(settings: BatchConfig, params: GenerationParams) -> list[GenerationParams]:
    """Every decoding a run may ask its LLM engine for: the run's, and the caption guards' retry."""
    quality = settings.quality
    return [params, params.overridden(quality.retry_generation)] if quality.retries else [params]


def open_vision_engine(bundle: Bundle, settings: BatchConfig) -> VisionEngine:
    """The vision engine, its staging buffer allocated once for `--vision-batch` videos."""
    from vlmcap.engines.runtime.vision import OnnxVisionEngine, TorchVisionEngine

    batch, threads = settings.vision_batch_size, engine_threads(settings, "vision")
    if settings.vision_backend == "torch":
        device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return TorchVisionEngine.from_bundle(bundle, device, threads, batch, settings.vision_precision)
    if settings.vision_backend == "openvino":
        from vlmcap.engines.runtime.vision import OpenVinoVisionEngine

        return OpenVinoVisionEngine(bundle, settings.vision_precision, threads, batch_size=batch)
    return OnnxVisionEngine(bundle, settings.providers, threads, batch_size=batch)


def vllm_problem(bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> str | None:
    """Why `auto` cannot take vLLM for this run before trying to start it (one sentence), or None: a
    decoding vLLM would refuse or crash on, no kernel for the bundle's quantization, an unguarded script."""
    try:
        for each in decodings(settings, params):
            check_params_safe(each)
    except ConfigError as e:
        return str(e)
    return vllm_quant_problem(quant_scheme(bundle), settings.vllm.dtype) or vllm_spawn_problem()


def open_llm_engine(
    bundle: Bundle, settings: BatchConfig, params: GenerationParams, max_prompt_len: int, max_seqs: int = 8
) -> LLMEngine:
    """vLLM or transformers; `auto` takes vLLM when it imports, starts and has a kernel for the bundle's
    quantization (engines/runtime/quant_support.py), transformers otherwise, and logs why."""
    from vlmcap.engines.runtime.llm_transformers import TransformersEngine

    backend, llm_threads = settings.llm_backend, engine_threads(settings, "llm")
    why_not_vllm = vllm_problem(bundle, settings, params) if backend == "auto" else None
    if backend == "vllm":  # `vlmcap batch` checked these before any work; other callers get here
        for each in decodings(settings, params):
            check_params_safe(each)
        check_vllm_can_serve(bundle, settings.vllm.dtype)
        check_vllm_can_spawn()
    if backend == "vllm" or (backend == "auto" and why_not_vllm is None):
        from vlmcap.engines.runtime.llm_vllm import VllmEngine

        try:
            seed = params.seed or 0
            return VllmEngine(bundle, settings.vllm, max_prompt_len, params.max_new_tokens, max_seqs, seed, llm_threads)
        except Exception as e:  # auto: any import or start-up failure falls back, with the reason
            if backend == "vllm":
                raise ModelError(f"vLLM could not start on {bundle.llm_dir}: {type(e).__name__}: {e}") from None
            why_not_vllm = f"vLLM unavailable ({type(e).__name__}: {e})"
    engine = TransformersEngine(bundle, settings.device, settings.vllm.dtype, llm_threads)
    if why_not_vllm:
        log.warning("%s; using the transformers engine", why_not_vllm)
        engine.name = f"{engine.name}; auto chose it: {why_not_vllm}"
    return engine


class Engines:
    """A run's model engines and what turns vision rows into captions (the Python API's `Captioner`,
    engines/api.py, is the front door that opens these for a user).

    `quality`: the caption guards and their retry; None checks nothing (the naive loop `vlmcap bench
    batch` measures against is what people run today: no guards)."""

    def __init__(
        self,
        bundle: Bundle,
        vision: VisionEngine,
        llm: LLMEngine | None,
        params: GenerationParams,
        quality: QualityConfig | None = None,
    ) -> None:
        self.bundle = bundle
        self.vision = vision
        self.llm = llm
        self.params = params
        quality = quality or QualityConfig(checks=[])
        self.guard = CaptionGuard(quality, params.stop_token_ids, bundle.manifest.prompt.placeholder)
        self.retry_params = params.overridden(quality.retry_generation)
        self.tokenizer = AutoTokenizer.from_pretrained(bundle.llm_dir, trust_remote_code=False)
        prompt = bundle.manifest.prompt
        self.prompts = PromptBuilder(self.tokenizer, prompt.default_prompt, prompt.system_prompt)
        llm = bundle.manifest.llm
        self.table = EmbeddingTable(bundle.llm_dir, llm.embed_tokens, llm.embed_scale)
        self.num_frames = bundle.manifest.video.num_frames

    @classmethod
    def open(cls, bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> Engines:
        """Start both engines; vLLM's context length is sized for the video tokens + the prompt + output."""
        engines = cls(bundle, open_vision_engine(bundle, settings), None, params, settings.quality)
        max_prompt_len = engines.max_prompt_len(settings.prompt)
        # An engine's first call prepares its kernels (2-3 s more than the next at CLIP-L on a CPU):
        # made while the LLM engine starts, not on the night's first video with the LLM waiting on it.
        warm_up = threading.Thread(target=engines.warm_up_vision, name="vlmcap-vision-warm-up", daemon=True)
        warm_up.start()
        try:
            engines.llm = open_llm_engine(bundle, settings, params, max_prompt_len, llm_seqs(settings))
        finally:
            warm_up.join()
        return engines

    def warm_up_vision(self) -> None:
        """One call of the vision engine on a black video (a failure here shows again on the first video)."""
        height, width = self.bundle.manifest.image.spec().output_hw
        try:
            self.vision.encode_frames([np.zeros((self.num_frames, height, width, 3), dtype=np.uint8)])
        except Exception as e:
            log.debug("vision warm-up: %s", e)

    @functools.lru_cache(maxsize=64)  # noqa: B019 -- one Engines per run; a handful of distinct prompts
    def prompt_tokens(self, prompt: str | None) -> PromptTokens:
        return self.prompts.encode(prompt)

    def max_prompt_len(self, prompt: str | None) -> int:
        """Video rows + the text tokens around them: what an LLM engine's context must hold."""
        return self.bundle.manifest.tokens_per_video + self.prompt_tokens(prompt).num_text_tokens

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        """Vision stage: (B, T, 3, H, W) float32 -> (B, T*M, Dl) float32."""
        if pixel_values.shape[1] != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames per video, got {pixel_values.shape[1]}")
        return self.vision.encode(pixel_values)

    def encode_frames(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Vision stage from decoded frames: uint8 (T, H, W, 3) per video (resized and cropped by the
        decode workers) -> (B, T*M, Dl) float32, equal to `encode(pixel_batch(frames, spec))`.

        The engine writes the frames into its reused staging buffer (pinned on GPUs) and hands the
        batch to the device in one copy (engines/runtime/frame_staging.py); a video with the wrong frame
        count or size is a ValueError naming the expected shape.
        """
        return self.vision.encode_frames(frames)

    def caption(self, vision_rows: np.ndarray, prompts: Sequence[str | None]) -> list[Caption]:
        """LLM stage: one caption per video, in input order; flagged captions are generated once
        more with the retry decoding (engines/runtime/caption_quality.py)."""
        captions = self.captions(self.llm.generate(self.embed(vision_rows, prompts), self.params), prompts)
        again = [i for i, c in enumerate(captions) if self.wants_retry(c)]
        if again:
            again_prompts = [prompts[i] for i in again]
            retries = self.llm.generate(self.embed(vision_rows[again], again_prompts), self.retry_params)
            for i, retry in zip(again, self.captions(retries, again_prompts), strict=True):
                captions[i] = self.better(captions[i], retry)
        return captions

    def wants_retry(self, caption: Caption) -> bool:
        """A first attempt the guards flagged, in a run that retries."""
        return bool(caption.quality.flags) and self.guard.settings.retries

    @staticmethod
    def better(first: Caption, retry: Caption) -> Caption:
        """The caption a retry leaves, with the quality record of both attempts."""
        quality = choose(first.quality.flags, retry.quality.flags)
        return dataclasses.replace(retry if quality.used == "retry" else first, quality=quality)

    def embed(self, vision_rows: np.ndarray, prompts: Sequence[str | None]) -> EmbeddedBatch:
        """The LLM's left-padded input rows: chat prompt around each video's vision rows."""
        return build_inputs_embeds(
            torch.from_numpy(vision_rows), [self.prompt_tokens(p) for p in prompts], self.table, "left"
        )

    def captions(self, generations: Sequence[Generation], prompts: Sequence[str | None]) -> list[Caption]:
        """Generated token ids -> caption texts, decoded by the bundle's tokenizer and checked by the guards."""
        texts = self.tokenizer.batch_decode([g.token_ids for g in generations], skip_special_tokens=True)
        texts = [drop_cut_character(t) for t in texts]
        instruction = self.bundle.manifest.prompt.instruction
        return [
            Caption(
                text.strip(),
                len(g.token_ids),
                g.finish_reason,
                Quality(self.guard.flags(text, g.token_ids, g.finish_reason, instruction(p))),
            )
            for text, g, p in zip(texts, generations, prompts, strict=True)
        ]

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
