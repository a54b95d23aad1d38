"""vlmcap/model/vlm.py, `caption_loss`: the LM head only where a caption token is predicted gives the loss
and the training of transformers' `labels=` path, with LoRA and with QLoRA, for far less memory."""

from __future__ import annotations

import pytest
import torch

from vlmcap.bench.tensor_memory import PeakTensorMemory
from vlmcap.config.loading import load_config
from vlmcap.model.vlm import VideoLanguageModel, caption_loss

CAPTIONS = [
    "빨간색 원이 왼쪽에서 오른쪽으로 움직입니다.",
    "파란색 사각형",
    "초록색 삼각형이 위로 천천히 올라갑니다. 배경은 검은색입니다.",
]


def _frames(batch: int) -> torch.Tensor:
    return torch.randn(batch, 8, 3, 112, 112, generator=torch.Generator().manual_seed(0))


def _labels_path_loss(model: VideoLanguageModel, pixels: torch.Tensor, prompts: list) -> torch.Tensor:
    """What `forward` returned before: transformers' loss from full-vocabulary logits everywhere."""
    batch = model.embed(pixels, prompts, padding_side="right")
    out = model.llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, labels=batch.labels)
    return out.loss


def _model(quantize: str) -> VideoLanguageModel:
    config = load_config(preset="tiny", overrides=[f"model.llm.quantize={quantize}", "train.stage=lora"])
    return VideoLanguageModel.from_config(config)


@pytest.mark.parametrize("quantize", ["none", "4bit"])
def test_same_loss_and_same_weights_after_steps_as_the_labels_path(quantize: str) -> None:
    ours, theirs = _model(quantize), _model(quantize)
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        assert torch.equal(a.detach(), b.detach())  # the same seeded start
    prompts = [ours.prompts.encode(caption=c) for c in CAPTIONS]  # three caption lengths: padding inside the span
    pixels = _frames(len(CAPTIONS))
    ours.train()
    theirs.train()
    with torch.no_grad():
        assert (
            abs(caption_loss(ours.llm, ours.embed(pixels, prompts, "right")) - _labels_path_loss(ours, pixels, prompts))
            < 1e-6
        )

    optimizers = [torch.optim.AdamW([p for _, p in m.trainable_parameters()], lr=1e-2) for m in (ours, theirs)]
    for _ in range(3):
        for model, optimizer, loss_of in zip(
            (ours, theirs),
            optimizers,
            (lambda m: m(pixels, prompts), lambda m: _labels_path_loss(m, pixels, prompts)),
            strict=True,
        ):
            optimizer.zero_grad()
            loss = loss_of(model)
            loss.backward()
            optimizer.step()
    for (name, a), (_, b) in zip(ours.trainable_parameters(), theirs.trainable_parameters(), strict=True):
        assert torch.allclose(a.detach(), b.detach(), atol=1e-5, rtol=1e-4), name


def _peak_bytes(step) -> int:
    with PeakTensorMemory() as memory:
        step()
    return memory.peak_bytes


def test_a_training_step_peaks_far_lower_without_full_vocabulary_logits() -> None:
    """Peak tensor memory of one forward + backward (vlmcap/bench/tensor_memory.py, on CPU), same
    model, same batch, at a reduced shape with the seed's proportions: Qwen3 layers with a
    vocabulary 128x the hidden size (Qwen3-0.6B: 148x), 1,250 rows per video of which 30 are
    caption tokens, batch 2."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from vlmcap.model.embeddings import IGNORE_INDEX, EmbeddedBatch

    torch.manual_seed(0)
    config = Qwen3Config(
        vocab_size=16_384, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=2048,
    )  # fmt: skip
    llm = Qwen3ForCausalLM(config).train()
    rows, caption = 1_250, 30
    labels = torch.full((2, rows), IGNORE_INDEX)
    labels[0, -caption:] = torch.randint(0, config.vocab_size, (caption,))
    labels[1, -caption - 5 : -5] = torch.randint(0, config.vocab_size, (caption,))  # a shorter row, padded
    embeds = torch.randn(2, rows, config.hidden_size, requires_grad=True)  # stands for the projector's rows
    mask = torch.ones(2, rows, dtype=torch.long)
    mask[1, -5:] = 0
    batch = EmbeddedBatch(embeds, mask, labels, [rows, rows - 5], "right", (rows - caption - 5, rows - 1))

    def labels_path() -> torch.Tensor:
        return llm(inputs_embeds=embeds, attention_mask=mask, labels=labels).loss

    assert abs(caption_loss(llm, batch).item() - labels_path().item()) < 1e-6
    before = _peak_bytes(lambda: labels_path().backward())
    after = _peak_bytes(lambda: caption_loss(llm, batch).backward())
    print(f"peak of one step: labels= path {before / 2**20:.1f} MiB, caption_loss {after / 2**20:.1f} MiB")
    assert after < before / 3  # measured 2026-12-04: see docs/PERFORMANCE.md, "Training memory"
