"""vlmcap/bench/flops.py and the stages benchmark built on it: FLOPs counted from the layers a
forward pass calls, right for grouped-query attention, and a benchmark that never depends on
torch's FlopCounterMode working (torch 2.11's asserts on grouped-query sdpa)."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM

from vlmcap.bench import flops as flops_module
from vlmcap.bench.flops import counter_flops, flops_with_cross_check, layer_flops


def test_a_grouped_query_llm_is_counted_from_its_shapes() -> None:
    config = Qwen3Config(
        vocab_size=1000, hidden_size=128, intermediate_size=384, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32,
    )  # fmt: skip
    llm = Qwen3ForCausalLM(config).eval()
    batch, length = 2, 50
    embeds = torch.randn(batch, length, 128)
    linear = 128 * 4 * 32 + 2 * 128 * 2 * 32 + 4 * 32 * 128 + 3 * 128 * 384  # q, k, v, o, gate/up/down
    expected = 2 * batch * length * (2 * linear + 128 * 1000)  # two layers and the LM head
    expected += 2 * 4 * batch * 4 * length * length * 32  # QK^T and AV, 4 query heads, each layer
    with torch.no_grad():
        assert layer_flops(lambda: llm(inputs_embeds=embeds)) == expected
        counted, error = counter_flops(lambda: llm(inputs_embeds=embeds))
    assert error is None and 0 < counted <= expected  # the counter, where it works, agrees or sees less


def _raise_like_torch_2_11(self):
    raise AssertionError("sdpa_flop_count: query/key/value shapes are incompatible")


def test_the_stages_benchmark_measures_everything_when_the_counter_fails(monkeypatch) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    from vlmcap.config.loading import load_config
    from vlmcap.engines.bench.stages import bench_stages

    monkeypatch.setattr(FlopCounterMode, "__enter__", _raise_like_torch_2_11)
    assert flops_module.counter_flops(lambda: None)[0] is None
    report = bench_stages(load_config(preset="tiny"), batch_videos=1, new_tokens=3, repeat=1)
    rows = report["stages"]
    for stage in ("vision", "llm_prefill"):
        assert rows[stage]["flops"] > 0 and rows[stage]["tflops_per_s"] > 0
        assert rows[stage]["counter_flops"] is None and "incompatible" in rows[stage]["counter_error"]
    decode = rows["llm_decode"]
    assert decode["steps"] == 3 and 0 < decode["step_ms"]["min"] <= decode["step_ms"]["median"]
    assert decode["rate"] == pytest.approx(1 / (decode["step_ms"]["median"] / 1e3), rel=0.01)


def test_the_cross_check_reports_both_counts() -> None:
    linear = torch.nn.Linear(16, 8)
    x = torch.randn(5, 16)
    assert flops_with_cross_check(lambda: linear(x)) == {
        "flops": 2 * 5 * 16 * 8,
        "counter_flops": 1280,
        "counter_error": None,
    }
