"""vlmcap/bench/tensor_memory.py: `PeakTensorMemory` counts what a block allocates, and only that."""

from __future__ import annotations

import pytest
import torch

from vlmcap.bench.tensor_memory import PeakTensorMemory


@pytest.mark.parametrize("device", ["cpu", "meta"])  # meta: shapes only, every address 0
def test_views_and_in_place_ops_on_earlier_tensors_allocate_nothing(device: str) -> None:
    weight = torch.zeros(256, 256, device=device)  # 256 KiB made before the block, as a model's weights are
    x = torch.ones(4, 256, device=device)
    with PeakTensorMemory() as memory:
        transposed = weight.t()  # a view of the weight: no new storage
        weight.add_(0)  # in place: no new storage
        out = x @ transposed  # 4 KiB, new
    assert memory.peak_bytes == out.numel() * out.element_size() == 4 * 256 * 4


def test_freed_storages_leave_the_count_and_the_peak_stays() -> None:
    with PeakTensorMemory() as memory:
        a = torch.zeros(1024)  # 4 KiB
        del a
        b = torch.zeros(512)  # 2 KiB
        live = memory.live_bytes
    assert (memory.peak_bytes, live) == (4096, 2048)
    del b
