"""A run directory with random trained parts at a config's shapes: what a benchmark exports without
training for hours (`vlmcap bench night`), written by the trainer's own checkpoint writer, so
`vlmcap export` reads it as any finished run.

The projector keeps its initialisation; the LoRA adapter's B matrices are drawn (peft starts them at
zero, which would make the merge a no-op and the export's merge check meaningless).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from vlmcap.config.loading import dump_config
from vlmcap.config.schema import VlmcapConfig
from vlmcap.model.vlm import VideoLanguageModel
from vlmcap.storage.run_dir import CONFIG_FILE, FINAL_DIR, STATE_FILE
from vlmcap.training.checkpoint import save_weights


def write_random_run(config: VlmcapConfig, out: Path, seed: int = 1) -> Path:
    """`out`, a finished run of `config` (its weights at step 1) with random projector and adapter."""
    model = VideoLanguageModel.from_config(config, "cpu")
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.llm.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.02)
    final = out / FINAL_DIR
    final.mkdir(parents=True, exist_ok=True)
    save_weights(model, final)
    for folder in (final, out):
        (folder / CONFIG_FILE).write_text(dump_config(config), encoding="utf-8")
    (final / STATE_FILE).write_text(json.dumps({"step": 1, "total_steps": 1}), encoding="utf-8")
    return out
