"""The video-language model: frozen vision tower -> projector -> (LoRA) LLM, one forward where they meet."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

from vlmcap.config.schema import VlmcapConfig
from vlmcap.display_text import drop_cut_character
from vlmcap.model.embeddings import IGNORE_INDEX, EmbeddedBatch, build_inputs_embeds
from vlmcap.model.generation import GenerationParams, generate_from_embeds
from vlmcap.model.llm import add_lora, compute_dtype, load_llm, load_tokenizer
from vlmcap.model.projectors import FrameProjector, ProjectorGeometry, build_projector
from vlmcap.model.prompt import PromptBuilder, PromptTokens
from vlmcap.model.vision_tower import VisionTower, load_vision_tower
from vlmcap.presets import resolve_model_source

log = logging.getLogger(__name__)


def build_vision_side(
    config: VlmcapConfig, llm_hidden_size: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[VisionTower, FrameProjector]:
    """The frozen vision tower and a freshly initialised projector (seeded), without loading the LLM."""
    vision_source = resolve_model_source(config.model.vision.model, seed=config.seed)
    if vision_source.random_init:
        torch.manual_seed(vision_source.seed)  # random-weight presets are deterministic for a seed
    vision = load_vision_tower(
        vision_source.path, config.model.vision, dtype=dtype, random_init=vision_source.random_init
    ).to(device)
    geometry = ProjectorGeometry(
        vision_hidden_size=vision.hidden_size, llm_hidden_size=llm_hidden_size, grid_size=vision.grid_size
    )
    torch.manual_seed(config.seed)  # projector init is reproducible for a seed
    projector = build_projector(config.model.projector, geometry).to(device)
    return vision, projector


class VideoLanguageModel(nn.Module):
    """Vision tower (frozen) + projector (trainable) + LLM (frozen base, optional LoRA)."""

    def __init__(
        self,
        vision: VisionTower,
        projector: FrameProjector,
        llm: nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        config: VlmcapConfig,
    ) -> None:
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.llm = llm
        self.tokenizer = tokenizer
        self.config = config
        self.prompts = PromptBuilder(tokenizer, config.prompt.default_prompt, config.prompt.system_prompt)

    @classmethod
    def from_config(
        cls,
        config: VlmcapConfig,
        device: str | torch.device = "cpu",
        lora: bool | None = None,
    ) -> VideoLanguageModel:
        """Build from config; `lora` defaults to True for the `lora` training stage."""
        device = torch.device(device)
        llm_source = resolve_model_source(config.model.llm.model, seed=config.seed)
        tokenizer = load_tokenizer(llm_source, config.model.llm)
        llm = load_llm(llm_source, config.model.llm, device)
        vision, projector = build_vision_side(
            config, llm.get_input_embeddings().embedding_dim, device, compute_dtype(config.model.llm.dtype, device)
        )
        if lora if lora is not None else config.train.stage == "lora":
            llm = add_lora(llm, config.model.lora)
        return cls(vision, projector, llm, tokenizer, config)

    @property
    def tokens_per_video(self) -> int:
        return self.projector.tokens_per_frame * self.config.video.num_frames

    def vision_rows(
        self, pixel_values: torch.Tensor | None = None, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T*M, Dl) LLM rows of a video batch, from frames (B, T, 3, H, W) or cached features (B, T, N, Dv)."""
        if features is None:
            features = self.vision(pixel_values)
        return self.projector(features.to(next(self.projector.parameters()).dtype))

    def embed(
        self,
        pixel_values: torch.Tensor | None,
        prompts: Sequence[PromptTokens],
        padding_side: Literal["left", "right"] = "right",
        features: torch.Tensor | None = None,
    ) -> EmbeddedBatch:
        return build_inputs_embeds(
            self.vision_rows(pixel_values, features), prompts, self.llm.get_input_embeddings(), padding_side
        )

    def forward(
        self, pixel_values: torch.Tensor | None, prompts: Sequence[PromptTokens], features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean cross-entropy over caption + end-of-turn tokens."""
        batch = self.embed(pixel_values, prompts, padding_side="right", features=features)
        return caption_loss(self.llm, batch)

    @torch.no_grad()
    def generate(
        self,
        pixel_values: torch.Tensor | None,
        prompts: Sequence[str | None] | None = None,
        max_new_tokens: int = 64,
        features: torch.Tensor | None = None,
    ) -> list[str]:
        """Greedy captions, batched with left padding."""
        batch_size = (pixel_values if pixel_values is not None else features).shape[0]
        prompts = prompts or [None] * batch_size
        batch = self.embed(pixel_values, [self.prompts.encode(p) for p in prompts], "left", features)
        params = GenerationParams(max_new_tokens=max_new_tokens, stop_token_ids=[self.prompts.end_of_turn_id])
        generations = generate_from_embeds(self.llm, batch, params, self.tokenizer.pad_token_id)
        texts = self.tokenizer.batch_decode([g.token_ids for g in generations], skip_special_tokens=True)
        return [drop_cut_character(t).strip() for t in texts]

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]


def caption_loss(llm: nn.Module, batch: EmbeddedBatch) -> torch.Tensor:
    """Mean cross-entropy over the supervised tokens, the LM head applied only where one is predicted.

    Passing `labels=` to a transformers LLM computes full-vocabulary logits at every position (and
    a float32 copy of them): for 1,152 vision rows + ~40 prompt tokens + ~30 caption tokens per
    video that is ~98% waste, and the largest tensor of a training step (8 x 1,250 x 151,936 float32
    = 6 GB, twice, for Qwen3 at batch 8). Here the LM head sees only the span of positions that
    predict a caption token in some row of the batch (`logits_to_keep`, the same in every row: the
    captions follow the same vision rows and prompt), and the loss is transformers' own
    (`ForCausalLMLoss`: float32 logits, next-token targets, mean over supervised tokens), so values
    and gradients equal the `labels=` path.
    """
    if batch.labels is None or batch.supervised_span is None:
        raise ValueError("caption_loss: the batch has no caption targets")
    labels = batch.labels
    first, last = batch.supervised_span  # targets; position t - 1 predicts t
    keep = torch.arange(first - 1, last, device=labels.device)
    out = llm(
        inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, logits_to_keep=keep, use_cache=False
    )
    logits = out.logits.float()
    targets = labels[:, first : last + 1]
    return nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
