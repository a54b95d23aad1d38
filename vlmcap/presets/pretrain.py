"""Pretraining that gives the tiny presets what real checkpoints have (docs/TRAINING.md, tiny presets).

A random encoder's features barely depend on the content, and a random LM has no circuit that
reads earlier context, so a tiny VLM built from them cannot learn to caption in minutes. Real
CLIP and Qwen3 have both from their own pretraining; the tiny presets get a small version of it
on the synthetic world (vlmcap.presets.synthetic):

- the vision encoder learns, from single frames, which colour and shape is shown, where in the
  frame it is, and in which patch its centre lies, read from the feature layer the VLM uses
  (layer -2, patch tokens);
- the language model learns to caption from a *text* description of the frames put where the
  video rows will go, in the exact chat layout of the VLM, so it has to look back at context.

Neither ever sees a video/caption pair; connecting vision to language is left to the projector
(and LoRA), which is what training a VLM is about. Deterministic for a seed, CPU, about a minute.
"""

from __future__ import annotations

import logging
import random

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPVisionModel, PreTrainedModel, PreTrainedTokenizerBase

from vlmcap.model.prompt import PromptBuilder
from vlmcap.presets.korean_text import korean_sentences
from vlmcap.presets.synthetic import COLOURS, OBJECT_RADIUS, SHAPES, Scene, describe_frame, render_frame
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.preprocess import normalize

log = logging.getLogger(__name__)

FEATURE_LAYER = -2  # what the VLM reads (VisionConfig.feature_layer default)


def pretrain_vision(model: CLIPVisionModel, seed: int, steps: int = 800, batch: int = 48) -> None:
    """Teach patch features at FEATURE_LAYER to carry colour, shape and where the object is."""
    from vlmcap.presets import clip_preprocessor_config

    rng = random.Random(seed)
    torch.manual_seed(seed)
    size, patch = model.config.image_size, model.config.patch_size
    # Frames are rendered at the model's size, so the CLIP preprocessing reduces to normalisation.
    image_spec = ImageSpec.from_dict(clip_preprocessor_config(size))
    grid = size // patch
    dim = model.config.hidden_size
    bins = 6  # where the object is, read from the whole frame: every patch learns the layout
    heads = nn.ModuleDict(
        {
            "colour": nn.Linear(dim, len(COLOURS)),
            "shape": nn.Linear(dim, len(SHAPES)),
            "x": nn.Linear(dim, bins),
            "y": nn.Linear(dim, bins),
            "where": nn.Linear(dim, 1),
        }
    )
    params = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps))
    colours, shapes = list(COLOURS), list(SHAPES)
    model.train()
    for step in range(steps):
        labels = {"colour": [], "shape": [], "x": [], "y": [], "where": []}
        frames = []
        for _ in range(batch):
            colour, shape = rng.choice(colours), rng.choice(shapes)
            x, y = rng.uniform(0.15, 0.85), rng.uniform(0.15, 0.85)
            frames.append(render_frame(shape, colour, x, y, size, size * rng.uniform(*OBJECT_RADIUS), rng))
            labels["colour"].append(colours.index(colour))
            labels["shape"].append(shapes.index(shape))
            labels["x"].append(min(int(x * bins), bins - 1))
            labels["y"].append(min(int(y * bins), bins - 1))
            labels["where"].append(int(y * size) // patch * grid + int(x * size) // patch)
        pixels = normalize(np.stack(frames), image_spec)
        hidden = model(pixel_values=pixels, output_hidden_states=True).hidden_states[FEATURE_LAYER][:, 1:]
        where = heads["where"](hidden).squeeze(-1)  # (B, N): which patch holds the object
        # Read the attributes through the object's own patches, so *those* features must carry
        # colour, shape and absolute position (not just "something is here").
        pooled = (where.softmax(-1).unsqueeze(-1) * hidden).sum(1)
        loss = F.cross_entropy(where, torch.tensor(labels["where"]))
        for name in ("colour", "shape", "x", "y"):
            loss = loss + F.cross_entropy(heads[name](pooled), torch.tensor(labels[name]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            accuracy = {
                name: (heads[name](pooled).argmax(-1) == torch.tensor(labels[name])).float().mean().item()
                for name in ("colour", "shape", "x", "y")
            }
            log.info("tiny vision pretraining step %d loss %.3f accuracy %s", step, loss.item(), accuracy)
    model.eval()


def _description_chat(builder: PromptBuilder, rng: random.Random, num_frames: int) -> tuple[list[int], list[int]]:
    """(ids, labels) of one chat whose 'video' is a text description of its frames."""
    scene = Scene.random(rng)
    frames = " / ".join(describe_frame(scene.colour, scene.shape, x, y) for x, y in scene.trajectory(num_frames, rng))
    before, after = builder.render()
    tok = builder.tokenizer
    prefix = tok(before + frames + after, add_special_tokens=False)["input_ids"]
    target = [*tok(scene.caption(rng), add_special_tokens=False)["input_ids"], builder.end_of_turn_id]
    return prefix + target, [-100] * len(prefix) + target


def pretrain_language(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, seed: int, steps: int = 500, batch: int = 32
) -> None:
    """Chats that must be answered from earlier context, mixed with plain Korean sentences."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    builder = PromptBuilder(tokenizer)
    sentences = korean_sentences(steps * batch, seed=seed + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 50) * (1 - s / steps))
    pad = tokenizer.pad_token_id
    model.train()
    for step in range(steps):
        rows = []
        for i in range(batch):
            if i % 4 == 3:  # keep it a language model
                ids = tokenizer(next(sentences), add_special_tokens=False)["input_ids"]
                rows.append((ids, ids))
            else:
                rows.append(_description_chat(builder, rng, num_frames=8))
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
        labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
        mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == steps - 1:
            log.info("tiny language pretraining step %d loss %.3f", step, loss.item())
    model.eval()
