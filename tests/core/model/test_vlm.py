"""The assembled model: frozen tower, prompt layout, one embedding function, what trains and what doesn't."""

from __future__ import annotations

import pytest
import torch

from vlmcap.config.loading import load_config
from vlmcap.errors import ModelError
from vlmcap.model.embeddings import IGNORE_INDEX, build_inputs_embeds
from vlmcap.model.prompt import PromptTokens
from vlmcap.model.vision_tower import VisionTower, load_vision_tower
from vlmcap.model.vlm import VideoLanguageModel

CAPTION = "빨간색 원이 왼쪽에서 오른쪽으로 움직입니다."


def _frames(batch: int = 2, frames: int = 8, size: int = 112) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_vision_tower_drops_cls_and_uses_the_configured_layer(tiny_model) -> None:
    tower: VisionTower = tiny_model.vision
    pixels = _frames(1, 2)
    features = tower(pixels)
    assert features.shape == (1, 2, 64, 64)
    hidden = tower.model(pixel_values=pixels.flatten(0, 1), output_hidden_states=True).hidden_states
    torch.testing.assert_close(features.flatten(0, 1), hidden[-2][:, 1:])  # layer -2, CLS removed


def test_vision_tower_stays_frozen_in_train_mode(tiny_model) -> None:
    tiny_model.train()
    try:
        assert not tiny_model.vision.training and not tiny_model.vision.model.training
        assert not any(p.requires_grad for p in tiny_model.vision.parameters())
        assert tiny_model.vision(_frames(1, 1)).requires_grad is False
    finally:
        tiny_model.eval()


def test_siglip_vision_models_work_without_cls(tmp_path) -> None:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    )
    SiglipVisionModel(config).save_pretrained(tmp_path)
    tower = load_vision_tower(str(tmp_path), load_config().model.vision)
    assert tower(torch.randn(2, 3, 3, 32, 32)).shape == (2, 3, 16, 32)


def test_out_of_range_feature_layer_is_a_clear_error(tiny_config) -> None:
    from vlmcap.presets import resolve_model_source

    config = load_config(preset="tiny", overrides=["model.vision.feature_layer=7"])
    source = resolve_model_source(config.model.vision.model)
    with pytest.raises(ModelError, match="feature_layer=7"):
        load_vision_tower(source.path, config.model.vision)


def test_prompt_uses_qwen3_chat_template_in_non_thinking_mode(tiny_model) -> None:
    before, after = tiny_model.prompts.render()
    assert before == "<|im_start|>user\n"
    assert (
        after == "\n이 영상을 한국어로 자세히 설명해 주세요.<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    # An explicit placeholder is kept where the user put it.
    before, after = tiny_model.prompts.render("다음 영상: <video> 설명해 주세요.")
    assert before.endswith("다음 영상: ") and after.startswith(" 설명해 주세요.")


def test_prompt_with_two_placeholders_is_rejected(tiny_model) -> None:
    from vlmcap.errors import ConfigError

    with pytest.raises(ConfigError, match="2 <video> placeholders"):
        tiny_model.prompts.encode("<video> <video>")


def test_labels_cover_caption_and_end_of_turn_only(tiny_model) -> None:
    captions = [CAPTION, "원"]
    prompts = [tiny_model.prompts.encode(caption=c) for c in captions]
    batch = tiny_model.embed(_frames(), prompts, padding_side="right")
    tokenizer = tiny_model.tokenizer
    for i, p in enumerate(prompts):
        labelled = batch.labels[i][batch.labels[i] != IGNORE_INDEX].tolist()
        assert labelled == p.target
        assert labelled[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert tokenizer.decode(labelled[:-1]) == captions[i]
        start = len(p.before) + tiny_model.tokens_per_video + len(p.after)
        assert batch.labels[i, :start].eq(IGNORE_INDEX).all()
    assert batch.inputs_embeds.shape[1] == max(batch.lengths)
    assert batch.attention_mask.sum(1).tolist() == batch.lengths


def test_embedding_layout_places_vision_rows_between_the_prompt_halves(tiny_model) -> None:
    vision = torch.randn(1, 5, 128)
    p = PromptTokens(before=[1, 2], after=[3], target=[4, 5])
    table = tiny_model.llm.get_input_embeddings()
    batch = build_inputs_embeds(vision, [p], table)
    row = batch.inputs_embeds[0]
    torch.testing.assert_close(row[:2], table(torch.tensor([1, 2])))
    torch.testing.assert_close(row[2:7], vision[0])
    torch.testing.assert_close(row[7:], table(torch.tensor([3, 4, 5])))
    assert batch.labels[0].tolist() == [IGNORE_INDEX] * 8 + [4, 5]


def test_left_padding_keeps_rows_right_aligned_for_generation(tiny_model) -> None:
    table = tiny_model.llm.get_input_embeddings()
    prompts = [PromptTokens([1], [2, 3, 4]), PromptTokens([1], [2])]
    vision = torch.randn(2, 3, 128)
    left = build_inputs_embeds(vision, prompts, table, padding_side="left")
    right = build_inputs_embeds(vision, prompts, table, padding_side="right")
    assert left.labels is None
    assert left.attention_mask.tolist() == [[1] * 7, [0, 0] + [1] * 5]
    for i in range(2):
        torch.testing.assert_close(left.unpadded(i), right.unpadded(i))


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_supervised_span_is_where_the_labels_are(tiny_model, padding_side: str) -> None:
    table = tiny_model.llm.get_input_embeddings()
    prompts = [PromptTokens([1], [2, 3], [7, 8, 9]), PromptTokens([1, 2, 3, 4], [5], [7]), PromptTokens([1], [2])]
    batch = build_inputs_embeds(torch.randn(3, 2, 128), prompts, table, padding_side=padding_side)
    labelled = (batch.labels != IGNORE_INDEX).any(dim=0).nonzero().flatten().tolist()
    assert batch.supervised_span == (labelled[0], labelled[-1])
    assert build_inputs_embeds(torch.randn(1, 2, 128), prompts[2:], table).supervised_span is None


def test_greedy_generation_is_batch_invariant(tiny_model) -> None:
    """Left-padded batched generate gives each video the caption it gets alone."""
    pixels = _frames(2, 8)
    together = tiny_model.generate(pixels, ["짧게 설명해 주세요.", None], max_new_tokens=6)
    alone = [
        tiny_model.generate(pixels[:1], ["짧게 설명해 주세요."], max_new_tokens=6)[0],
        tiny_model.generate(pixels[1:], None, max_new_tokens=6)[0],
    ]
    assert together == alone


@pytest.mark.parametrize("quantize", ["none", "4bit"])
def test_backward_trains_projector_and_lora_only(quantize: str) -> None:
    config = load_config(preset="tiny", overrides=[f"model.llm.quantize={quantize}", "train.stage=lora"])
    model = VideoLanguageModel.from_config(config)
    trainable = dict(model.trainable_parameters())
    assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
    assert any("lora_A" in n for n in trainable) and any(n.startswith("projector.") for n in trainable)
    before = {n: p.detach().float().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(trainable.values(), lr=1e-2, weight_decay=0.0)
    prompts = [model.prompts.encode(caption=CAPTION), model.prompts.encode(caption="파란색 사각형")]
    model.train()
    for _ in range(2):  # LoRA B starts at zero, so A only receives gradient from the second step on
        optimizer.zero_grad()
        model(_frames(), prompts).backward()
        optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach().float())}
    assert changed == set(trainable)
    assert all(p.grad is None for n, p in model.named_parameters() if n not in trainable)
    if quantize == "4bit":
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.llm.modules())


def test_projector_stage_freezes_the_whole_llm(tiny_config) -> None:
    model = VideoLanguageModel.from_config(tiny_config)
    assert {n.split(".")[0] for n, _ in model.trainable_parameters()} == {"projector"}


def test_system_prompt_with_placeholder_is_rejected(tiny_model) -> None:
    from vlmcap.errors import ConfigError
    from vlmcap.model.prompt import PromptBuilder

    with pytest.raises(ConfigError, match="system_prompt must not contain <video>"):
        PromptBuilder(tiny_model.tokenizer, system_prompt="설명: <video>")
