"""The training memory plan: the peak memory one training step needs, known before any weight loads.

`vlmcap train --plan` prints it and `train.gradient_checkpointing: auto` decides with it
(docs/TRAINING.md, "Memory plan"). Two halves:

- What exists before a step: the weights (NF4 where `model.llm.quantize: 4bit` puts them, the
  dtype elsewhere), the trainable projector + LoRA weights in float32, and AdamW's two float32
  moments per trainable weight. Counted from the modules built on the meta device (shapes only,
  no memory, seconds even for an 8B model).
- What a step adds: the real training step (vision tower, projector, `build_inputs_embeds`,
  `caption_loss`, backward) run on the meta device at the config's exact shapes under
  `PeakTensorMemory`, with gradient checkpointing on any number of decoder layers. Nothing is
  fitted or hand-counted: every activation, cast, dropout copy and gradient the code makes is seen.

`train.gradient_checkpointing: auto` checkpoints the fewest decoder layers that make the plan fit
`train.memory_budget_gb` (default: the device's memory): none when the step fits, all of them only
when nothing less does. Each checkpointed layer costs one more forward of that layer per step.

Three things the meta device cannot run are stood in for by what they hold on a GPU:
- attention: the fused kernels (flash / memory-efficient) keep q, k, v, the output and a float32
  log-sum-exp per row, never the T x T matrix that sdpa's math fallback (the only one meta has)
  would make; `_FusedAttention` allocates exactly those;
- autocast (CUDA, bf16): the trainable weights are traced in bf16, which makes the same bf16
  activations autocast makes; their float32 gradients and autocast's cached bf16 weight copies
  are added (4 bytes per trainable weight);
- bitsandbytes' NF4 layers are traced as dense layers of the compute dtype (they keep the same
  inputs for backward), plus the one dequantized weight a layer makes at a time.
The rows of a batch are traced at one length, the longest caption's: padding is what a batch has
at its longest anyway.

One module past 300 lines: the planner runs the real training step on the meta device, so its
attention stand-in, the byte counting and the checkpointing decision belong to that one measurement.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerBase
from transformers.modeling_layers import GradientCheckpointingLayer

from vlmcap.bench.tensor_memory import PeakTensorMemory
from vlmcap.config.schema import VlmcapConfig
from vlmcap.errors import ConfigError
from vlmcap.model.llm import add_lora, compute_dtype, load_tokenizer
from vlmcap.model.projectors import ProjectorGeometry, build_projector
from vlmcap.model.vision_tower import load_vision_tower
from vlmcap.model.vlm import VideoLanguageModel, caption_loss
from vlmcap.presets import resolve_model_source

# 4-bit codes, an 8-bit absmax per 64 weights and a float32 absmax per 256 of those (bitsandbytes'
# NF4 with double quantization, as vlmcap/model/llm.py loads it).
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)
NF4_BYTES_PER_LAYER = (16 + 256) * 4  # its float32 code tables: NF4's 16 levels, the absmax's 256
# A plan fits a budget when it needs at most this share of it: the CUDA allocator's caching and
# fragmentation, cuBLAS workspaces and the CUDA context live in the rest.
BUDGET_SHARE = 0.9
DEFAULT_CAPTION_TOKENS = 64  # without a training manifest to measure
PLAN_ATTENTION = "vlmcap_memory_plan"


class _FusedAttention(torch.autograd.Function):
    """What a fused attention kernel allocates and keeps for backward, with no values computed."""

    @staticmethod
    def forward(ctx, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        out = query.new_empty(query.shape)
        logsumexp = query.new_empty(query.shape[:-1], dtype=torch.float32)
        ctx.save_for_backward(query, key, value, out, logsumexp)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        query, key, value, _, _ = ctx.saved_tensors
        return torch.empty_like(query), torch.empty_like(key), torch.empty_like(value)


def _plan_attention(module: nn.Module, query, key, value, attention_mask, **kwargs) -> tuple[torch.Tensor, None]:
    # transformers' attention interface: (B, H, T, D) in, (B, T, H, D) out.
    return _FusedAttention.apply(query, key, value).transpose(1, 2), None


AttentionInterface.register(PLAN_ATTENTION, _plan_attention)


def training_autocast(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a training step runs under bf16 autocast: on CUDA in bfloat16 (training/trainer.py)."""
    return device.type == "cuda" and dtype == torch.bfloat16


@dataclass(frozen=True)
class MemoryPlan:
    """Bytes one training step needs at its peak, by part; `total_bytes` is what must fit."""

    device: str
    dtype: str
    batch_size: int
    sequence_tokens: int
    caption_tokens: int
    checkpointed_layers: int  # decoder layers recomputed in backward instead of kept
    num_layers: int
    parts: dict[str, int]
    vision_pass_bytes: int  # the encoder's pass alone (no gradients): inside "activations"
    logits_bytes: int  # the kept logits, their float32 copy and log-softmax: inside "activations"

    @property
    def total_bytes(self) -> int:
        return sum(self.parts.values())

    @property
    def checkpointing(self) -> str:
        """`off`, `all` or `K of N layers`: what the plan's gradient checkpointing is."""
        if self.checkpointed_layers == 0:
            return "off"
        if self.checkpointed_layers == self.num_layers:
            return "all"
        return f"{self.checkpointed_layers} of {self.num_layers} layers"

    def fits(self, budget_bytes: float) -> bool:
        return self.total_bytes <= BUDGET_SHARE * budget_bytes

    def to_dict(self) -> dict:
        gb = lambda n: round(n / 2**30, 3)  # noqa: E731  (GB = 2**30 bytes, as torch.cuda counts)
        return {
            "device": self.device,
            "dtype": self.dtype,
            "batch_size": self.batch_size,
            "sequence_tokens": self.sequence_tokens,
            "caption_tokens": self.caption_tokens,
            "checkpointed_layers": self.checkpointed_layers,
            "num_layers": self.num_layers,
            "total_gb": gb(self.total_bytes),
            "parts_gb": {name: gb(n) for name, n in self.parts.items()},
            "vision_pass_gb": gb(self.vision_pass_bytes),
            "logits_gb": gb(self.logits_bytes),
        }


def decoder_layers(llm: nn.Module) -> list[nn.Module]:
    """The LLM's layers that transformers can checkpoint, in order."""
    return [m for m in llm.modules() if isinstance(m, GradientCheckpointingLayer)]


def set_checkpointed_layers(llm: nn.Module, count: int) -> None:
    """Checkpoint the first `count` decoder layers of `llm` (a transformers model, LoRA-wrapped or not).

    transformers' switch is all layers or none; each layer has its own flag behind it
    (`GradientCheckpointingLayer.gradient_checkpointing`), set here after the switch.
    """
    if count == 0:
        llm.gradient_checkpointing_disable()
        return
    llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for index, layer in enumerate(decoder_layers(llm)):
        layer.gradient_checkpointing = index < count


def _nbytes(tensors: Sequence[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def _llm_weight_bytes(llm: nn.Module, quantized: bool) -> tuple[int, int]:
    """(bytes of the frozen LLM, elements of its largest quantized weight) as vlmcap/model/llm.py loads it.

    With 4-bit, bitsandbytes quantizes every Linear layer but the output head (transformers keeps
    the head, and the embedding tied to it, in the compute dtype).
    """
    head = llm.get_output_embeddings()
    nf4 = [m.weight for m in llm.modules() if quantized and isinstance(m, nn.Linear) and m is not head]
    nf4_ids = {id(w) for w in nf4}
    dense = [p for p in llm.parameters() if id(p) not in nf4_ids] + list(llm.buffers())
    nf4_bytes = sum(w.numel() for w in nf4) * NF4_BYTES_PER_WEIGHT + len(nf4) * NF4_BYTES_PER_LAYER
    return round(nf4_bytes) + _nbytes(dense), max((w.numel() for w in nf4), default=0)


def longest_caption_tokens(captions: Sequence[str], tokenizer: PreTrainedTokenizerBase) -> int:
    """Tokens of the longest caption (the batch the step pads to at worst)."""
    if not captions:
        return DEFAULT_CAPTION_TOKENS
    ids = tokenizer(list(captions), add_special_tokens=False)["input_ids"]
    return max(len(i) for i in ids)


def device_memory_bytes(device: torch.device) -> int:
    """The memory a training step can use by default: the GPU's, or the machine's RAM on a CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def memory_budget_bytes(memory_budget_gb: float | None, device: torch.device) -> float | None:
    """What a training step may use: train.memory_budget_gb, else the device's memory; None where this
    machine cannot say (a plan for cuda on a machine without one)."""
    if memory_budget_gb:
        return memory_budget_gb * 2**30
    if device.type == "cuda" and not torch.cuda.is_available():
        return None
    return device_memory_bytes(device)


class MemoryPlanner:
    """The training step of a config, built once on the meta device; `plan(k)` traces it with k layers checkpointed.

    The caption length is `caption_tokens`, else the longest of `captions` (the training
    manifest's), else DEFAULT_CAPTION_TOKENS. Only configs, tokenizers and shapes are read: no weights.
    """

    def __init__(
        self,
        config: VlmcapConfig,
        device: str | torch.device,
        captions: Sequence[str] = (),
        caption_tokens: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.dtype = compute_dtype(config.model.llm.dtype, self.device)
        self.batch_size = config.train.batch_size
        autocast = training_autocast(self.device, self.dtype)
        meta = torch.device("meta")

        llm_config = config.model.llm
        llm_source = resolve_model_source(llm_config.model, seed=config.seed)
        tokenizer = load_tokenizer(llm_source, llm_config)
        self.caption_tokens = caption_tokens or longest_caption_tokens(captions, tokenizer)
        hf_config = AutoConfig.from_pretrained(
            llm_source.path, revision=llm_config.revision, trust_remote_code=llm_config.trust_remote_code
        ).get_text_config()
        vision_source = resolve_model_source(config.model.vision.model, seed=config.seed)
        with meta:
            llm = AutoModelForCausalLM.from_config(
                hf_config,
                dtype=self.dtype,
                attn_implementation=PLAN_ATTENTION,
                trust_remote_code=llm_config.trust_remote_code,
            )
            llm.requires_grad_(False)
            llm_bytes, largest_nf4 = _llm_weight_bytes(llm, llm_config.quantize == "4bit")
            vision = load_vision_tower(vision_source.path, config.model.vision, dtype=self.dtype, random_init=True)
            vision.model.set_attn_implementation(PLAN_ATTENTION)
            geometry = ProjectorGeometry(
                vision_hidden_size=vision.hidden_size, llm_hidden_size=hf_config.hidden_size, grid_size=vision.grid_size
            )
            projector = build_projector(config.model.projector, geometry)
            if config.train.stage == "lora":
                llm = add_lora(llm, config.model.lora)
        self.model = VideoLanguageModel(vision, projector, llm, tokenizer, config).train()
        self.num_layers = len(decoder_layers(llm))
        self.trainable = [p for _, p in self.model.trainable_parameters()]
        trainable_count = sum(p.numel() for p in self.trainable)
        self.parts = {
            "llm weights": llm_bytes,
            "vision encoder weights": _nbytes([*vision.parameters(), *vision.buffers()]),
            "projector weights": _nbytes(list(projector.parameters())),
            "LoRA weights": 4 * sum(p.numel() for p in llm.parameters() if p.requires_grad),  # peft: float32
            "AdamW state": 2 * 4 * trainable_count,
        }
        if autocast:
            for p in self.trainable:
                p.data = p.data.to(self.dtype)
        dtype_bytes = torch.finfo(self.dtype).bits // 8
        # Per trainable weight under autocast: a float32 gradient where the trace makes a bf16 one (+2)
        # and autocast's bf16 copy of the weight for the step (+2). With NF4, the one weight a layer
        # dequantizes at a time.
        self.unseen_bytes = (4 * trainable_count if autocast else 0) + largest_nf4 * dtype_bytes

        eot = self.model.prompts.end_of_turn_id
        self.prompt = dataclasses.replace(self.model.prompts.encode(None), target=[eot] * (self.caption_tokens + 1))
        frames = config.video.num_frames
        if config.train.feature_cache:  # cached encoder outputs instead of frames (training/features.py)
            self.pixels = None
            self.features = torch.empty(
                self.batch_size, frames, vision.num_patches, vision.hidden_size, dtype=torch.float16, device=meta
            )
            self.vision_pass_bytes = 0
        else:
            self.pixels = torch.empty(self.batch_size, frames, 3, vision.image_size, vision.image_size, device=meta)
            self.features = None
            with PeakTensorMemory() as memory:
                vision(self.pixels)
            self.vision_pass_bytes = memory.peak_bytes
        self.logits_bytes = self.batch_size * (self.caption_tokens + 1) * hf_config.vocab_size * (dtype_bytes + 8)

    def plan(self, checkpointed_layers: int) -> MemoryPlan:
        if not 0 <= checkpointed_layers <= self.num_layers:
            raise ValueError(f"checkpointed_layers={checkpointed_layers}: the LLM has {self.num_layers} layers")
        set_checkpointed_layers(self.model.llm, checkpointed_layers)
        with PeakTensorMemory() as memory:
            batch = self.model.embed(self.pixels, [self.prompt] * self.batch_size, "right", features=self.features)
            # Rows of one length need no mask; transformers would read one's values to decide so.
            batch.attention_mask = None
            caption_loss(self.model.llm, batch).backward()
            del batch
        for p in self.trainable:
            p.grad = None
        p = self.prompt
        return MemoryPlan(
            device=self.device.type,
            dtype=str(self.dtype).removeprefix("torch."),
            batch_size=self.batch_size,
            sequence_tokens=len(p.before) + self.model.tokens_per_video + len(p.after) + len(p.target),
            caption_tokens=self.caption_tokens,
            checkpointed_layers=checkpointed_layers,
            num_layers=self.num_layers,
            parts={**self.parts, "activations": memory.peak_bytes + self.unseen_bytes},
            vision_pass_bytes=self.vision_pass_bytes,
            logits_bytes=self.logits_bytes,
        )

    def choose(self, asked: bool | str, budget_bytes: float | None) -> MemoryPlan:
        """The plan for `train.gradient_checkpointing` = `asked` (true, false or auto) within a budget.

        `auto` checkpoints the fewest layers that fit: every layer keeps about as much as the next,
        so the count is interpolated between none and all, then traced, one layer up or down at a
        time, until one layer fewer would not fit. Without
        a budget an explicit choice is taken as it is. A ConfigError names what would be needed.
        """
        if asked != "auto":
            plan = self.plan(self.num_layers if asked else 0)
            if budget_bytes is not None and not plan.fits(budget_bytes):
                raise _too_small(plan, budget_bytes)
            return plan
        if budget_bytes is None:
            raise ValueError("gradient_checkpointing=auto needs a budget")
        none = self.plan(0)
        if none.fits(budget_bytes):
            return none
        every = self.plan(self.num_layers)
        if not every.fits(budget_bytes):
            raise _too_small(every, budget_bytes)
        saved_per_layer = (none.total_bytes - every.total_bytes) / self.num_layers
        count = min(
            max(1, math.ceil((none.total_bytes - BUDGET_SHARE * budget_bytes) / saved_per_layer)), self.num_layers
        )
        plan = self.plan(count)
        if plan.fits(budget_bytes):  # walk down while one layer fewer still fits ...
            while count > 1 and (fewer := self.plan(count - 1)).fits(budget_bytes):
                count, plan = count - 1, fewer
        else:  # ... or up until it fits (all layers do)
            while not plan.fits(budget_bytes):
                count += 1
                plan = self.plan(count)
        return plan


def _too_small(plan: MemoryPlan, budget_bytes: float) -> ConfigError:
    checkpointing = "with" if plan.checkpointed_layers else "without"
    return ConfigError(
        f"train.memory_budget_gb={budget_bytes / 2**30:.3g}: a training step needs {plan.total_bytes / 2**30:.3g} GB "
        f"{checkpointing} gradient checkpointing (batch {plan.batch_size} x {plan.sequence_tokens} tokens), more "
        f"than {BUDGET_SHARE:.0%} of the budget; lower train.batch_size"
        + ("" if plan.checkpointed_layers else " or set train.gradient_checkpointing=auto")
        + " (vlmcap train --plan shows the parts)"
    )
