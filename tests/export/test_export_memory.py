"""Export within memory: the layer-by-layer merge writes what merge_and_unload + save_pretrained wrote,
the streamed checks still fail a bad export, and the peak resident memory is measured and recorded."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from safetensors.torch import load_file

from vlmcap.bundle import load_bundle
from vlmcap.cli import cli
from vlmcap.config.loading import load_config
from vlmcap.config.schema import ExportConfig
from vlmcap.errors import ExportError
from vlmcap.export.exporter import ExportRequest, export_bundle
from vlmcap.export.memory import PeakMemory
from vlmcap.export.merge_llm import load_unmerged, merged_config
from vlmcap.export.merged_weights import merged_tensors
from vlmcap.export.safetensors_writer import INDEX_FILE, PlannedTensor, write_safetensors
from vlmcap.export.verify import RunningComparison, compare
from vlmcap.model.llm import DTYPES


def _tensors(folder: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def _merged_before(run: Path, merge_into: str, dtype: str, out: Path) -> None:
    """What export wrote before this change: the whole model dequantized, merged and saved at once."""
    config = load_config(run / "final" / "config.yaml")
    model, _, _ = load_unmerged(config, run / "final", merge_into, torch.device("cpu"), packed=False)
    model.merge_and_unload().to(DTYPES[dtype]).save_pretrained(out, safe_serialization=True, max_shard_size="4GB")


@pytest.mark.parametrize(
    ("fixture", "merge_into", "dtype"),
    [
        ("tiny_run", "dequantized", "float32"),
        ("tiny_run", "dequantized", "bfloat16"),
        ("tiny_run_4bit", "dequantized", "float32"),
        ("tiny_run_4bit", "original", "bfloat16"),
    ],
)
def test_layer_by_layer_merge_writes_the_same_weights_as_merge_and_unload(
    fixture, merge_into, dtype, request, tmp_path
) -> None:
    run = request.getfixturevalue(fixture)
    _merged_before(run, merge_into, dtype, tmp_path / "before")
    config = load_config(run / "final" / "config.yaml")
    model, _, has_adapter = load_unmerged(config, run / "final", merge_into, torch.device("cpu"), packed=True)
    assert has_adapter
    config_after = merged_config(model, dtype)  # taken before the merge consumes the model
    write_safetensors(merged_tensors(model, DTYPES[dtype]), tmp_path / "after", max_shard_bytes=10**9)
    config_after.save_pretrained(tmp_path / "after")

    before, after = _tensors(tmp_path / "before"), _tensors(tmp_path / "after")
    assert sorted(after) == sorted(before)
    for name, tensor in before.items():
        assert after[name].dtype == tensor.dtype and torch.equal(after[name], tensor), name
    config_before = json.loads((tmp_path / "before" / "config.json").read_text())
    assert json.loads((tmp_path / "after" / "config.json").read_text()) == config_before
    assert "quantization_config" not in config_before
    # The merge consumed the un-merged model: of its weights only the (small) adapter is left.
    assert sum(p.numel() for name, p in model.named_parameters() if "lora_" not in name) == 0


def test_streamed_safetensors_shards_read_back_with_their_index(tmp_path) -> None:
    made = []
    tensors = {
        "a.weight": torch.randn(64, 32),
        "b.weight": torch.randn(3, 5).to(torch.bfloat16),
        "b.ids": torch.arange(7),
        "c.flag": torch.tensor(True),
    }

    def planned(name: str, tensor: torch.Tensor) -> PlannedTensor:
        def make() -> torch.Tensor:
            made.append(name)  # computed only when its turn to be written comes
            return tensor

        return PlannedTensor(name, tensor.dtype, tuple(tensor.shape), make)

    files = write_safetensors([planned(n, t) for n, t in tensors.items()], tmp_path, max_shard_bytes=4096)
    assert len(files) == 3 and files[-1] == INDEX_FILE  # a 8 KB tensor alone, then the rest together
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    for name, tensor in tensors.items():
        with safe_open(str(tmp_path / index["weight_map"][name]), framework="pt") as f:
            assert torch.equal(f.get_tensor(name), tensor)
    assert sorted(made) == sorted(tensors)

    wrong = PlannedTensor("x", torch.float32, (2,), lambda: torch.zeros(3))
    with pytest.raises(RuntimeError, match="x: computed"):
        write_safetensors([wrong], tmp_path / "wrong", max_shard_bytes=4096)


def test_running_comparison_over_blocks_equals_the_whole_comparison() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(300, 50)).astype(np.float32)
    out = ref + rng.normal(scale=1e-3, size=ref.shape).astype(np.float32)
    running = RunningComparison()
    for start in range(0, 300, 128):
        running.update(ref[start : start + 128], out[start : start + 128])
    whole, blocks = compare(ref, out), running.result()
    assert whole.keys() == blocks.keys()
    for key, value in whole.items():
        assert blocks[key] == pytest.approx(value, rel=1e-9), key


def test_peak_memory_sees_each_phase_and_the_whole() -> None:
    memory = PeakMemory()
    with memory.phase("outer"):
        with memory.phase("big"):
            block = np.ones(200 * 2**20, dtype=np.uint8)  # 200 MiB, touched
            time.sleep(0.1)  # the sampler's turn, where the process's high-water mark was set earlier
            del block
        with memory.phase("small"):
            pass
    assert memory.phases["big"] - memory.phases["small"] > 150 * 2**20
    assert memory.phases["outer"] >= memory.phases["big"]
    assert memory.peak_bytes() == memory.phases["outer"]
    assert memory._sampler is None  # stopped once no phase is open


def test_peak_memory_is_in_the_manifest_and_the_export_summary(tiny_run, tmp_path) -> None:
    result = CliRunner().invoke(cli, ["export", str(tiny_run), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    export = load_bundle(tmp_path / "b").manifest.export
    assert export.peak_rss_mb is not None and export.peak_rss_mb > 100
    assert "llm: merge and write" in export.phase_peak_rss_mb
    assert max(export.phase_peak_rss_mb.values()) <= export.peak_rss_mb
    shown = next(line for line in result.output.splitlines() if line.startswith("exported   peak memory"))
    number, unit = shown.split()[3:5]
    scale = {"MB": 1, "GB": 1e3}[unit]  # shown to one decimal
    assert float(number) * scale == pytest.approx(export.peak_rss_mb, abs=0.05 * scale)
    assert not list((tmp_path / "b").glob(".llm-work*")) and not list(tmp_path.glob(".b.tmp-*"))


def test_bundles_from_before_the_peak_was_recorded_still_load(tiny_bundle, tmp_path) -> None:
    from vlmcap.bundle.hashing import bundle_id

    bundle = tmp_path / "old"
    shutil.copytree(tiny_bundle, bundle)
    manifest = json.loads((bundle / "bundle.json").read_text())
    for key in ("peak_rss_mb", "phase_peak_rss_mb"):
        manifest["export"].pop(key)
    manifest["id"] = bundle_id(manifest)
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    assert load_bundle(bundle).manifest.export.peak_rss_mb is None


def test_a_wrong_merged_weight_still_fails_the_export_and_keeps_the_old_bundle(
    tiny_run, tiny_bundle, tmp_path, monkeypatch
) -> None:
    from vlmcap.export import merge_llm

    def broken(model, dtype):
        planned = merged_tensors(model, dtype)
        target = next(i for i, t in enumerate(planned) if "layers.0.mlp.down_proj" in t.name)
        good = planned[target]
        planned[target] = PlannedTensor(good.name, good.dtype, good.shape, lambda: good.make() * 1.5)
        return planned

    out = tmp_path / "engine"
    shutil.copytree(tiny_bundle, out)
    before = load_bundle(out).id
    monkeypatch.setattr(merge_llm, "merged_tensors", broken)
    with pytest.raises(ExportError, match="merged LLM logits vs the un-merged model: verification failed"):
        export_bundle(ExportRequest(tiny_run, out, ExportConfig()))
    assert load_bundle(out).id == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".verified.json")) == ["engine"]
