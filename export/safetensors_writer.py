"""A Hugging Face checkpoint's safetensors files, written one tensor at a time.

`save_pretrained` (through `safetensors.torch.save_file`) turns a whole shard into one bytes object
before writing it: the model in memory plus a copy of each shard (4 GB more per shard of Qwen3-8B).
Here every tensor's name, dtype and shape is known before any tensor exists, so each file's header
is written first, then each tensor is computed, written and dropped in turn: memory holds one
tensor. The files are plain safetensors, sharded and named like `save_pretrained` does
(model.safetensors, or model-0000i-of-0000n.safetensors + model.safetensors.index.json), so
transformers, vLLM and `safe_open` read them unchanged.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
    torch.float8_e4m3fn: "F8_E4M3",
    torch.float8_e5m2: "F8_E5M2",
}
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


@dataclass(frozen=True)
class PlannedTensor:
    """One tensor of the checkpoint: what it will be, and how to compute it when its turn comes."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    make: Callable[[], torch.Tensor]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def _shards(tensors: Sequence[PlannedTensor], max_shard_bytes: int) -> list[list[PlannedTensor]]:
    """Consecutive groups of at most `max_shard_bytes` (a larger tensor gets a file of its own)."""
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def _write_file(path: Path, tensors: list[PlannedTensor]) -> None:
    # Wider dtypes first, as safetensors orders them, so every tensor starts at a multiple of its
    # element size (the header is padded to 8 bytes) and readers can map it without copying.
    tensors = sorted(tensors, key=lambda t: -t.dtype.itemsize)
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with path.open("wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for planned in tensors:
            tensor = planned.make()
            if tensor.dtype != planned.dtype or tuple(tensor.shape) != planned.shape:
                raise RuntimeError(
                    f"{planned.name}: computed {tensor.dtype} {tuple(tensor.shape)}, "
                    f"planned {planned.dtype} {planned.shape}"
                )
            f.write(memoryview(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
            del tensor


def write_safetensors(tensors: Sequence[PlannedTensor], out: Path, max_shard_bytes: int) -> list[str]:
    """Write `tensors` into `out` (in shards of at most `max_shard_bytes`); returns the file names."""
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ValueError("a checkpoint cannot hold two tensors of one name")
    unknown = {t.dtype for t in tensors} - SAFETENSORS_DTYPES.keys()
    if unknown:
        raise ValueError(f"safetensors has no dtype for {sorted(map(str, unknown))}")
    out.mkdir(parents=True, exist_ok=True)
    shards = _shards(tensors, max_shard_bytes)
    if len(shards) == 1:
        _write_file(out / SINGLE_FILE, shards[0])
        return [SINGLE_FILE]
    files = [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    weight_map = {}
    for file, shard in zip(files, shards, strict=True):
        _write_file(out / file, shard)
        weight_map.update({t.name: file for t in shard})
    index = {"metadata": {"total_size": sum(t.nbytes for t in tensors)}, "weight_map": weight_map}
    (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return [*files, INDEX_FILE]
