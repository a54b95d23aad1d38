"""The transformers engine: batched, left-padded `generate(inputs_embeds=...)` on the merged checkpoint.

The fallback where vLLM is missing or cannot start, and the reference the vLLM engine is tested
against.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from vlmcap.bundle import Bundle
from vlmcap.embeddings import EmbeddedBatch
from vlmcap.engines.model.llm import Generation, GenerationParams, finish_reason
from vlmcap.llm import DTYPES


class TransformersEngine:
    def __init__(
        self, bundle: Bundle, device: str | None = None, dtype: str = "auto", threads: int | None = None
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(threads)  # process-wide: the vision engine in torch shares it
        name = bundle.manifest.llm.dtype if dtype == "auto" else dtype
        if self.device.type == "cpu" and name != "float32":
            name = "float32"  # CPU matmuls in 16-bit are slow and lose precision; the weights are upcast once
        self.dtype = DTYPES[name]
        self.model = AutoModelForCausalLM.from_pretrained(
            bundle.llm_dir, dtype=self.dtype, use_safetensors=True, trust_remote_code=False
        )
        self.model.to(self.device).eval()
        self.pad_token_id = self.model.generation_config.pad_token_id
        scheme = bundle.manifest.llm.quantization
        self.name = f"transformers ({self.device.type}, {name}{', ' + scheme.scheme if scheme else ''})"

    @torch.no_grad()
    def generate(self, batch: EmbeddedBatch, params: GenerationParams) -> list[Generation]:
        if batch.padding_side != "left":
            raise ValueError("generation needs left-padded embeddings")
        sampling = params.temperature > 0
        kwargs = {"temperature": params.temperature, "top_p": params.top_p} if sampling else {}
        if sampling and params.seed is not None:
            torch.manual_seed(params.seed)
        out = self.model.generate(
            inputs_embeds=batch.inputs_embeds.to(self.device, self.dtype),
            attention_mask=batch.attention_mask.to(self.device),
            max_new_tokens=params.max_new_tokens,
            do_sample=sampling,
            repetition_penalty=params.repetition_penalty,
            eos_token_id=params.stop_token_ids,
            pad_token_id=self.pad_token_id,
            **kwargs,
        )
        generations = []
        for row in out.tolist():
            ids = _until_stop(row, params.stop_token_ids)
            generations.append(Generation(ids, finish_reason(ids, params)))
        return generations

    def close(self) -> None:
        del self.model


def _until_stop(ids: list[int], stop: list[int]) -> list[int]:
    """Generated ids up to and including the first stop token (later positions are padding)."""
    for i, token in enumerate(ids):
        if token in stop:
            return ids[: i + 1]
    return ids
