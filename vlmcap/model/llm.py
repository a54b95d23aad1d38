"""The language model: a transformers causal LM, optionally in 4-bit NF4 (QLoRA), optionally with LoRA."""

from __future__ import annotations

import logging

import torch
from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from vlmcap.config.schema import LLMConfig, LoraConfig
from vlmcap.errors import ModelError
from vlmcap.presets import ModelSource

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def compute_dtype(name: str, device: torch.device) -> torch.dtype:
    """`auto` is bfloat16 on CUDA (docs/MODEL.md, "The LLM") and float32 on CPU, where bf16 matmuls are slow."""
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def load_tokenizer(source: ModelSource, config: LLMConfig) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(
            source.path, revision=config.revision, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"model.llm.model={config.model!r}: cannot load its tokenizer ({e})") from None


def load_llm(source: ModelSource, config: LLMConfig, device: torch.device) -> PreTrainedModel:
    """Load the causal LM frozen; with `quantize: 4bit` its Linear layers are NF4 (bitsandbytes)."""
    dtype = compute_dtype(config.dtype, device)
    kwargs: dict = {
        "dtype": dtype,
        "revision": config.revision,
        "trust_remote_code": config.trust_remote_code,
    }
    if config.quantize == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
        kwargs["device_map"] = {"": device}
    try:
        if source.random_init:
            if config.quantize == "4bit":
                raise ModelError(
                    f"model.llm.model={config.model!r} has random weights and no checkpoint to quantize; "
                    "set model.llm.quantize=none or materialize it with weights first"
                )
            hf_config = AutoConfig.from_pretrained(source.path, trust_remote_code=config.trust_remote_code)
            torch.manual_seed(source.seed)
            # Built where it will run: an 8B shape initialised on the CPU and then moved took the
            # whole 251 s budget of the first GPU run (docs/bench/2026-12-04-h200/); on the GPU it
            # takes seconds. The values then depend on the device's generator (random presets are
            # shapes for benchmarks, not weights anyone compares across machines).
            with device:
                model = AutoModelForCausalLM.from_config(
                    hf_config, dtype=dtype, trust_remote_code=config.trust_remote_code
                )
        else:
            # use_safetensors: never unpickle weights from a checkpoint.
            model = AutoModelForCausalLM.from_pretrained(source.path, use_safetensors=True, **kwargs)
    except OSError as e:
        raise ModelError(f"model.llm.model={config.model!r}: cannot load it ({e})") from None
    if "device_map" not in kwargs:
        model = model.to(device)
    model.requires_grad_(False)
    return model


def add_lora(model: PreTrainedModel, config: LoraConfig) -> PeftModel:
    """Wrap the LM with trainable LoRA adapters on `config.target_modules`; the base stays frozen."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in config.target_modules if m not in names]
    if missing:
        raise ModelError(f"model.lora.target_modules: {missing} not found in the LLM")
    peft_config = PeftLoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, peft_config)
