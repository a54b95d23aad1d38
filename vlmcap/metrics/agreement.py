"""Whether a lower precision captions as float32 does: greedy captions, and the share of a reference
caption's tokens a model predicts (teacher-forced). The export's caption gate (export/caption_gate.py)
and the engines' precision check before a run (engines/runtime/engine_choice.py) both judge by these.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers import PreTrainedModel

from vlmcap.model.embeddings import IGNORE_INDEX, build_inputs_embeds
from vlmcap.model.generation import GenerationParams, generate_from_embeds
from vlmcap.model.prompt import PromptBuilder, PromptTokens

Rows = Callable[[torch.Tensor], torch.Tensor]  # token ids -> embedding rows


def greedy_captions(
    model: PreTrainedModel,
    rows: Rows,
    vision_rows: torch.Tensor,
    prompts: PromptBuilder,
    stop_ids: Sequence[int],
    max_new_tokens: int,
) -> list[list[int]]:
    """Greedy token ids per video (through the first stop token), generated as the engines generate."""
    batch = build_inputs_embeds(vision_rows, [prompts.encode(None)] * len(vision_rows), rows, "left")
    params = GenerationParams(max_new_tokens=max_new_tokens, stop_token_ids=list(stop_ids))
    return [g.token_ids for g in generate_from_embeds(model, batch, params, model.generation_config.pad_token_id)]


@torch.no_grad()
def token_agreement(
    model: PreTrainedModel, rows: Rows, vision_rows: torch.Tensor, prompts: PromptBuilder, reference: list[list[int]]
) -> float:
    """Share of reference tokens that are the model's greedy next token given the reference so far.

    One video at a time: the logits of all of them at once are videos x rows x vocabulary (6 GB for
    8 videos of 1,300 rows at Qwen3's 151,936 tokens).
    """
    device = next(model.parameters()).device
    base = prompts.encode(None)
    agreeing = scored_total = 0
    for video_rows, ids in zip(vision_rows, reference, strict=True):
        batch = build_inputs_embeds(video_rows[None], [PromptTokens(base.before, base.after, ids)], rows, "right")
        logits = model(
            inputs_embeds=batch.inputs_embeds.to(device, model.dtype), attention_mask=batch.attention_mask.to(device)
        ).logits
        predicted = logits[:, :-1].argmax(-1).cpu()
        del logits
        labels = batch.labels[:, 1:]
        scored = labels != IGNORE_INDEX
        agreeing += int((predicted[scored] == labels[scored]).sum())
        scored_total += int(scored.sum())
    return agreeing / scored_total if scored_total else 1.0
