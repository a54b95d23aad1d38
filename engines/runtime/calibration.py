"""What `auto`'s choice rests on: each candidate engine timed on this machine and checked against
float32 (docs/BATCH.md, "Engines and precision"; the choice and its cache: engine_choice.py).

- vision: the bundle's `vision.onnx` in ONNX Runtime (the baseline), and where they can win, the torch
  engine in bf16 and OpenVINO in f32 and bf16 (when the `openvino` extra is installed). Each is timed
  on one video of fixed frames (the second call; the first is the warm-up) and its rows are checked
  against float32's (`vlmcap.metrics.closeness.VISION_TOLERANCE`: min row cosine 0.999 for bf16);
- LLM dtype: the bundle's LLM in transformers, float32 against bfloat16 (native bf16 only): a prefill
  of CALIBRATION_TOKENS rows of a real prompt and DECODE_STEPS tokens each, and bf16's token
  agreement with float32's greedy caption (teacher-forced, `vlmcap.metrics.agreement`) at least the
  bundle's caption-gate threshold. The dtype holds for vLLM too: its CPU kernels gain the same.
- LLM engine: vLLM (started once for this) against transformers on the same prompt in that dtype,
  per whole video; vLLM unless transformers is CHOICE_MARGIN faster.

A candidate replaces the baseline only when it passes its check and is CHOICE_MARGIN times faster:
noise never flips a choice, and a tiny model (under MEASURE_FROM_BYTES) is not measured at all.

One module past 300 lines: the three measurements share the candidates' record (`Trial`), the margin
rule (`fastest`) and the calibration inputs (the reference rows the LLM's prompt is built on).
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.runtime.engines import Engines, open_llm_engine, open_vision_engine, vllm_problem
from vlmcap.environment import native_bf16
from vlmcap.errors import ConfigError
from vlmcap.metrics.agreement import greedy_captions, token_agreement
from vlmcap.metrics.closeness import VISION_TOLERANCE, row_cosines
from vlmcap.model.generation import GenerationParams, generate_from_embeds
from vlmcap.onnx.openvino_model import OPENVINO_MISSING
from vlmcap.storage.home import vlmcap_home

log = logging.getLogger(__name__)

CHOICE_MARGIN = 1.25  # how much faster a candidate must be to replace the baseline
# Below these weights per-call overhead decides, not arithmetic, and the float32 baseline is fastest
# (docs/PERFORMANCE.md: the tiny preset's vision graph runs 2x faster in ONNX Runtime than in torch,
# and no lower precision pays for its casts there): such a model is not measured.
MEASURE_FROM_BYTES = {"vision": 64 << 20, "llm": 256 << 20}
CALIBRATION_TOKENS = 256  # LLM timing: rows of the calibration prompt (a prefill's cost per row is flat)
DECODE_STEPS = 8  # LLM timing: tokens generated after that prefill
CHECK_NEW_TOKENS = 16  # the float32 greedy caption bf16 must agree with
LLM_ENGINE = "llm engine"  # the trials of vLLM against transformers, apart from the dtype's ("llm")


@dataclass
class Trial:
    """One candidate as measured here."""

    stage: str  # "vision" or "llm"
    engine: str  # "onnx", "torch", "openvino" (vision); "transformers" (the LLM's proxy)
    precision: str  # fp32, bf16, or the bundle's (onnx); float32 / bfloat16 (llm)
    seconds: float | None  # per video (vision) or per calibration prompt (llm)
    check: float | None = None  # min row cosine (vision) / token agreement (llm) against float32
    passed: bool = True
    note: str = ""  # "reference", "chosen", why it lost
    video_s: float | None = None  # llm: a whole video's prompt and caption, from its prefill and step rates

    @property
    def per_video(self) -> float | None:
        return self.seconds if self.stage == "vision" else self.video_s


def have_openvino() -> bool:
    """Whether the `openvino` extra is installed (its engine is a candidate, and can be asked for)."""
    return importlib.util.find_spec("openvino") is not None


def check_request(bundle: Bundle, settings: BatchConfig) -> None:
    """What cannot work is refused before anything is measured (exit 2)."""
    if settings.vision_backend == "openvino" and not have_openvino():
        raise ConfigError(f"--vision-backend openvino: {OPENVINO_MISSING}")
    precision = bundle.manifest.vision.precision
    if settings.vision_backend == "onnx" and settings.vision_precision not in ("auto", precision):
        raise ConfigError(
            f"--vision-precision {settings.vision_precision}: ONNX Runtime computes the bundle's {precision} "
            "graph; use --vision-backend torch or openvino (or auto) for another precision"
        )


def _announce(bundle: Bundle) -> None:
    """Said once, before the first measurement of a bundle on a machine (it takes a minute at CLIP-L)."""
    if bundle.id not in _ANNOUNCED:
        _ANNOUNCED.add(bundle.id)
        cache = vlmcap_home() / "cache"
        log.warning("choosing engines for %s on this machine (once; cached in %s)", bundle.root, cache)


_ANNOUNCED: set[str] = set()


def _calibration_frames(bundle: Bundle) -> list[np.ndarray]:
    """One video of fixed noise frames at the model's input size: what every candidate sees."""
    height, width = bundle.manifest.image.spec().output_hw
    frames = bundle.manifest.video.num_frames
    return [np.random.default_rng(0).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)]


def timed_rows(bundle: Bundle, settings: BatchConfig, engine: str, precision: str) -> tuple[float, np.ndarray]:
    """(seconds for one video after a warm-up call, its rows) for one vision candidate."""
    _announce(bundle)
    candidate = settings.model_copy(update={"vision_backend": engine, "vision_precision": precision})
    vision = open_vision_engine(bundle, candidate)
    try:
        frames = _calibration_frames(bundle)
        vision.encode_frames(frames)
        start = time.perf_counter()
        rows = vision.encode_frames(frames)
        return time.perf_counter() - start, rows
    finally:
        del vision
        gc.collect()


def _vision_candidates(bundle: Bundle, settings: BatchConfig) -> list[tuple[str, str]]:
    """(engine, precision) pairs that can serve what was asked; a full-precision baseline first."""
    shipped = bundle.manifest.vision.precision
    engine, precision = settings.vision_backend, settings.vision_precision
    bf16 = precision == "bf16" or (precision == "auto" and native_bf16())
    openvino = [("openvino", "fp32"), ("openvino", "bf16")] if have_openvino() else []
    pairs = {
        "auto": [("onnx", shipped), ("torch", "bf16"), *openvino],
        "onnx": [("onnx", shipped)],
        "torch": [("torch", "fp32"), ("torch", "bf16")],
        "openvino": openvino,
    }[engine]
    return [(e, p) for e, p in pairs if (p != "bf16" or bf16) and precision in ("auto", p)]


def _small(bundle: Bundle, stage: str) -> bool:
    """Whether the stage's weights are below MEASURE_FROM_BYTES (its float32 baseline is fastest)."""
    names = (
        [bundle.manifest.vision.file]
        if stage == "vision"
        else [n for n in bundle.manifest.files if n.startswith("llm/")]
    )
    return sum(bundle.manifest.files[n].size for n in names if n in bundle.manifest.files) < MEASURE_FROM_BYTES[stage]


def _vision_check(reference: np.ndarray, rows: np.ndarray, precision: str) -> tuple[float, bool]:
    """(min row cosine, passed) of `rows` against float32's, by the export's tolerance for `precision`."""
    tolerance = VISION_TOLERANCE[precision]
    cosine = float(row_cosines(reference, rows).min())
    passed = bool(np.isfinite(rows).all())
    if tolerance.min_cosine is not None:
        passed = passed and cosine >= tolerance.min_cosine
    if tolerance.max_abs_scaled is not None:
        scale = max(1.0, float(np.abs(reference).max()))
        passed = passed and float(np.abs(reference - rows).max()) / scale <= tolerance.max_abs_scaled
    return cosine, passed


def choose_vision(bundle: Bundle, settings: BatchConfig) -> tuple[str, str, list[Trial], np.ndarray | None]:
    """The fastest candidate that passes its check, and the float32 reference rows (for the LLM's check;
    None when nothing needed measuring: one full-precision candidate, or a model too small to gain)."""
    candidates = _vision_candidates(bundle, settings)
    if not candidates:
        raise ConfigError(
            f"--vision-backend {settings.vision_backend}: nothing computes {settings.vision_precision} here"
        )
    full = [c for c in candidates if c[1] != "bf16"]
    if len(candidates) == 1 and full:
        return *candidates[0], [], None  # asked for exactly, at full precision: nothing to choose or check
    if full and settings.vision_precision == "auto" and _small(bundle, "vision"):
        return *full[0], [Trial("vision", *full[0], None, None, True, "chosen (a small model: not measured)")], None
    reference_engine = ("onnx", "fp32") if bundle.manifest.vision.precision == "fp32" else ("torch", "fp32")
    measured = {c: timed_rows(bundle, settings, *c) for c in dict.fromkeys([reference_engine, *candidates])}
    reference = measured[reference_engine][1]
    trials = []
    for engine, precision in candidates:
        seconds, rows = measured[(engine, precision)]
        if (engine, precision) == reference_engine:
            trials.append(Trial("vision", engine, precision, seconds, None, True, "reference"))
            continue
        cosine, passed = _vision_check(reference, rows, precision)
        trials.append(Trial("vision", engine, precision, seconds, cosine, passed, "" if passed else "failed"))
    chosen = fastest(trials, "vision")
    if chosen is None:  # only an explicit precision gets here: auto always has a passing full-precision one
        raise ConfigError(f"--vision-precision {settings.vision_precision}: {failures(trials)}")
    return chosen.engine, chosen.precision, trials, reference


def fastest(trials: list[Trial], stage: str) -> Trial | None:
    """The chosen trial, marked so: the stage's first full-precision trial (the baseline) unless a passing
    one is CHOICE_MARGIN faster; without a baseline (bf16 asked for), the fastest that passes."""
    mine = [t for t in trials if t.stage == stage]
    passing = [t for t in mine if t.passed and t.seconds is not None]
    if not passing:
        return None
    baseline = next((t for t in mine if t.precision not in ("bf16", "bfloat16")), None)
    best = min(passing, key=lambda t: t.seconds)
    if baseline is not None and best is not baseline and best.seconds * CHOICE_MARGIN > baseline.seconds:
        best.note = best.note or f"within {CHOICE_MARGIN}x of {baseline.engine} {baseline.precision}"
        best = baseline
    best.note = "chosen" if not best.note else f"chosen, {best.note}"
    return best


def failures(trials: list[Trial]) -> str:
    return "; ".join(f"{t.engine} {t.precision} measured {t.check:.6f} against float32" for t in trials if not t.passed)


def choose_llm_dtype(
    bundle: Bundle, settings: BatchConfig, params: GenerationParams, vision_rows: Callable[[], np.ndarray]
) -> tuple[str, list[Trial]]:
    asked = settings.vllm.dtype
    if bundle.manifest.llm.quantization is not None or asked in ("float32", "float16"):
        return asked, []  # asked for exactly; a quantized bundle's kernels decide (engines/runtime/quant_support.py)
    if asked == "auto" and (not native_bf16() or _small(bundle, "llm")):
        return "float32", []  # emulated bf16 is slower than float32; a small model gains nothing
    _announce(bundle)
    trials = _llm_trials(bundle, settings, params, vision_rows())
    bfloat16 = trials[1]
    if not bfloat16.passed:
        if asked == "bfloat16":
            raise ConfigError(f"--dtype bfloat16: {failures(trials)} ({bfloat16.note})")
        log.warning("the LLM in bfloat16 does not caption as in float32 here (%s); float32", failures(trials))
    if asked == "bfloat16":
        bfloat16.note = "chosen, asked for"
        return "bfloat16", trials
    chosen = fastest(trials, "llm")
    return ("bfloat16" if chosen is bfloat16 else "float32"), trials


def _llm_trials(
    bundle: Bundle, settings: BatchConfig, params: GenerationParams, vision_rows: np.ndarray
) -> list[Trial]:
    """The bundle's LLM in transformers, float32 then cast to bfloat16 (one copy of the weights): each
    timed on the calibration prompt, bf16 checked against float32's greedy caption of the reference rows."""
    from transformers import AutoModelForCausalLM

    prompt = CalibrationPrompt(bundle, settings, params, vision_rows)
    text, rows = prompt.text, torch.from_numpy(vision_rows)
    threshold = bundle.manifest.export.gate.min_token_agreement
    model = AutoModelForCausalLM.from_pretrained(bundle.llm_dir, dtype=torch.float32, use_safetensors=True).eval()
    try:
        with torch.no_grad():
            stop_ids = params.stop_token_ids
            reference = greedy_captions(model, text.table, rows, text.prompts, stop_ids, CHECK_NEW_TOKENS)
            float32 = prompt.trial("llm", "transformers", "float32", prompt.transformers(model), note="reference")
            model.to(torch.bfloat16)
            agreement = token_agreement(model, text.table, rows, text.prompts, reference)
            passed = agreement >= threshold
            note = "" if passed else f"failed: the bundle's gate asks {threshold:g}"
            generate = prompt.transformers(model)
            checked = {"check": agreement, "passed": passed, "note": note}
            bfloat16 = prompt.trial("llm", "transformers", "bfloat16", generate, **checked)
    finally:
        del model
        gc.collect()
    return [float32, bfloat16]


class CalibrationPrompt:
    """What every LLM candidate is timed on: the last CALIBRATION_TOKENS rows of a real prompt around
    the reference rows, then DECODE_STEPS tokens (a prefill's cost per row is flat)."""

    def __init__(self, bundle: Bundle, settings: BatchConfig, params: GenerationParams, vision_rows: np.ndarray):
        self.text = Engines(bundle, None, None, params)  # no model engines: the tokenizer, prompt and embedding table
        self.params = params
        full = self.text.embed(vision_rows, [settings.prompt])
        keep = min(CALIBRATION_TOKENS, full.inputs_embeds.shape[1])
        embeds, mask = full.inputs_embeds[:, -keep:], full.attention_mask[:, -keep:]
        self.batch = dataclasses.replace(full, inputs_embeds=embeds, attention_mask=mask, lengths=[keep])
        self.prompt_scale = full.inputs_embeds.shape[1] / keep  # a whole video's prompt over the calibration's

    def timing(self, tokens: int) -> GenerationParams:
        return GenerationParams(max_new_tokens=tokens, stop_token_ids=self.params.stop_token_ids, ignore_eos=True)

    def transformers(self, model: torch.nn.Module) -> Callable[[GenerationParams], object]:
        pad = model.generation_config.pad_token_id
        return lambda timing: generate_from_embeds(model, self.batch, timing, pad)

    def trial(
        self, stage: str, engine: str, precision: str, generate: Callable[[GenerationParams], object], **fields: Any
    ) -> Trial:
        """Timed after a warm-up; `video_s` scales the prefill to a whole video's prompt and the steps to
        a whole caption (what splits the cores between the engines)."""

        def timed(tokens: int) -> float:
            start = time.perf_counter()
            generate(self.timing(tokens))
            return time.perf_counter() - start

        timed(DECODE_STEPS)  # warm-up
        prefill, total = timed(1), timed(DECODE_STEPS)
        step = max(0.0, total - prefill) / (DECODE_STEPS - 1)
        video = prefill * self.prompt_scale + step * self.params.max_new_tokens
        return Trial(stage, engine, precision, total, video_s=video, **fields)


def choose_llm_engine(
    bundle: Bundle,
    settings: BatchConfig,
    params: GenerationParams,
    dtype: str,
    dtype_trials: list[Trial],
    vision_rows: Callable[[], np.ndarray],
) -> tuple[str, list[Trial]]:
    """`auto`'s LLM engine: vLLM (which streams) unless transformers runs a whole video's prompt and
    caption CHOICE_MARGIN faster here, both timed on the calibration prompt in `dtype`.

    "auto" (not measured: vLLM where it starts, engines/runtime/engines.py) for another backend asked
    for, the streaming settings (vLLM's), a small LLM, a quantized one (its kernels decide,
    engines/runtime/quant_support.py), and where vLLM cannot run this bundle or start from here.
    """
    if settings.llm_backend != "auto" or streaming_asked(settings):
        return "auto", []
    if bundle.manifest.llm.quantization is not None or _small(bundle, "llm"):
        return "auto", []
    if importlib.util.find_spec("vllm") is None or vllm_problem(bundle, settings, params) is not None:
        return "auto", []
    _announce(bundle)
    prompt = CalibrationPrompt(bundle, settings, params, vision_rows())
    timed = next((t for t in dtype_trials if t.precision == dtype), None)
    transformers = _transformers_trial(bundle, prompt, dtype) if timed is None else timed
    transformers = dataclasses.replace(transformers, stage=LLM_ENGINE, check=None, note="")
    vllm = _vllm_trial(bundle, settings, params, prompt, dtype)
    trials = [vllm, transformers]
    if vllm.per_video is None:
        return "auto", trials  # vLLM did not start: the run tries again and falls back, saying why
    if transformers.per_video * CHOICE_MARGIN <= vllm.per_video:
        transformers.note = "chosen"
        vllm.note = f"{vllm.per_video / transformers.per_video:.2f}x slower per video"
        return "transformers", trials
    vllm.note = "chosen"
    return "vllm", trials


def streaming_asked(settings: BatchConfig) -> bool:
    """A streaming setting was asked for: vLLM's schedule, which transformers does not run."""
    return settings.llm_schedule == "stream" or settings.max_inflight is not None


def _transformers_trial(bundle: Bundle, prompt: CalibrationPrompt, dtype: str) -> Trial:
    """The bundle's LLM in transformers in `dtype`, timed on the calibration prompt."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(bundle.llm_dir, dtype=getattr(torch, dtype), use_safetensors=True)
    try:
        with torch.no_grad():
            return prompt.trial(LLM_ENGINE, "transformers", dtype, prompt.transformers(model.eval()))
    finally:
        del model
        gc.collect()


def _vllm_trial(
    bundle: Bundle, settings: BatchConfig, params: GenerationParams, prompt: CalibrationPrompt, dtype: str
) -> Trial:
    """vLLM in `dtype` on the LLM's threads, timed on the calibration prompt (the engine is started
    for this, once per machine and bundle, and shut down)."""
    vllm = settings.vllm.model_copy(update={"dtype": dtype})
    asked = settings.model_copy(update={"llm_backend": "vllm", "vllm": vllm})
    sizing = dataclasses.replace(params, max_new_tokens=max(params.max_new_tokens, DECODE_STEPS))
    try:
        engine = open_llm_engine(bundle, asked, sizing, prompt.text.max_prompt_len(settings.prompt), 1)
    except Exception as e:  # a candidate that cannot start is a result, not a failure of the run
        return Trial(LLM_ENGINE, "vllm", dtype, None, passed=False, note=f"did not start: {type(e).__name__}: {e}")
    try:
        return prompt.trial(LLM_ENGINE, "vllm", dtype, lambda timing: engine.generate(prompt.batch, timing))
    finally:
        engine.close()
