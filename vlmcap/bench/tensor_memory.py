"""Peak tensor memory of a piece of code on any device, CPU included, from torch's own allocations.

CUDA has `torch.cuda.max_memory_allocated`; the CPU has nothing like it (RSS mixes in the
allocator's caching, the Python heap and libraries). `PeakTensorMemory` sees every tensor an
operator makes (a `TorchDispatchMode`) and counts its storage until torch frees it (a weak
reference to the storage: torch keeps one Python object per live storage), so it reports what a
GPU's allocator would have to hold for the same code, with no caching. It works on the meta
device too, where tensors have shapes and no data: training/memory_plan.py runs a whole training
step there. The CPU tests of the memory
diet and the memory plan (docs/PERFORMANCE.md) measure with it. Tensors made before the block
(weights, optimizer state) are not counted: `peak_bytes` is what the block adds at its worst.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorMemory(TorchDispatchMode):
    """with PeakTensorMemory() as memory: step(); memory.peak_bytes"""

    def __init__(self) -> None:
        super().__init__()
        self.live_bytes = 0
        self.peak_bytes = 0
        self._seen: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # An output on an input's storage (a view such as a weight's transpose, an in-place op)
        # allocated nothing; without this, views of weights made before the block were counted
        # as new memory and never freed. Storages are told apart by their Python object (one per
        # live storage), not their address: on the meta device every address is 0.
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and id(leaf.untyped_storage()) not in inputs:
                self._count(leaf)
        return out

    def _count(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._seen or storage.nbytes() == 0:
            return  # a storage already counted, or an empty one
        self._seen.add(key)
        size = storage.nbytes()
        self.live_bytes += size
        self.peak_bytes = max(self.peak_bytes, self.live_bytes)
        weakref.finalize(storage, self._free, key, size)

    def _free(self, key: int, size: int) -> None:
        self._seen.discard(key)
        self.live_bytes -= size
