"""LLM engines: left-padded prompt embeddings in, captions out.

Both engines take the `EmbeddedBatch` that `vlmcap.embeddings.build_inputs_embeds` builds, so
the sequence they see cannot differ; both decode token ids with the bundle's tokenizer, so the
text cannot differ either. Greedy decoding gives identical captions (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from vlmcap.export.bundle import Bundle

from vlmcap.embeddings import EmbeddedBatch
from vlmcap.errors import ConfigError


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int
    stop_token_ids: list[int]
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None

    @classmethod
    def from_bundle(cls, bundle: Bundle, **overrides: Any) -> GenerationParams:
        defaults = bundle["generation"]
        values = {
            "max_new_tokens": defaults["max_new_tokens"],
            "stop_token_ids": list(defaults["stop_token_ids"]),
            "temperature": defaults.get("temperature", 0.0),
            "repetition_penalty": defaults.get("repetition_penalty", 1.0),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        params = cls(**values)
        params.validate()
        return params

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"--max-new-tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ConfigError(f"--repetition-penalty must be > 0, got {self.repetition_penalty}")


@dataclass
class Generation:
    token_ids: list[int]
    finish_reason: str  # "stop" (a stop token) or "length" (max_new_tokens reached)


class LLMEngine(Protocol):
    name: str

    def generate(self, batch: EmbeddedBatch, params: GenerationParams) -> list[Generation]: ...

    def close(self) -> None: ...


def finish_reason(token_ids: list[int], params: GenerationParams) -> str:
    return "stop" if token_ids and token_ids[-1] in params.stop_token_ids else "length"
