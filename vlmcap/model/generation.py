"""Generation from prompt embeddings: its parameters, its result, and the one transformers implementation.

Every caption made with transformers goes through `generate_from_embeds`: the training-time model
(vlmcap/model/vlm.py), the transformers LLM engine (engines/runtime/llm_transformers.py) and the export's
caption gate (export/caption_gate.py). vLLM's engine (engines/runtime/llm_vllm.py) takes the same
`GenerationParams` and returns the same `Generation`, so a caption cannot depend on which one ran.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from vlmcap.config.schema import GenerationOverrides
from vlmcap.model.embeddings import EmbeddedBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel

    from vlmcap.bundle import Bundle


@dataclass(frozen=True)
class GenerationParams:
    max_new_tokens: int
    stop_token_ids: list[int]
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False  # no stop token ends a caption: every one is max_new_tokens long (benchmarks)

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


def finish_reason(token_ids: list[int], params: GenerationParams) -> str:
    return "stop" if token_ids and token_ids[-1] in params.stop_token_ids else "length"


def until_stop(ids: list[int], stop_token_ids: list[int]) -> list[int]:
    """Generated ids up to and including the first stop token (later positions are padding)."""
    for i, token in enumerate(ids):
        if token in stop_token_ids:
            return ids[: i + 1]
    return ids


@torch.no_grad()
def generate_from_embeds(
    model: PreTrainedModel, batch: EmbeddedBatch, params: GenerationParams, pad_token_id: int | None
) -> list[Generation]:
    """`model.generate(inputs_embeds=...)` on a left-padded batch, cut at each row's first stop token."""
    if batch.padding_side != "left":
        raise ValueError("generation needs left-padded embeddings")
    sampling = params.temperature > 0
    kwargs = {"temperature": params.temperature, "top_p": params.top_p} if sampling else {}
    if params.ignore_eos:  # stop tokens suppressed until the last position: every caption is this long
        kwargs["min_new_tokens"] = params.max_new_tokens
    if sampling and params.seed is not None:
        torch.manual_seed(params.seed)
    out = model.generate(
        inputs_embeds=batch.inputs_embeds.to(model.device, model.dtype),  # the first floating-point weights'
        attention_mask=batch.attention_mask.to(model.device),
        max_new_tokens=params.max_new_tokens,
        do_sample=sampling,
        repetition_penalty=params.repetition_penalty,
        eos_token_id=params.stop_token_ids,
        pad_token_id=pad_token_id,
        **kwargs,
    )
    generations = []
    for row in out.tolist():
        ids = until_stop(row, params.stop_token_ids)
        generations.append(Generation(ids, finish_reason(ids, params)))
    return generations
