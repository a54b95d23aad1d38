"""The transformers engine: batched, left-padded `generate(inputs_embeds=...)` on the merged checkpoint.

The fallback where vLLM is missing or cannot start, and the reference the vLLM engine is tested
against. The generation itself is `vlmcap.model.generation.generate_from_embeds`, shared with training
and the export's caption gate.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from vlmcap.bundle import Bundle
from vlmcap.environment import warn_if_bf16_emulated
from vlmcap.model.embeddings import EmbeddedBatch
from vlmcap.model.generation import Generation, GenerationParams, generate_from_embeds
from vlmcap.model.llm import DTYPES


class TransformersEngine:
    def __init__(
        self, bundle: Bundle, device: str | None = None, dtype: str = "auto", threads: int | None = None
    ) -> None:
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cpu" and threads:
            torch.set_num_threads(threads)  # process-wide: the vision engine in torch shares it
        # On a CPU, auto is float32 (engines/runtime/engine_choice.py asks for bfloat16 where the CPU multiplies
        # it natively, it is faster and it passed the check against float32): fp16 has no fast CPU kernels,
        # and bf16 without AMX / AVX-512 BF16 is emulated, slower than fp32.
        auto = "float32" if self.device.type == "cpu" else bundle.manifest.llm.dtype
        name = auto if dtype == "auto" else dtype
        if self.device.type == "cpu" and name == "bfloat16":
            warn_if_bf16_emulated("the transformers LLM engine")
        self.dtype = DTYPES[name]
        self.model = AutoModelForCausalLM.from_pretrained(
            bundle.llm_dir, dtype=self.dtype, use_safetensors=True, trust_remote_code=False
        )
        self.model.to(self.device).eval()
        self.pad_token_id = self.model.generation_config.pad_token_id
        scheme = bundle.manifest.llm.quantization
        self.name = f"transformers ({self.device.type}, {name}{', ' + scheme.scheme if scheme else ''})"

    def generate(self, batch: EmbeddedBatch, params: GenerationParams) -> list[Generation]:
        return generate_from_embeds(self.model, batch, params, self.pad_token_id)

    def close(self) -> None:
        del self.model
