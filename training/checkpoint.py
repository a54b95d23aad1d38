"""Checkpoints a resumed run can trust, written without pickle.

`checkpoint-<step>/` holds projector.safetensors, adapter/ (peft format), optimizer.safetensors +
optimizer.json (AdamW state as tensors + its plain structure), scheduler.json, rng.safetensors +
rng.json, and trainer_state.json (step, data position per rank). It is written into a hidden
temporary directory, every file fsynced, and renamed into place as the last act: a process killed
while writing leaves only a `.checkpoint-*.tmp` that resume ignores and the next save removes.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vlmcap.storage.files import replace_dir
from vlmcap.storage.run_dir import ADAPTER_DIR, STATE_FILE, WEIGHTS_FILE, checkpoint_name, list_checkpoints


def optimizer_to_files(optimizer: torch.optim.Optimizer, out: Path) -> None:
    state = optimizer.state_dict()
    tensors, structure = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, entries in state["state"].items():
        structure["state"][str(index)] = {}
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.contiguous()
                structure["state"][str(index)][name] = {"tensor": f"{index}.{name}"}
            else:
                structure["state"][str(index)][name] = {"value": value}
    save_file(tensors, out / "optimizer.safetensors")
    (out / "optimizer.json").write_text(json.dumps(structure))


def optimizer_from_files(optimizer: torch.optim.Optimizer, src: Path) -> None:
    tensors = load_file(src / "optimizer.safetensors")
    structure = json.loads((src / "optimizer.json").read_text())
    state = {
        int(index): {name: tensors[v["tensor"]] if "tensor" in v else v["value"] for name, v in entries.items()}
        for index, entries in structure["state"].items()
    }
    optimizer.load_state_dict({"state": state, "param_groups": structure["param_groups"]})


def rng_to_files(out: Path) -> None:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # LoRA dropout on GPU draws from the CUDA generator
        tensors["cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, out / "rng.safetensors")
    np_state = np.random.get_state()
    (out / "rng.json").write_text(
        json.dumps(
            {
                "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
                "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
            }
        )
    )


def rng_from_files(src: Path) -> None:
    tensors = load_file(src / "rng.safetensors")
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state(tensors["cuda"])
    state = json.loads((src / "rng.json").read_text())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def write_checkpoint(run_dir: Path, step: int, write_contents, keep_last: int) -> Path:
    """Create `checkpoint-<step>` atomically; `write_contents(tmp_dir)` writes the files."""
    final = run_dir / checkpoint_name(step)
    tmp = run_dir / f".{checkpoint_name(step)}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_contents(tmp)
    if not (tmp / STATE_FILE).exists():
        raise RuntimeError(f"{tmp}: checkpoint contents incomplete (no {STATE_FILE})")
    replace_dir(tmp, final)
    for stale in run_dir.glob(".checkpoint-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_weights(model, out: Path) -> None:
    """The trained parts only: projector.safetensors and, with LoRA, adapter/ in peft format."""
    save_file({k: v.detach().contiguous() for k, v in model.projector.state_dict().items()}, out / WEIGHTS_FILE)
    if hasattr(model.llm, "peft_config"):
        model.llm.save_pretrained(out / ADAPTER_DIR, safe_serialization=True)


def load_weights(model, src: Path, with_adapter: bool = True) -> None:
    """Load what `save_weights` wrote into a model built from the same config."""
    from peft.utils import set_peft_model_state_dict

    model.projector.load_state_dict(load_file(src / WEIGHTS_FILE), strict=True)
    adapter = src / ADAPTER_DIR / "adapter_model.safetensors"
    if with_adapter and adapter.exists():
        if not hasattr(model.llm, "peft_config"):
            raise RuntimeError(f"{src}: has a LoRA adapter but the model has no LoRA (train.stage=projector?)")
        result = set_peft_model_state_dict(model.llm, load_file(adapter))
        if result.unexpected_keys:
            raise RuntimeError(f"{adapter}: keys do not match the model's LoRA: {result.unexpected_keys[:3]}")
