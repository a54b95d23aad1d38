"""training/memory_plan.py: the plan against real steps (CPU) and the GPU's measured peaks, and `auto`."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from repo_paths import REPO

from vlmcap.bench.tensor_memory import PeakTensorMemory
from vlmcap.cli import cli
from vlmcap.config.loading import load_config
from vlmcap.errors import ConfigError
from vlmcap.model.vlm import VideoLanguageModel
from vlmcap.training import memory_plan
from vlmcap.training.memory_plan import MemoryPlanner, set_checkpointed_layers
from vlmcap.training.trainer import run_training

CAPTION = "빨간색 원이 왼쪽에서 오른쪽으로 천천히 움직입니다."
GPU_RUN = REPO / "docs" / "bench" / "2026-12-04-h200"


def _tiny(*overrides: str):
    return load_config(preset="tiny", overrides=["train.stage=lora", "model.lora.dropout=0.1", *overrides])


@pytest.fixture(scope="module")
def planner() -> MemoryPlanner:
    return MemoryPlanner(_tiny("train.batch_size=2"), "cpu", [CAPTION])


def _nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def test_the_plan_is_what_real_cpu_steps_allocate(planner: MemoryPlanner) -> None:
    """Weights counted on the real model; what two real optimizer steps add counted by torch's dispatch."""
    config = _tiny("train.batch_size=2")
    torch.manual_seed(0)
    model = VideoLanguageModel.from_config(config, "cpu", lora=True).train()
    trainable = [p for _, p in model.trainable_parameters()]
    optimizer = torch.optim.AdamW(trainable)
    weights = _nbytes([*model.parameters(), *model.buffers()])
    prompts = [model.prompts.encode(None, CAPTION)] * 2
    pixels = torch.randn(2, config.video.num_frames, 3, model.vision.image_size, model.vision.image_size)
    assert planner.num_layers == 2
    for layers in (0, 1, 2):
        set_checkpointed_layers(model.llm, layers)
        with PeakTensorMemory() as memory:
            for _ in range(2):
                model(pixels, prompts).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        plan = planner.plan(layers)
        planned_weights = plan.total_bytes - plan.parts["activations"] - plan.parts["AdamW state"]
        assert planned_weights == weights  # float32 on CPU: every byte counted from the shapes
        measured = weights + memory.peak_bytes
        print(f"{layers} checkpointed: plan {plan.total_bytes / 2**20:.2f} MiB, measured {measured / 2**20:.2f} MiB")
        assert abs(plan.total_bytes / measured - 1) < 0.15, (layers, plan.total_bytes, measured)
    assert planner.plan(0).total_bytes > planner.plan(1).total_bytes > planner.plan(2).total_bytes


def test_nf4_weights_are_what_bitsandbytes_keeps() -> None:
    import bitsandbytes as bnb

    config = _tiny("model.llm.quantize=4bit", "model.llm.model=preset:tiny-llama-random")
    model = VideoLanguageModel.from_config(config, "cpu", lora=False)
    quantized = [m for m in model.llm.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized
    kept = sum(
        m.weight.numel() * m.weight.element_size()
        + sum(_nbytes([t]) for t in m.weight.quant_state.as_dict(packed=False).values() if isinstance(t, torch.Tensor))
        for m in quantized
    )
    others = {id(m.weight) for m in quantized}
    kept += _nbytes([p for p in model.llm.parameters() if id(p) not in others] + list(model.llm.buffers()))
    plan = MemoryPlanner(config, "cpu", [CAPTION]).plan(0)
    print(f"NF4 LLM: plan {plan.parts['llm weights']} bytes, bitsandbytes {kept} bytes")
    assert abs(plan.parts["llm weights"] / kept - 1) < 0.02


def _labels_loss(llm, batch):
    """The loss before the memory diet (full-vocabulary logits), as the 2026-12-04 GPU run took it."""
    return llm(inputs_embeds=batch.inputs_embeds, attention_mask=batch.attention_mask, labels=batch.labels).loss


@pytest.mark.parametrize(
    ("llm", "overrides"),
    [("qwen3-0.6b", ["train.batch_size=8"]), ("qwen3-8b", ["train.batch_size=4", "model.llm.quantize=4bit"])],
)
def test_the_plan_predicts_the_peaks_measured_on_an_h200(monkeypatch, llm: str, overrides: list[str]) -> None:
    """Within 25% of docs/bench/2026-12-04-h200: bf16 LoRA at batch 8 and the seed's QLoRA at batch 4."""
    if llm == "qwen3-0.6b":
        run = json.loads((GPU_RUN / "gpu-check.json").read_text(encoding="utf-8"))
        section = run["sections"]["train/qwen3-0.6b"]
        peak_gb, caption_tokens = section["peak_memory_gb"], run["args"]["caption_tokens"]
    else:
        run = json.loads((GPU_RUN / "qlora-8b-reference.json").read_text(encoding="utf-8"))
        peak_gb, caption_tokens = run["peak_allocated_gb"], 64  # 1,248 tokens = 1,152 vision + prompt + 64 + 1
        section = run["train"]
    assert section["gradient_checkpointing"] is False
    config = load_config(
        preset="reference-random", overrides=["train.stage=lora", f"model.llm.model=preset:{llm}-random", *overrides]
    )
    monkeypatch.setattr(memory_plan, "caption_loss", _labels_loss)
    plan = MemoryPlanner(config, "cuda", caption_tokens=caption_tokens).plan(0)
    assert abs(plan.sequence_tokens - section["sequence_tokens"]) <= 3
    print(f"{llm}: plan {plan.total_bytes / 2**30:.2f} GB, measured {peak_gb} GB")
    assert abs(plan.total_bytes / 2**30 / peak_gb - 1) < 0.25


def test_auto_checkpoints_the_fewest_layers_that_fit_and_says_when_nothing_does(planner: MemoryPlanner) -> None:
    none, one, every = planner.plan(0), planner.plan(1), planner.plan(2)
    assert planner.choose("auto", none.total_bytes / 0.9 + 1).checkpointed_layers == 0
    assert planner.choose("auto", one.total_bytes / 0.9 + 1).checkpointed_layers == 1
    assert planner.choose("auto", every.total_bytes / 0.9 + 1).checkpointed_layers == 2
    assert planner.choose(True, None).checkpointed_layers == 2  # explicit and no budget: as asked
    with pytest.raises(ConfigError, match=r"train.memory_budget_gb=.*needs .* GB with gradient checkpointing"):
        planner.choose("auto", every.total_bytes / 0.9 - 1)
    with pytest.raises(ConfigError, match=r"or set train\.gradient_checkpointing=auto"):
        planner.choose(False, one.total_bytes / 0.9)


def test_partial_checkpointing_trains_exactly_like_none(small_synth, tmp_path) -> None:
    base = ["train.max_steps=3", "train.save_every=3", f"train.data={small_synth['train']}", "train.batch_size=2"]
    captions = [json.loads(line)["caption"] for line in small_synth["train"].read_text().splitlines()]
    plans = MemoryPlanner(_tiny(*base), "cpu", captions)
    budget_gb = plans.plan(1).total_bytes / 0.9 / 2**30 * 1.001
    assert not plans.plan(0).fits(budget_gb * 2**30)
    partial = run_training(_tiny(*base, f"train.memory_budget_gb={budget_gb}"), tmp_path / "partial")
    plain = run_training(_tiny(*base, "train.gradient_checkpointing=false"), tmp_path / "plain")
    summary = json.loads((partial.run_dir / "summary.json").read_text())
    assert summary["checkpointed_layers"] == 1 and summary["memory_plan"]["checkpointed_layers"] == 1
    assert json.loads((plain.run_dir / "summary.json").read_text())["checkpointed_layers"] == 0

    def losses(run_dir):
        return [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]

    assert losses(partial.run_dir) == pytest.approx(losses(plain.run_dir), rel=1e-5)


def test_train_plan_prints_the_parts_and_a_budget_nothing_fits_stops_before_any_work(small_synth, tmp_path) -> None:
    runner = CliRunner()
    shown = runner.invoke(cli, ["train", "--preset", "tiny", "--plan", "train.memory_budget_gb=8"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("training step on cpu in float32: batch 4 x ")
    assert "no checkpointing" in lines[1] and "all 2 layers" in lines[1] and "auto: off" in lines[1]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert {"llm", "vision", "projector", "LoRA", "AdamW", "activations", "total"} <= set(rows)
    assert "budget: 8.0 GB" in shown.output

    out = tmp_path / "run"
    args = ["train", "--preset", "tiny", "--data", str(small_synth["train"]), "--out", str(out)]
    refused = runner.invoke(cli, [*args, "train.memory_budget_gb=0.001"])
    assert refused.exit_code == 2
    assert "train.memory_budget_gb=0.001: a training step needs" in refused.output
    assert not out.exists()
