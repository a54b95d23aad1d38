"""LLM engines: left-padded prompt embeddings in, captions out.

Both engines take the `EmbeddedBatch` that `vlmcap.embeddings.build_inputs_embeds` builds, so
the sequence they see cannot differ; both decode token ids with the bundle's tokenizer, so the
text cannot differ either. Greedy decoding gives identical captions (tested).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch

from vlmcap.bundle import Bundle
from vlmcap.config import GenerationOverrides
from vlmcap.embeddings import EmbeddedBatch


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int
    stop_token_ids: list[int]
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle, overrides: GenerationOverrides | None = None) -> GenerationParams:
        """The bundle's generation defaults, with the settings that are set on top."""
        defaults = bundle.manifest.generation
        values = {
            "max_new_tokens": defaults.max_new_tokens,
            "stop_token_ids": list(defaults.stop_token_ids),
            "temperature": defaults.temperature,
            "repetition_penalty": defaults.repetition_penalty,
        }
        if overrides is not None:
            values.update(overrides.model_dump(exclude_none=True))
        return cls(**values)  # both sources are validated models: the bundle manifest and the settings

    def overridden(self, overrides: GenerationOverrides) -> GenerationParams:
        """These parameters with the settings of `overrides` that are set on top (a guard's retry)."""
        return dataclasses.replace(self, **overrides.model_dump(exclude_none=True))


@dataclass
class Generation:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens reached)


class LLMEngine(Protocol):
    name: str

    def generate(self, batch: EmbeddedBatch, params: GenerationParams) -> list[Generation]: ...

    def close(self) -> None: ...


@runtime_checkable
class StreamingLLMEngine(LLMEngine, Protocol):
    """An engine that takes requests one at a time and returns each when it finishes (continuous
    batching): no batch waits for its longest caption (engines/batch/llm_stage.py)."""

    def capacity(self) -> int:
        """Full-length sequences the engine can hold at once (its KV cache and scheduler limit)."""
        ...

    def submit(self, key: str, prompt_embeds: torch.Tensor, params: GenerationParams) -> None: ...

    def step(self) -> list[tuple[str, Generation]]:
        """One engine iteration; the requests it finished. Call only while some are in flight."""
        ...

    def abort(self, keys: list[str]) -> None: ...


def finish_reason(token_ids: list[int], params: GenerationParams) -> str:
    return "stop" if token_ids and token_ids[-1] in params.stop_token_ids else "length"
