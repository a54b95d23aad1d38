"""`auto` engines: what a run computes with on this machine, for this bundle (docs/BATCH.md, "Engines
and precision").

A CPU with native bf16 units (AMX, AVX-512 BF16) runs CLIP-L/336 3-5x faster in bf16 than in float32
and a Qwen3 prefill ~3x (docs/PERFORMANCE.md); a CPU without them emulates bf16, slower than float32.
Which engine wins also depends on the model's size (a tiny model is all per-call overhead). So on a
CPU `auto` measures, once per machine, bundle, thread count and library versions, and caches what it
found under `$VLMCAP_HOME/cache/engines/` (a cache from another machine or version has another key
and is measured again): the vision engine and precision, the LLM's dtype and its engine, each
candidate timed and checked against float32 (calibration.py). Here the choice is cached, applied to
the run's settings, and the cores are split between the two engines by their measured costs.

An explicit setting is honoured; an explicit bf16 is still checked, and a failed check is a
ConfigError (exit 2) before any video, where `auto` falls back to float32 with one warning. On a GPU
nothing is measured: the bundle's graph on ONNX Runtime and the LLM in the bundle's dtype, as
exported for it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmcap import __version__
from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.runtime.calibration import (
    LLM_ENGINE,
    Trial,
    check_request,
    choose_llm_dtype,
    choose_llm_engine,
    choose_vision,
    streaming_asked,
    timed_rows,
)
from vlmcap.engines.runtime.engines import with_cpu_threads
from vlmcap.environment import cpu_description, library_version, usable_cpus
from vlmcap.model.generation import GenerationParams
from vlmcap.storage.files import atomic_write_text
from vlmcap.storage.home import vlmcap_home

log = logging.getLogger(__name__)

# A vision call this long at most (when nobody set --vision-batch): the LLM gets its first rows after
# one call, not after a batch of 8 CLIP-L videos (200 s on 2 cores, with the LLM idle meanwhile).
VISION_CALL_S = 2.0
CACHE_FORMAT = 3
LIBRARIES = ("torch", "onnxruntime", "openvino", "transformers", "vllm")


@dataclass
class EngineChoice:
    """What `auto` resolved to, and the measurements behind it."""

    vision_backend: str
    vision_precision: str
    llm_dtype: str
    llm_backend: str = "auto"  # auto: vLLM where it starts (not measured against transformers)
    trials: list[Trial] = field(default_factory=list)
    key: dict[str, Any] = field(default_factory=dict)  # what the measurements hold for
    cached: bool = False
    threads: dict[str, int] | None = None  # {"vision": n, "llm": m} where the cores were split by cost

    def checked(self, stage: str) -> dict[str, Any] | None:
        """The chosen candidate's check against float32, for the records' provenance."""
        for trial in self.trials:
            if trial.stage == stage and trial.note.startswith("chosen") and trial.check is not None:
                measure = "min_row_cosine" if stage == "vision" else "token_agreement"
                return {measure: round(trial.check, 6), "against": "float32"}
        return None

    def lines(self) -> list[str]:
        """What `vlmcap info --engine` prints: each candidate with its rate and check."""
        shown = [
            f"vision: {self.vision_backend} ({self.vision_precision}); llm: {self.llm_backend} ({self.llm_dtype})"
            + (" (measured earlier, cached)" if self.cached else "")
        ]
        for t in self.trials:
            unit = "s/video" if t.stage == "vision" else "s/prompt"
            rate = f"{t.seconds:.3f} {unit}" if t.seconds is not None else "not timed"
            check = f", check {t.check:.6f}" if t.check is not None else ""
            shown.append(f"  {t.stage:<6} {t.engine} {t.precision}: {rate}{check}" + (f" [{t.note}]" if t.note else ""))
        if self.threads:
            shown.append(
                f"threads: vision {self.threads['vision']}, llm {self.threads['llm']} "
                "(the cores split by each engine's measured seconds per video)"
            )
        return shown

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineChoice:
        return cls(**{**data, "trials": [Trial(**t) for t in data["trials"]], "cached": True})


def engine_settings(
    bundle: Bundle, settings: BatchConfig, params: GenerationParams
) -> tuple[BatchConfig, EngineChoice]:
    """`settings` with every `auto` engine setting decided for this machine and bundle, and the CPU threads
    filled in; the choice with what it rests on (for provenance and `vlmcap info --engine`)."""
    split = settings.cpu_threads is None  # no thread count asked for: the cores go where the work is
    settings = with_cpu_threads(settings)
    device = settings.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.device(device).type != "cpu":
        backend = "onnx" if settings.vision_backend == "auto" else settings.vision_backend
        choice = EngineChoice(backend, settings.vision_precision, settings.vllm.dtype)
        return _applied(settings, choice), choice
    check_request(bundle, settings)
    key = _cache_key(bundle, settings)
    choice = _cached(key)
    if choice is None:
        choice = _measure(bundle, settings, params)
        if any(t.seconds is not None for t in choice.trials):  # measured: worth keeping
            choice.key = key
            _store(choice)
    if split:
        choice.threads = _split_by_cost(settings, choice)
    return _applied(settings, choice), choice


def split_threads(cores: int, vision_s: float, llm_s: float) -> tuple[int, int]:
    """(vision, llm) threads: `cores` in proportion to each engine's seconds per video, one at least each.

    The two engines run at once, so the night goes at the slower one's pace; giving each engine cores
    in proportion to its work evens their paces, where a fixed half each leaves one waiting.
    """
    if cores < 2:
        return 1, 1
    vision = min(cores - 1, max(1, round(cores * vision_s / (vision_s + llm_s))))
    return vision, cores - vision


def _split_by_cost(settings: BatchConfig, choice: EngineChoice) -> dict[str, int] | None:
    """The split where both chosen engines were timed (a model too small to measure keeps the fair share)."""
    chosen = {t.stage: t.per_video for t in choice.trials if t.note.startswith("chosen")}
    vision_s, llm_s = chosen.get("vision"), chosen.get(LLM_ENGINE) or chosen.get("llm")
    if not vision_s or not llm_s:
        return None
    cores = max(2, usable_cpus() - settings.workers)  # what the fair share divides too (engines.py)
    vision, llm = split_threads(cores, vision_s, llm_s)
    return {"vision": vision, "llm": llm}


def _applied(settings: BatchConfig, choice: EngineChoice) -> BatchConfig:
    """The settings the engines open with (ONNX Runtime takes no precision: it computes the bundle's),
    and, where the chosen vision engine was timed, vision calls of at most VISION_CALL_S."""
    precision = "auto" if choice.vision_backend == "onnx" else choice.vision_precision
    vllm = settings.vllm.model_copy(update={"dtype": choice.llm_dtype})
    update = {"vision_backend": choice.vision_backend, "vision_precision": precision, "vllm": vllm}
    if choice.llm_backend == "transformers" and settings.llm_backend == "auto" and not streaming_asked(settings):
        update["llm_backend"] = "transformers"  # measured faster; else auto: vLLM where it starts, as unmeasured
    if choice.threads:  # only where no thread count was set; a stage's own setting still wins
        update["vision_threads"] = settings.vision_threads or choice.threads["vision"]
        update["llm_threads"] = settings.llm_threads or choice.threads["llm"]
    chosen = next((t for t in choice.trials if t.stage == "vision" and t.note.startswith("chosen")), None)
    if settings.vision_batch is None and chosen is not None and chosen.seconds:
        update["vision_batch"] = max(1, min(settings.batch_size, int(VISION_CALL_S / chosen.seconds)))
    return settings.model_copy(update=update)


# --- the cache -----------------------------------------------------------------------------------


def _cache_key(bundle: Bundle, settings: BatchConfig) -> dict[str, Any]:
    """Everything the measurements depend on: another machine, bundle or library version is measured again."""
    return {
        "format": CACHE_FORMAT,
        "vlmcap": __version__,
        "cpu": cpu_description(),
        "threads": settings.cpu_threads,
        "bundle": bundle.id,
        "libraries": {name: library_version(name) for name in LIBRARIES},
        "asked": {
            "vision_backend": settings.vision_backend,
            "vision_precision": settings.vision_precision,
            "llm_dtype": settings.vllm.dtype,
            "llm_backend": settings.llm_backend,
        },
    }


def _cache_path(key: dict[str, Any]) -> Path:
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16).hexdigest()
    return vlmcap_home() / "cache" / "engines" / f"{digest}.json"


def _cached(key: dict[str, Any]) -> EngineChoice | None:
    try:
        data = json.loads(_cache_path(key).read_text(encoding="utf-8"))
        choice = EngineChoice.from_dict(data)
    except (OSError, ValueError, TypeError, KeyError):
        return None  # none yet, or unreadable: measured again
    return choice if choice.key == key else None


def _store(choice: EngineChoice) -> None:
    path = _cache_path(choice.key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(choice.to_dict(), indent=1) + "\n")
    except OSError as e:  # a read-only home: the next run measures again, this one goes on
        log.warning("%s: cannot cache the engine choice (%s)", path, e.strerror)


# --- measuring -----------------------------------------------------------------------------------


def _measure(bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> EngineChoice:
    backend, precision, vision_trials, measured_rows = choose_vision(bundle, settings)

    @functools.cache
    def reference_rows() -> np.ndarray:
        """float32's rows of the calibration video (the LLM's input), from the vision measurements or made now."""
        if measured_rows is not None:
            return measured_rows
        reference = ("onnx", "fp32") if bundle.manifest.vision.precision == "fp32" else ("torch", "fp32")
        return timed_rows(bundle, settings, *reference)[1]

    dtype, llm_trials = choose_llm_dtype(bundle, settings, params, reference_rows)
    llm_backend, engine_trials = choose_llm_engine(bundle, settings, params, dtype, llm_trials, reference_rows)
    return EngineChoice(backend, precision, dtype, llm_backend, vision_trials + llm_trials + engine_trials)
