"""Offline presets: deterministic tiny models, a Qwen3-shaped tokenizer, exact real-size shapes."""

from __future__ import annotations

import hashlib

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, CLIPVisionModel

from vlmcap.errors import ModelError
from vlmcap.presets import PRESETS, materialize_preset, resolve_model_source
from vlmcap.presets.tokenizer import QWEN3_ADDED_TOKENS


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", ["tiny-clip", "tiny-qwen3"])
def test_tiny_presets_are_deterministic_for_a_seed(name: str, tmp_path) -> None:
    # A few pretraining steps exercise the same code as the full recipe, in a fraction of the time.
    a = materialize_preset(name, tmp_path / "a", seed=3, pretrain_steps=3)
    b = materialize_preset(name, tmp_path / "b", seed=3, pretrain_steps=3)
    c = materialize_preset(name, tmp_path / "c", seed=4, pretrain_steps=3)
    assert _digest(a / "model.safetensors") == _digest(b / "model.safetensors")
    assert _digest(a / "model.safetensors") != _digest(c / "model.safetensors")
    if name == "tiny-qwen3":
        assert _digest(a / "tokenizer.json") == _digest(b / "tokenizer.json")


def test_materialize_is_idempotent_and_leaves_no_temp_dirs(tmp_path) -> None:
    out = materialize_preset("tiny-clip", tmp_path / "clip", pretrain_steps=2)
    stamp = (out / "model.safetensors").stat().st_mtime_ns
    assert materialize_preset("tiny-clip", tmp_path / "clip") == out
    assert (out / "model.safetensors").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["clip"]


def test_tiny_llm_loads_with_plain_transformers_and_has_qwen3_tokens() -> None:
    path = resolve_model_source("preset:tiny-qwen3").path
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    assert model.config.model_type == "qwen3"
    tokenizer = AutoTokenizer.from_pretrained(path)
    ids = [tokenizer.convert_tokens_to_ids(t) for t, _ in QWEN3_ADDED_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # Qwen's order, at the end of the vocabulary
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.get_input_embeddings().num_embeddings == len(tokenizer)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "안녕"}], tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    assert text == "<|im_start|>user\n안녕<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    # Special tokens are atomic, Korean round-trips through the byte-level BPE.
    assert tokenizer("<|im_end|>", add_special_tokens=False)["input_ids"] == [ids[2]]
    sentence = "파란색 삼각형이 위에서 아래로 움직입니다."
    assert tokenizer.decode(tokenizer(sentence)["input_ids"]) == sentence


def test_tiny_vision_preset_is_a_clip_checkpoint_with_its_processor_config() -> None:
    import json
    from pathlib import Path

    path = Path(resolve_model_source("preset:tiny-clip").path)
    model = CLIPVisionModel.from_pretrained(path, use_safetensors=True)
    assert model.config.image_size == 112 and model.config.patch_size == 14
    processor = json.loads((path / "preprocessor_config.json").read_text())
    assert processor["crop_size"] == {"height": 112, "width": 112}
    assert processor["image_mean"][0] == pytest.approx(0.48145466)


def _params_on_meta(path: str, vision: bool) -> int:
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        model = CLIPVisionModel(config) if vision else AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("name", "params"),
    [
        # openai/clip-vit-large-patch14-336 vision tower: 24 layers x 12,596,224 + embeddings + pre/post LN.
        ("clip-vit-large-patch14-336-random", 303_507_456),
        # Qwen/Qwen3-8B: 36 layers x 192,946,432 + untied embeddings and lm_head (151936 x 4096 each) + norm.
        ("qwen3-8b-random", 8_190_735_360),
        # Qwen/Qwen3-0.6B: 28 layers, tied embeddings.
        ("qwen3-0.6b-random", 596_049_920),
    ],
)
def test_real_size_presets_have_the_reference_shapes(name: str, params: int) -> None:
    source = resolve_model_source(f"preset:{name}")
    assert source.random_init
    assert _params_on_meta(source.path, vision=name.startswith("clip")) == params


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="known presets: tiny-clip"):
        resolve_model_source("preset:giant")


def test_hub_ids_and_paths_pass_through_unchanged(tmp_path) -> None:
    assert resolve_model_source("Qwen/Qwen3-8B").path == "Qwen/Qwen3-8B"
    assert resolve_model_source(str(tmp_path)).path == str(tmp_path)
    assert not resolve_model_source(str(tmp_path)).random_init
    assert set(PRESETS) >= {"tiny-clip", "tiny-qwen3", "qwen3-8b-random"}
