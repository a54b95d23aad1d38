"""LLM engines: left-padded prompt embeddings in, captions out.

Both engines take the `EmbeddedBatch` that `vlmcap.model.embeddings.build_inputs_embeds` builds, so
the sequence they see cannot differ; both take and return the types of `vlmcap.model.generation`; both
decode token ids with the bundle's tokenizer, so the text cannot differ either. Greedy decoding
gives identical captions (tested).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from vlmcap.model.embeddings import EmbeddedBatch
from vlmcap.model.generation import Generation, GenerationParams


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
