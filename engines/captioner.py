"""A bundle's vision engine + LLM engine + prompt + tokenizer: pixel batches in, captions out.

The two stage methods, `encode` (vision) and `caption` (LLM), are what both drivers call: the
local threaded pipeline and the Ray Data operators.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from transformers import AutoTokenizer
from vlmcap.engines.embedding_table import EmbeddingTable
from vlmcap.engines.llm import GenerationParams, LLMEngine
from vlmcap.engines.llm_vllm import VllmOptions, check_params_safe
from vlmcap.engines.onnx_session import usable_cpus
from vlmcap.engines.vision import VisionEngine
from vlmcap.export.bundle import Bundle

from vlmcap.embeddings import build_inputs_embeds
from vlmcap.errors import ConfigError, ModelError
from vlmcap.prompt import PromptBuilder, PromptTokens

log = logging.getLogger(__name__)

LLMBackend = Literal["auto", "vllm", "transformers"]
VisionBackend = Literal["onnx", "torch"]


@dataclass
class EngineOptions:
    vision_backend: VisionBackend = "onnx"
    providers: list[str] | None = None  # ONNX Runtime providers (aliases cuda/cpu/tensorrt); default: best installed
    # Threads of each CPU-bound model engine (ONNX Runtime on CPU, torch on CPU). None: the engine's
    # default (all usable CPUs); `vlmcap batch` sets it with `cpu_threads_per_engine`.
    cpu_threads: int | None = None
    llm_backend: LLMBackend = "auto"
    device: str | None = None  # torch engines: cuda when available, else cpu
    vllm: VllmOptions = field(default_factory=VllmOptions)


def cpu_threads_per_engine(decode_workers: int) -> int:
    """Threads for each of the two model engines when they share the CPUs with the decode workers.

    Every stage runs at once (that is the point of the pipeline), so threads beyond the cores only
    contend: on 2 cores, one thread each for ONNX Runtime and torch instead of two took the
    tiny-preset pipeline from 64 to 77-84 videos/s (docs/PERFORMANCE.md).
    """
    return max(1, (usable_cpus() - decode_workers) // 2)


def open_vision_engine(bundle: Bundle, options: EngineOptions) -> VisionEngine:
    from vlmcap.engines.vision import OnnxVisionEngine, TorchVisionEngine

    if options.vision_backend == "torch":
        device = options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        return TorchVisionEngine(bundle, device, options.cpu_threads)
    return OnnxVisionEngine(bundle, options.providers, options.cpu_threads)


def open_llm_engine(
    bundle: Bundle, options: EngineOptions, params: GenerationParams, max_prompt_len: int, batch_size: int = 8
) -> LLMEngine:
    """vLLM or transformers; `auto` takes vLLM when it imports and starts, transformers otherwise."""
    from vlmcap.engines.llm_transformers import TransformersEngine

    backend = options.llm_backend
    if backend in ("vllm", "auto"):
        try:
            check_params_safe(params)
        except ConfigError:
            if backend == "vllm":
                raise
            log.warning("penalties requested: using the transformers engine (vLLM would risk a crash)")
            backend = "transformers"
    if backend in ("vllm", "auto"):
        from vlmcap.engines.llm_vllm import VllmEngine

        try:
            return VllmEngine(bundle, options.vllm, max_prompt_len, params.max_new_tokens, batch_size)
        except Exception as e:  # auto: any import or start-up failure falls back, with the reason
            if backend == "vllm":
                raise ModelError(f"vLLM could not start on {bundle.llm_dir}: {type(e).__name__}: {e}") from None
            log.warning("vLLM unavailable (%s: %s); using the transformers engine", type(e).__name__, e)
    return TransformersEngine(bundle, options.device, options.vllm.dtype, options.cpu_threads)


class Captioner:
    def __init__(self, bundle: Bundle, vision: VisionEngine, llm: LLMEngine | None, params: GenerationParams) -> None:
        self.bundle = bundle
        self.vision = vision
        self.llm = llm
        self.params = params
        self.tokenizer = AutoTokenizer.from_pretrained(bundle.llm_dir)
        prompt = bundle["prompt"]
        self.prompts = PromptBuilder(self.tokenizer, prompt["default_prompt"], prompt["system_prompt"])
        self.table = EmbeddingTable(bundle.llm_dir, bundle["llm"]["embed_tokens"])
        self.num_frames = int(bundle["video"]["num_frames"])

    @classmethod
    def open(
        cls,
        bundle: Bundle,
        options: EngineOptions,
        params: GenerationParams,
        prompt: str | None = None,
        batch_size: int = 8,
    ) -> Captioner:
        """Start both engines; vLLM's context length is sized for the video tokens + `prompt` + output."""
        captioner = cls(bundle, open_vision_engine(bundle, options), None, params)
        captioner.llm = open_llm_engine(bundle, options, params, captioner.max_prompt_len(prompt), batch_size)
        return captioner

    @functools.lru_cache(maxsize=64)  # noqa: B019 -- one captioner per run; a handful of distinct prompts
    def prompt_tokens(self, prompt: str | None) -> PromptTokens:
        return self.prompts.encode(prompt)

    def max_prompt_len(self, prompt: str | None) -> int:
        """Video rows + the text tokens around them: what an LLM engine's context must hold."""
        return int(self.bundle["tokens_per_video"]) + self.prompt_tokens(prompt).num_text_tokens

    def prompt_text(self, prompt: str | None) -> str:
        return self.prompts.default_prompt if prompt is None else prompt

    def encode(self, pixel_values: np.ndarray) -> np.ndarray:
        """Vision stage: (B, T, 3, H, W) float32 -> (B, T*M, Dl) float32."""
        if pixel_values.shape[1] != self.num_frames:
            raise ValueError(f"expected {self.num_frames} frames per video, got {pixel_values.shape[1]}")
        return self.vision.encode(pixel_values)

    def caption(self, vision_rows: np.ndarray, prompts: Sequence[str | None]) -> tuple[list[str], list[int]]:
        """LLM stage: captions and generated-token counts, in input order."""
        batch = build_inputs_embeds(
            torch.from_numpy(vision_rows), [self.prompt_tokens(p) for p in prompts], self.table, "left"
        )
        generations = self.llm.generate(batch, self.params)
        texts = self.tokenizer.batch_decode([g.token_ids for g in generations], skip_special_tokens=True)
        return [t.strip() for t in texts], [len(g.token_ids) for g in generations]

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
