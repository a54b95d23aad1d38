"""Merge the trained LoRA adapter into the LLM and save a plain HF checkpoint vLLM can serve.

With a 4-bit (QLoRA) base the adapter learned to correct the NF4 weights, not the original ones:
by default it is merged into the dequantized base, which is exactly what training computed with.
`merge_into=original` merges into the high-precision weights instead. Either way the merge itself
runs in float32 and the result is cast once to the shipped dtype. The training-time quantization
config is never left in config.json; with `export.llm_quant` the merged float32 weights are quantized
afresh for serving (export/quantize_llm.py) and the checkpoint carries that scheme's config.

Memory (docs/EXPORT.md, "Memory"): one model at a time. The un-merged model (a 4-bit base kept
packed, export/nf4_base.py) computes the reference logits, which go to disk, and the float32 gate
captions; it is then merged and written one layer at a time, each layer released from it as it is
written (export/merged_weights.py, export/safetensors_writer.py); only then is the shipped
checkpoint loaded to be verified, one video at a time (export/llm_logits.py). Quantized exports
calibrate on the whole merged float32 model, so they hold it in memory as before.

One module past 300 lines: loading the un-merged model, merging, writing the checkpoint and
checking its logits are one export step, each phase handing the next its files and peak memory.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from vlmcap.config.schema import ExportConfig, VlmcapConfig
from vlmcap.errors import ExportError
from vlmcap.export.caption_gate import GateInputs, greedy_captions, judge, token_agreement
from vlmcap.export.llm_logits import ReferenceLogits
from vlmcap.export.memory import PeakMemory, release_freed_memory
from vlmcap.export.merged_weights import merged_tensors
from vlmcap.export.nf4_base import wrap_nf4_layers
from vlmcap.export.quantize_llm import quantize_llm, save_quantized
from vlmcap.export.safetensors_writer import write_safetensors
from vlmcap.export.verify import Tolerance, check
from vlmcap.model.embeddings import EmbeddedBatch, build_inputs_embeds
from vlmcap.model.llm import DTYPES, compute_dtype, load_llm, load_tokenizer
from vlmcap.model.prompt import PromptBuilder
from vlmcap.model.text_rows import EmbeddingTable, check_rows, measured_scale
from vlmcap.presets import resolve_model_source

log = logging.getLogger(__name__)

# Merging in float32 only reorders the sums (W x + s B A x vs (W + s B A) x): the tiny preset
# measures ~1e-6 scaled. A 16-bit checkpoint rounds every weight, so it is judged by agreement of
# the greedy next token, which is what captions are made of.
LLM_TOLERANCE = {
    "float32": (Tolerance(max_abs_scaled=1e-3), 0.99),
    "bfloat16": (Tolerance(), 0.90),
    "float16": (Tolerance(), 0.90),
}
# A quantized LLM rounds every weight to 4-8 bits: the logits check only catches a broken checkpoint
# (a wrong scale or packing falls to chance agreement); the caption gate judges its quality.
QUANTIZED_TOLERANCE = (Tolerance(), 0.5)
MAX_SHARD_BYTES = 4 * 10**9  # as save_pretrained's "4GB" before: the 0.6B float32 checkpoint stays one file


@dataclass
class MergedLLM:
    dtype: str
    hidden_size: int
    vocab_size: int
    embed_tokens_key: str  # tensor name of the input embedding table in the safetensors files
    embed_scale: float  # what the embedding layer multiplies table rows by (vlmcap.model.text_rows)
    adapter_merged: bool
    chat_template: str
    stop_token_ids: list[int]
    verification: dict
    quantization: dict | None  # export/quantize_llm.py's record
    caption_gate: dict | None  # export/caption_gate.py's record (lossy exports)


def shipped_dtype(config: VlmcapConfig, requested: str, device: torch.device) -> str:
    """`auto`: the dtype the LLM computed in during training on this kind of device."""
    if requested != "auto":
        return requested
    dtype = compute_dtype(config.model.llm.dtype, device)
    return {v: k for k, v in DTYPES.items()}[dtype]


def load_unmerged(
    config: VlmcapConfig,
    weights_dir: Path,
    merge_into: Literal["dequantized", "original"],
    device: torch.device,
    packed: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, bool]:
    """The LLM as training saw it, in float32: (model with adapter or bare base, tokenizer, has adapter).

    A 4-bit base is dequantized to float32 weights, or with `packed` kept in NF4 and dequantized on
    each use (export/nf4_base.py): the same numbers at an eighth of the memory.
    """
    from peft import PeftModel

    llm_config = config.model.llm
    source = resolve_model_source(llm_config.model, seed=config.seed)
    dequantize = llm_config.quantize == "4bit" and merge_into == "dequantized"
    if not dequantize:
        llm_config = llm_config.model_copy(update={"quantize": "none"})
    model = load_llm(source, llm_config, device)
    if dequantize and packed:
        wrap_nf4_layers(model)
        model.hf_quantizer.remove_quantization_config(model)  # what dequantize() does after replacing the layers
    elif dequantize:
        # NF4 -> float32: the same rounded weights the adapter was trained against; drops the quant config.
        model = model.dequantize(dtype=torch.float32)
    model = model.float()
    tokenizer = load_tokenizer(source, config.model.llm)
    adapter = weights_dir / "adapter"
    if adapter.is_dir():
        return PeftModel.from_pretrained(model, adapter, is_trainable=False).eval(), tokenizer, True
    return model.eval(), tokenizer, False


def _embed_tokens_key(model: PreTrainedModel) -> str:
    table = model.get_input_embeddings().weight
    for name, param in model.named_parameters():
        if param is table:
            return name
    raise RuntimeError("input embedding table not found among the model's parameters")


@dataclass(frozen=True)
class Calibration:
    """Training samples that calibrate LLM quantization: their float32 vision rows and texts."""

    vision_rows: torch.Tensor  # (N, V, D)
    prompts: list[str | None]
    captions: list[str]

    def batches(self, prompts: PromptBuilder, rows: Callable, size: int = 4) -> list[EmbeddedBatch]:
        """Teacher-forced sequences exactly as training builds them (prompt, vision rows, caption)."""
        tokens = [prompts.encode(p, c) for p, c in zip(self.prompts, self.captions, strict=True)]
        return [
            build_inputs_embeds(self.vision_rows[i : i + size], tokens[i : i + size], rows, "right")
            for i in range(0, len(tokens), size)
        ]


def merged_config(model: PreTrainedModel, dtype: str) -> PretrainedConfig:
    """config.json of the merged checkpoint: the base's, in the shipped dtype, without training's quantization."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    merged = copy.deepcopy(base.config)
    merged.dtype = DTYPES[dtype]
    merged.use_cache = True
    merged.architectures = [type(base).__name__]
    return merged


def _write_checkpoint(
    model: PreTrainedModel,
    out: Path,
    dtype: str,
    generation: GenerationConfig,
    quantization: dict | None,
) -> str:
    """Save the merged (and quantized) model to `out`; returns the embedding table's tensor name.

    Unquantized: merged and written layer by layer, consuming `model` (export/merged_weights.py).
    """
    if quantization is not None:
        model = model.to(DTYPES[dtype])
        model.generation_config = generation
        model.config.use_cache = True
        save_quantized(model, out, quantization["format"])
        return _embed_tokens_key(model)
    embed_key = _embed_tokens_key(model.get_base_model() if hasattr(model, "get_base_model") else model)
    config = merged_config(model, dtype)
    write_safetensors(merged_tensors(model, DTYPES[dtype]), out, MAX_SHARD_BYTES)
    config.save_pretrained(out)
    generation.save_pretrained(out)
    return embed_key


def export_llm(
    config: VlmcapConfig,
    weights_dir: Path,
    out: Path,
    vision_rows: torch.Tensor,
    options: ExportConfig,
    dtype: str,
    device: torch.device,
    calibration: Calibration | None = None,
    gate: GateInputs | None = None,
    memory: PeakMemory | None = None,
) -> MergedLLM:
    """Merge (and quantize), save to `out` (safetensors + tokenizer + chat template + generation_config),
    reload, verify; with `gate`, caption its videos with the float32 and the shipped model (export/caption_gate.py)."""
    memory = memory or PeakMemory()
    work = out.with_name(".llm-work")  # beside the bundle's llm/, inside the staging directory
    try:
        return _export_llm(
            config, weights_dir, out, work, vision_rows, options, dtype, device, calibration, gate, memory
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _export_llm(
    config: VlmcapConfig,
    weights_dir: Path,
    out: Path,
    work: Path,
    vision_rows: torch.Tensor,
    options: ExportConfig,
    dtype: str,
    device: torch.device,
    calibration: Calibration | None,
    gate: GateInputs | None,
    memory: PeakMemory,
) -> MergedLLM:
    quantize = options.llm_quant != "none"
    with memory.phase("llm: load the un-merged model"):
        model, tokenizer, has_adapter = load_unmerged(
            config, weights_dir, options.merge_into, device, packed=not quantize
        )
        release_freed_memory()  # what loading freed: a 4-bit base is read at full precision, then packed
    prompts = PromptBuilder(tokenizer, config.prompt.default_prompt, config.prompt.system_prompt)
    reference = ReferenceLogits(work)
    with memory.phase("llm: reference logits"):
        reference.record(model, vision_rows, prompts)
    eos = [prompts.end_of_turn_id] + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
    stop_ids = list(dict.fromkeys(eos))
    max_new = options.max_new_tokens
    if gate is not None:  # before anything is rounded: the float32 captions the bundle is judged against
        with memory.phase("llm: float32 gate captions"):
            reference_ids = greedy_captions(
                model, model.get_input_embeddings(), gate.reference_rows.to(device), prompts, stop_ids, max_new
            )
    generation = GenerationConfig(
        do_sample=False, max_new_tokens=max_new, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id
    )
    quantization = None
    with memory.phase("llm: merge and write"):
        if quantize:
            if calibration is None:
                raise ValueError("quantization needs a calibration set")
            if has_adapter:
                model = model.merge_and_unload()
            batches = calibration.batches(prompts, model.get_input_embeddings())
            quantization = quantize_llm(model, options.llm_quant, options.llm_quant_group_size, batches)
        embed_key = _write_checkpoint(model, out, dtype, generation, quantization)
        tokenizer.save_pretrained(out)
        del model
        release_freed_memory()  # the un-merged model's pages, before the shipped one is mapped

    # Verify what ships: the checkpoint as written to disk, loaded the way transformers users load it
    # (a quantized one through compressed-tensors, which computes with the quantized numbers).
    with memory.phase("llm: load the shipped checkpoint"):
        shipped = AutoModelForCausalLM.from_pretrained(
            out, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=False
        ).to(device)
    if (getattr(shipped.config, "quantization_config", None) is not None) != (quantization is not None):
        raise RuntimeError("the saved checkpoint's quantization_config does not match the export")
    hidden, vocab = shipped.config.hidden_size, shipped.config.vocab_size
    with memory.phase("llm: text rows and logits check"):
        # The engines' text rows, read from the files as shipped, must be the model's own (vlmcap.model.text_rows).
        layer = shipped.get_input_embeddings()
        ids = _ids_to_check(vocab, prompts)
        scale = measured_scale(layer, ids.to(layer.weight.device))
        check_rows(EmbeddingTable(out, embed_key, scale), layer, ids)  # the table is read again by the gate
        stats = reference.compare(shipped.eval(), vision_rows, prompts)
    record = _check_logits(stats, QUANTIZED_TOLERANCE if quantization else LLM_TOLERANCE[dtype], out)
    record["text_rows_checked"] = int(ids.numel())
    gate_record = None
    if gate is not None:
        with memory.phase("llm: caption gate"):
            table = EmbeddingTable(out, embed_key, scale)
            candidate_ids = greedy_captions(shipped, table, gate.shipped_rows, prompts, stop_ids, max_new)
            agreement = token_agreement(shipped, table, gate.shipped_rows, prompts, reference_ids)
        texts = [
            [tokenizer.decode(i, skip_special_tokens=True).strip() for i in ids]
            for ids in (reference_ids, candidate_ids)
        ]
        gate_record = judge(texts[0], texts[1], agreement, gate, options.gate)
        del table
    del shipped
    release_freed_memory()
    return MergedLLM(
        dtype,
        hidden,
        vocab,
        embed_key,
        scale,
        has_adapter,
        tokenizer.chat_template,
        stop_ids,
        record,
        quantization,
        gate_record,
    )


def _check_logits(stats: dict, tolerance: tuple[Tolerance, float], out: Path) -> dict:
    """ExportError when the shipped logits miss the tolerance or the greedy-token agreement; else the record."""
    limits, min_top1 = tolerance
    positions = stats.pop("positions")
    what = f"{out}: merged LLM logits vs the un-merged model"
    record = check(stats, limits, what)
    if stats["top1_agreement"] < min_top1:
        raise ExportError(
            f"{what}: verification failed: greedy token agreement {stats['top1_agreement']:.3f} < {min_top1}"
        )
    record["tolerance"]["min_top1_agreement"] = min_top1
    record["positions"] = positions
    return record


def _ids_to_check(vocab: int, prompts: PromptBuilder, sample: int = 8192) -> torch.Tensor:
    """Every id of a small vocabulary; otherwise the prompt's ids, the special ids and a fixed sample."""
    if vocab <= 4 * sample:
        return torch.arange(vocab)
    tokens = prompts.encode(None)
    special = prompts.tokenizer.all_special_ids
    spread = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))[:sample]
    return torch.unique(torch.cat([torch.tensor(tokens.before + tokens.after + special), spread]))
