"""The shipped LLM's logits against the un-merged model's, with one model and one video in memory.

The un-merged model's logits over the sample inputs (vision rows + default prompt) are written to a
work folder, one float32 file per video (0.7 GB per video at Qwen3's 151,936-token vocabulary and
1,200 rows), and the model is released. The shipped checkpoint's logits are then compared with them
video by video, a block of positions at a time (verify.RunningComparison), counting greedy-token
agreement on the way. Each video runs alone, so no padding enters the comparison and one video's
logits are the most that is ever in memory.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from vlmcap.errors import ExportError
from vlmcap.export.verify import RunningComparison
from vlmcap.model.embeddings import build_inputs_embeds
from vlmcap.model.prompt import PromptBuilder

POSITIONS_PER_BLOCK = 32  # the comparison's float64 temporaries of 32 x 151,936 logits: about 0.3 GB


@torch.no_grad()
def video_logits(model: nn.Module, vision_rows: torch.Tensor, prompts: PromptBuilder) -> torch.Tensor:
    """(positions, vocab) logits of one video's rows (V, D) inside the default prompt."""
    embed = model.get_input_embeddings()
    rows = vision_rows[None].to(embed.weight.device, embed.weight.dtype)
    batch = build_inputs_embeds(rows, [prompts.encode(None)], embed, "right")
    return model(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask).logits[0]


class ReferenceLogits:
    """The un-merged model's logits, kept on disk in `folder` until the shipped model is compared."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shapes: list[tuple[int, int]] = []

    def _file(self, index: int) -> Path:
        return self.folder / f"reference-logits-{index}.f32"

    def record(self, model: nn.Module, vision_rows: torch.Tensor, prompts: PromptBuilder) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for index, rows in enumerate(vision_rows):
            logits = video_logits(model, rows, prompts).float().cpu()
            logits.numpy().tofile(self._file(index))  # written by write(), not mapped: no page stays in RSS
            self.shapes.append((int(logits.shape[0]), int(logits.shape[1])))
            del logits

    def compare(self, model: nn.Module, vision_rows: torch.Tensor, prompts: PromptBuilder) -> dict:
        """verify.compare's statistics over every position, plus `top1_agreement` and `positions`."""
        stats, agree, positions = RunningComparison(), 0, 0
        for index, rows in enumerate(vision_rows):
            logits = video_logits(model, rows, prompts)
            length, vocab = self.shapes[index]
            if tuple(logits.shape) != (length, vocab):
                raise ExportError(
                    f"merged LLM logits {tuple(logits.shape)} differ from the reference's {(length, vocab)}"
                )
            for start in range(0, length, POSITIONS_PER_BLOCK):
                count = min(POSITIONS_PER_BLOCK, length - start)
                ref = np.fromfile(self._file(index), np.float32, count * vocab, offset=start * vocab * 4)
                ref = ref.reshape(count, vocab)
                out = logits[start : start + count].float().cpu().numpy()
                stats.update(ref, out)
                agree += int((ref.argmax(-1) == out.argmax(-1)).sum())
                positions += count
            del logits
        return {**stats.result(), "top1_agreement": agree / max(positions, 1), "positions": positions}
