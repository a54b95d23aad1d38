"""Offline model presets (docs/MODEL.md), named `preset:NAME` wherever a model id goes.

- tiny presets: a small random CLIP-architecture encoder and a small Qwen3-architecture LLM with
  a BPE tokenizer trained here on generated Korean text. Materialized once per seed into
  `$VLMCAP_HOME/presets/` as ordinary HF checkpoint directories (safetensors), so every loader
  (transformers, peft, vLLM) reads them like a downloaded model.
- real-size random presets: the exact shapes of CLIP-ViT-L/14-336, Qwen3-0.6B and Qwen3-8B for
  throughput work. Only the config, tokenizer and image processor are written; weights are
  random-initialised (seeded) when loaded, unless `materialize_preset(..., with_weights=True)`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    CLIPVisionConfig,
    CLIPVisionModel,
    GenerationConfig,
    PretrainedConfig,
    Qwen3Config,
)

from vlmcap.errors import ModelError
from vlmcap.presets.tokenizer import train_korean_tokenizer
from vlmcap.storage.files import fsync_tree, remove_stale_temporaries, temp_sibling
from vlmcap.storage.home import presets_dir

PRESET_PREFIX = "preset:"
RECIPE_VERSION = 2  # bump when a preset's recipe changes, so stale materializations are not reused
MARKER_FILE = "vlmcap_preset.json"


@dataclass(frozen=True)
class ModelPreset:
    name: str
    role: Literal["vision", "llm"]
    description: str
    build_config: Callable[[int], PretrainedConfig]  # vocab size -> config (vision presets ignore it)
    weights_on_disk: bool  # tiny: saved; real-size: random-initialised at load time
    image_size: int = 0
    pretrain: bool = False  # tiny: a short pretraining on the synthetic world (presets/pretrain.py)


def _clip_config(hidden: int, layers: int, heads: int, inter: int, image: int, proj: int) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        image_size=image,
        patch_size=14,
        projection_dim=proj,
        hidden_act="quick_gelu",
    )


def _qwen3_config(
    vocab: int, hidden: int, inter: int, layers: int, heads: int, kv: int, head_dim: int, tie: bool
) -> Qwen3Config:
    return Qwen3Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        max_position_embeddings=40960,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        hidden_act="silu",
        attention_bias=False,
    )


def _family_config(family: str, vocab: int) -> PretrainedConfig:
    """A tiny causal LM of another family than Qwen3, to check what differs between families (the
    text embedding rows: Gemma scales them by sqrt(hidden) inside its embedding layer)."""
    from transformers import Exaone4Config, Gemma3TextConfig, LlamaConfig

    shape = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2)
    # head_dim 32: vLLM's CPU attention has no kernel for 16 (the engines are tested on these presets).
    shape |= dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=4096)
    if family == "llama":
        return LlamaConfig(**shape, tie_word_embeddings=True)
    if family == "gemma3":
        return Gemma3TextConfig(**shape, query_pre_attn_scalar=32, sliding_window=512, tie_word_embeddings=True)
    if family == "exaone4":
        return Exaone4Config(**shape, sliding_window=512, tie_word_embeddings=True)
    raise ValueError(family)


QWEN3_VOCAB = 151936

PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            "tiny-clip",
            "vision",
            "CLIP architecture, 112 px, 14 px patches (8x8 grid), hidden 64, 4 layers, pretrained on synthetic frames",
            lambda _: _clip_config(64, 4, 4, 256, 112, 64),
            weights_on_disk=True,
            image_size=112,
            pretrain=True,
        ),
        ModelPreset(
            "tiny-qwen3",
            "llm",
            "Qwen3 architecture, hidden 128, 2 layers, Korean byte-level BPE tokenizer with Qwen3's chat template, "
            "pretrained on synthetic Korean text",
            lambda vocab: _qwen3_config(vocab, 128, 384, 2, 4, 2, 32, tie=True),
            weights_on_disk=True,
            pretrain=True,
        ),
        *[
            ModelPreset(
                f"tiny-{family}-random",
                "llm",
                f"{label} architecture, hidden 64, 2 layers, the tiny Korean tokenizer and chat template, random "
                "weights (tests of what differs between LLM families)",
                lambda vocab, family=family: _family_config(family, vocab),
                weights_on_disk=True,
            )
            for family, label in (("llama", "Llama"), ("gemma3", "Gemma 3 (text)"), ("exaone4", "EXAONE 4"))
        ],
        ModelPreset(
            "clip-vit-large-patch14-336-random",
            "vision",
            "shapes of openai/clip-vit-large-patch14-336 (24x24 grid, hidden 1024, 24 layers), random weights",
            lambda _: _clip_config(1024, 24, 16, 4096, 336, 768),
            weights_on_disk=False,
            image_size=336,
        ),
        ModelPreset(
            "qwen3-0.6b-random",
            "llm",
            "shapes of Qwen/Qwen3-0.6B (hidden 1024, 28 layers, vocab 151936), random weights",
            lambda _: _qwen3_config(QWEN3_VOCAB, 1024, 3072, 28, 16, 8, 128, tie=True),
            weights_on_disk=False,
        ),
        ModelPreset(
            "qwen3-8b-random",
            "llm",
            "shapes of Qwen/Qwen3-8B (hidden 4096, 36 layers, vocab 151936), random weights",
            lambda _: _qwen3_config(QWEN3_VOCAB, 4096, 12288, 36, 32, 8, 128, tie=False),
            weights_on_disk=False,
        ),
    ]
}


@dataclass(frozen=True)
class ModelSource:
    """Where to load a model from, and whether its weights must be random-initialised instead."""

    path: str
    random_init: bool = False
    seed: int = 0


def get_preset(name: str) -> ModelPreset:
    key = name.removeprefix(PRESET_PREFIX)
    if key not in PRESETS:
        raise ModelError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}")
    return PRESETS[key]


def resolve_model_source(model: str, seed: int = 0) -> ModelSource:
    """A hub id / local path stays as it is; `preset:NAME` is materialized (once) and returned by path."""
    if not model.startswith(PRESET_PREFIX):
        return ModelSource(model)
    preset = get_preset(model)
    out_dir = presets_dir() / f"{preset.name}-v{RECIPE_VERSION}-seed{seed}"
    path = materialize_preset(preset.name, out_dir, seed=seed)
    return ModelSource(str(path), random_init=not preset.weights_on_disk, seed=seed)


def materialize_preset(
    name: str, out_dir: Path, seed: int = 0, with_weights: bool | None = None, pretrain_steps: int | None = None
) -> Path:
    """Write preset `name` as an HF checkpoint directory; atomic, and a no-op when already there.

    `pretrain_steps` shortens the tiny presets' pretraining (tests of the mechanism use a few steps).
    """
    preset = get_preset(name)
    out_dir = Path(out_dir)
    if (out_dir / MARKER_FILE).exists():
        return out_dir
    with_weights = preset.weights_on_disk if with_weights is None else with_weights
    remove_stale_temporaries(out_dir)  # of materializations that were killed
    tmp = temp_sibling(out_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if preset.role == "vision":
            _write_vision_preset(preset, tmp, seed, with_weights, pretrain_steps)
        else:
            _write_llm_preset(preset, tmp, seed, with_weights, pretrain_steps)
        marker = {
            "preset": preset.name,
            "recipe_version": RECIPE_VERSION,
            "seed": seed,
            "weights": with_weights,
        }
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n")
        fsync_tree(tmp)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            if not (out_dir / MARKER_FILE).exists():  # lost a race with another process: theirs is as good
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


# OpenAI CLIP's normalisation constants, as in the checkpoints' preprocessor_config.json.
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def clip_preprocessor_config(image_size: int) -> dict:
    """The preprocessor_config.json of an OpenAI CLIP checkpoint, at `image_size`.

    Written as data: transformers' CLIPImageProcessor classes need PIL or torchvision just to save.
    """
    return {
        "image_processor_type": "CLIPImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": image_size},
        "resample": 3,  # PIL bicubic
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "do_convert_rgb": True,
    }


def _write_vision_preset(
    preset: ModelPreset, out: Path, seed: int, with_weights: bool, pretrain_steps: int | None
) -> None:
    config = preset.build_config(0)
    if with_weights:
        torch.manual_seed(seed)
        model = CLIPVisionModel(config)
        if preset.pretrain:
            from vlmcap.presets.pretrain import pretrain_vision

            pretrain_vision(model, seed, **({"steps": pretrain_steps} if pretrain_steps else {}))
        model.save_pretrained(out, safe_serialization=True)
    else:
        config.save_pretrained(out)
    (out / "preprocessor_config.json").write_text(json.dumps(clip_preprocessor_config(preset.image_size), indent=2))


def _write_llm_preset(
    preset: ModelPreset, out: Path, seed: int, with_weights: bool, pretrain_steps: int | None
) -> None:
    tokenizer = train_korean_tokenizer(seed=seed)
    config = preset.build_config(len(tokenizer))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config.eos_token_id = end_of_turn
    config.pad_token_id = pad
    config.bos_token_id = pad
    if with_weights:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        if preset.pretrain:
            from vlmcap.presets.pretrain import pretrain_language

            pretrain_language(model, tokenizer, seed, **({"steps": pretrain_steps} if pretrain_steps else {}))
        model.save_pretrained(out, safe_serialization=True)
    else:
        config.save_pretrained(out)
    GenerationConfig(eos_token_id=[end_of_turn, pad], pad_token_id=pad, bos_token_id=pad).save_pretrained(out)
    tokenizer.save_pretrained(out)
