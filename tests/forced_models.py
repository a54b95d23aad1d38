"""Bundles whose LLM really produces a caption failure: a copy of a bundle with the LLM's weights
edited so that greedy decoding emits one token id at every step, whatever the video.

How: the input embeddings get a constant +100 in dimension 0, so the residual stream's dimension 0
is positive at the last layer; the final norm keeps only that dimension, and an untied output head
maps it to `token_id` alone. A Latin letter gives a loop ("gggg...") cut at max_new_tokens in the
wrong script for a Korean prompt; the end-of-turn token gives an empty caption. Both engines
(transformers, vLLM) run the model as they run any other: no mock.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from vlmcap.bundle.loader import read_manifest, write_manifest


def forced_token_bundle(src: Path, dst: Path, token_id: int) -> Path:
    shutil.copytree(src, dst)
    llm = dst / "llm"
    weights = load_file(llm / "model.safetensors")
    embed = weights["model.embed_tokens.weight"].clone()
    embed[:, 0] = 100.0
    head = torch.zeros_like(embed)
    head[token_id, 0] = 1.0
    norm = torch.zeros_like(weights["model.norm.weight"])
    norm[0] = 1.0
    weights |= {"model.embed_tokens.weight": embed, "lm_head.weight": head, "model.norm.weight": norm}
    save_file(weights, llm / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((llm / "config.json").read_text())
    config["tie_word_embeddings"] = False
    (llm / "config.json").write_text(json.dumps(config, indent=2))
    write_manifest(dst, read_manifest(dst))  # re-hashed: the bundle verifies like an exported one
    return dst
