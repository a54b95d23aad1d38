"""vlmcap/bench/timer.py: the one timer every benchmark uses: warm-up calls untimed, median of the timed ones."""

from __future__ import annotations

import time

import pytest

from vlmcap.bench.timer import Timing, synchronizer, time_call


def test_warm_up_calls_are_run_but_not_timed_and_the_median_ignores_one_slow_call() -> None:
    durations = iter([0.2, 0.01, 0.2, 0.01, 0.01])  # the first is the warm-up, the third an outlier
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        time.sleep(next(durations))

    timing = time_call(fn, repeat=4, warmup=1)
    assert calls == 5 and len(timing.seconds) == 4
    assert 0.01 <= timing.median_s < 0.1  # a mean would be ~0.06 with the 0.2 s outlier; the median is not
    assert max(timing.seconds) >= 0.2 and timing.spread > 1
    assert timing.to_dict()["repeat"] == 4 and timing.to_dict()["max_s"] >= 0.2


def test_spread_and_bad_repeat() -> None:
    assert Timing((1.0, 1.0, 1.0)).spread == 0
    assert Timing((0.9, 1.0, 1.1)).spread == pytest.approx(0.2)
    with pytest.raises(ValueError, match="repeat must be at least 1"):
        time_call(lambda: None, repeat=0)


def test_only_a_cuda_device_is_synchronized() -> None:
    import torch

    for device in (None, "cpu", torch.device("cpu")):
        assert synchronizer(device)() is None  # nothing to wait for, and no CUDA call made
    if not torch.cuda.is_available():  # this CPU-only machine: a CUDA wait reaches torch.cuda and fails
        for device in ("cuda", "cuda:0", torch.device("cuda", 0)):
            with pytest.raises((AssertionError, RuntimeError)):
                synchronizer(device)()
