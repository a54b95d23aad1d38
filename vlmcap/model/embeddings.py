"""The one function that builds LLM input embeddings from vision rows and prompt tokens.

Training, the PyTorch engine and the vLLM engine all call `build_inputs_embeds`, so the
sequence layout (docs/MODEL.md) cannot drift between them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from vlmcap.model.prompt import PromptTokens

IGNORE_INDEX = -100  # transformers' cross-entropy ignore label


@dataclass
class EmbeddedBatch:
    inputs_embeds: torch.Tensor  # (B, L, D), padded
    attention_mask: torch.Tensor  # (B, L), 1 on real positions
    labels: torch.Tensor | None  # (B, L), IGNORE_INDEX except caption + end-of-turn; None without targets
    lengths: list[int]  # unpadded length of each row
    padding_side: Literal["left", "right"]
    # First and last labelled position over all rows (inclusive); None without targets. Kept as
    # plain ints so that a loss can slice by them without reading a tensor (the memory plan runs
    # the training step on the meta device, where tensors have no values).
    supervised_span: tuple[int, int] | None = None

    def unpadded(self, i: int) -> torch.Tensor:
        """Row i without padding, (lengths[i], D): the shape vLLM's `prompt_embeds` takes."""
        n = self.lengths[i]
        row = self.inputs_embeds[i]
        return row[-n:] if self.padding_side == "left" else row[:n]


def build_inputs_embeds(
    vision_embeds: torch.Tensor,
    prompts: Sequence[PromptTokens],
    embed_tokens: Callable[[torch.Tensor], torch.Tensor],
    padding_side: Literal["left", "right"] = "right",
) -> EmbeddedBatch:
    """[before ids] [T*M vision rows] [after ids] [target ids] per sample, padded into one batch.

    `vision_embeds` is (B, V, D) from the projector; `embed_tokens` maps token ids to rows of the
    LLM's input embedding table (the model's own layer, or a table read from the checkpoint).
    Generation uses left padding; training uses right padding and gets labels.
    """
    if vision_embeds.shape[0] != len(prompts):
        raise ValueError(f"{vision_embeds.shape[0]} videos but {len(prompts)} prompts")
    device = vision_embeds.device
    all_ids = [ids for p in prompts for ids in (p.before, p.after + p.target)]
    flat = torch.tensor([i for ids in all_ids for i in ids], dtype=torch.long, device=device)
    text_rows = embed_tokens(flat)  # one lookup for the whole batch
    vision_embeds = vision_embeds.to(text_rows.dtype)
    pieces = torch.split(text_rows, [len(ids) for ids in all_ids])

    rows, label_rows = [], []
    num_vision = vision_embeds.shape[1]
    with_labels = any(p.target for p in prompts)
    for i, p in enumerate(prompts):
        rows.append(torch.cat([pieces[2 * i], vision_embeds[i], pieces[2 * i + 1]]))
        if with_labels:
            ignored = len(p.before) + num_vision + len(p.after)
            label_rows.append([IGNORE_INDEX] * ignored + list(p.target))

    lengths = [r.shape[0] for r in rows]
    inputs_embeds = pad_sequence(rows, batch_first=True, padding_side=padding_side)
    attention_mask = pad_sequence(
        [torch.ones(n, dtype=torch.long, device=device) for n in lengths],
        batch_first=True,
        padding_side=padding_side,
    )
    labels, span = None, None
    if with_labels:
        labels = pad_sequence(
            [torch.tensor(row, dtype=torch.long, device=device) for row in label_rows],
            batch_first=True,
            padding_value=IGNORE_INDEX,
            padding_side=padding_side,
        )
        # Each row's targets are its last len(target) positions, shifted by its left padding.
        ends = [
            (max(lengths) if padding_side == "left" else n) - len(p.target) + np.arange(len(p.target))
            for p, n in zip(prompts, lengths, strict=True)
        ]
        positions = np.concatenate(ends)
        span = (int(positions.min()), int(positions.max()))
    return EmbeddedBatch(inputs_embeds, attention_mask, labels, lengths, padding_side, span)
