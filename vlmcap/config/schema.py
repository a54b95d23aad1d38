"""One typed configuration for the whole tool: model, projector, video frames, prompt, training, export, batch.

A config is a YAML file plus `section.key=value` overrides from the command line. It is validated
in full before any work starts: an unknown key, a wrong type or an out-of-range value fails with
a message that names the file and the dotted field. Every YAML text (file, override value, preset)
is read by `vlmcap.config.yaml_reader`, which bounds what a hostile file can cost (aliases, size, depth).

One module past 300 lines: the sections are one schema (YAML files, `a.b=c` overrides and flags
address it as a whole, and cross-section checks need all of it); each section is short, and most of
the length is the field descriptions the CLI's help shows. Loading it: vlmcap/config/loading.py.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from vlmcap.video.segments import SegmentPlan, parse_segments

if TYPE_CHECKING:
    from vlmcap.video.decoders import DecodeOptions
    from vlmcap.video.remote_urls import RemoteOptions

ProjectorKind = Literal["linear", "mlp2x_gelu", "c-abstractor", "resampler", "pixel-shuffle"]

DEFAULT_PROMPT = "이 영상을 한국어로 자세히 설명해 주세요."
VIDEO_PLACEHOLDER = "<video>"


def checked_by(parse: Callable[[str], object]) -> AfterValidator:
    """A text setting is valid when `parse` takes it; the parser's ValueError is the reason. Kept on the
    type (not a model validator) so a flag's value is checked alone, by the same code (vlmcap/cli/options.py)."""

    def check(text: str) -> str:
        parse(text)
        return text

    return AfterValidator(check)


# Where a text setting names a path, the flag that sets it says which kind (vlmcap/cli/options.py).
FOLDER = {"path": "folder"}
FILE = {"path": "file"}


# Past this, an integer setting overflows the C and torch types it ends up in (exit 70 mid-run); the
# settings that size an allocation have bounds of their own, far below it. Seeds are the exception.
INT_SETTING_MAX = 2**31 - 1


class _Section(BaseModel):
    # extra="forbid" is what turns a typo in a YAML key into an error instead of a silent default;
    # allow_inf_nan=False refuses `.inf` / `.nan` (YAML) in every float before they reach a record.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=(), allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _sane_integer(cls, value: Any, info: ValidationInfo) -> Any:
        """An integer setting is a number (pydantic would take `true` for 1) within INT_SETTING_MAX."""
        if cls.model_fields[info.field_name].annotation not in (int, int | None):
            return value
        if isinstance(value, bool):
            raise ValueError("a number, not true or false")
        if isinstance(value, int) and abs(value) > INT_SETTING_MAX and info.field_name != "seed":
            raise ValueError(f"at most {INT_SETTING_MAX} in size")
        return value


class VisionConfig(_Section):
    model: str = Field(
        "openai/clip-vit-large-patch14-336",
        description="Hub id, local directory or `preset:NAME` of a transformers vision model with hidden states.",
    )
    feature_layer: int = Field(-2, description="Hidden-state index used as features (LLaVA uses -2).")
    revision: str | None = None


class LLMConfig(_Section):
    model: str = Field("Qwen/Qwen3-8B", description="Hub id, local directory or `preset:NAME` of a causal LM.")
    quantize: Literal["none", "4bit"] = Field("4bit", description="4bit = NF4 via bitsandbytes (QLoRA).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Compute dtype; auto = bfloat16 on CUDA, float32 on CPU."
    )
    revision: str | None = None
    trust_remote_code: bool = Field(False, description="Run model code from the hub. Off unless you ask.")


class LoraConfig(_Section):
    r: int = Field(16, ge=1, le=4096)
    alpha: int = Field(32, ge=1, le=1 << 16)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class ProjectorConfig(_Section):
    kind: ProjectorKind = "c-abstractor"
    tokens_per_frame: int | None = Field(
        None,
        ge=1,
        description="Output tokens per frame for c-abstractor/resampler (a square; default 144 / 256 on a 24x24 "
        "grid); fixed by the grid for the others.",
    )
    depth: int = Field(3, ge=0, le=64, description="C-Abstractor: RegNet blocks before and after pooling.")
    mlp_depth: int = Field(2, ge=1, le=64, description="C-Abstractor: Linear layers of the readout MLP.")
    hidden_size: int | None = Field(
        None, ge=1, le=1 << 16, description="C-Abstractor conv width (default: vision hidden size)."
    )

    @model_validator(mode="after")
    def _check_tokens(self) -> ProjectorConfig:
        m = self.tokens_per_frame
        if m is None:
            return self
        if self.kind in ("c-abstractor", "resampler") and math.isqrt(m) ** 2 != m:
            raise ValueError(f"tokens_per_frame={m} must be a square number for {self.kind}")
        return self


class VideoConfig(_Section):
    num_frames: int = Field(8, ge=1, le=256, description="Frames sampled per video (middle of T equal segments).")


class PromptConfig(_Section):
    default_prompt: str = DEFAULT_PROMPT
    system_prompt: str | None = None

    @field_validator("default_prompt")
    @classmethod
    def _one_placeholder_at_most(cls, v: str) -> str:
        if v.count(VIDEO_PLACEHOLDER) > 1:
            raise ValueError(f"at most one {VIDEO_PLACEHOLDER} placeholder is allowed")
        return v


class ModelConfig(_Section):
    vision: VisionConfig = Field(default_factory=VisionConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    projector: ProjectorConfig = Field(default_factory=ProjectorConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)


class TrainConfig(_Section):
    data: str | None = Field(None, description="Training manifest (JSONL).", json_schema_extra=FILE)
    val: list[str] = Field(
        default_factory=list, description="Validation manifests, evaluated separately.", json_schema_extra=FILE
    )
    init_from: str | None = Field(None, description="Run dir or checkpoint to take the projector (+adapter) from.")
    stage: Literal["projector", "lora"] = "projector"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1, le=4096)
    grad_accum: int = Field(1, ge=1)
    lr_projector: float = Field(1e-3, gt=0)
    lr_lora: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool | Literal["auto"] = Field(
        "auto",
        description="true, false, or auto: recompute the fewest LLM layers in backward that make a step fit "
        'train.memory_budget_gb (docs/TRAINING.md, "Memory plan").',
    )
    memory_budget_gb: float | None = Field(
        None, gt=0, description="Memory a training step may use, GB of 2**30 bytes (default: the device's total)."
    )
    save_every: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)
    eval_every: int = Field(500, ge=1)
    max_decode_failures: int = Field(100, ge=0)
    feature_cache: bool = Field(False, description="Cache frozen encoder outputs on disk (fp16) across epochs.")
    decode_workers: int = Field(2, ge=1, le=256)
    decode_timeout_s: float = Field(60.0, gt=0)
    eval_max_new_tokens: int = Field(48, ge=1, le=1 << 15)
    eval_batch_size: int = Field(16, ge=1, le=4096)
    log_every: int = Field(10, ge=1)
    tensorboard: bool = False


class CaptionGateConfig(_Section):
    """Thresholds a lossy export must meet against the float32 reference (docs/EXPORT.md, "Caption gate")."""

    videos: int = Field(8, ge=1, le=256, description="Held-out videos captioned by both the bundle and float32.")
    min_chrf: float = Field(70.0, ge=0, le=100, description="chrF++ of the bundle's captions against float32's.")
    min_exact_match: float = Field(0.5, ge=0, le=1, description="Share of videos with the identical caption.")
    min_token_agreement: float = Field(
        0.9, ge=0, le=1, description="Share of float32 caption tokens the bundle also predicts (teacher-forced)."
    )


class ExportConfig(_Section):
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp32", description="vision.onnx weights: fp32, fp16 (GPU) or int8 dynamic quantization (CPU edge boxes)."
    )
    opset: int = Field(17, ge=14, le=21, description="ONNX opset of vision.onnx.")
    merge_into: Literal["dequantized", "original"] = Field(
        "dequantized", description="4-bit runs: merge LoRA into the NF4 weights it was trained on, or the originals."
    )
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the merged LLM checkpoint; auto = what training computed in on this device."
    )
    llm_quant: Literal["none", "w4a16", "w8a8", "fp8"] = Field(
        "none",
        description="Quantize the merged LLM (compressed-tensors): 4-bit weights, int8 weights+activations, or FP8.",
    )
    llm_quant_group_size: int = Field(
        128, ge=2, description="w4a16: weights per scale; must divide every quantized layer's input size."
    )
    calibration_videos: int = Field(
        32, ge=1, le=4096, description="Training videos (with their captions) that calibrate LLM quantization."
    )
    max_new_tokens: int = Field(128, ge=1, le=1 << 15, description="Default caption length limit stored in the bundle.")
    verify_videos: int = Field(2, ge=1, le=16, description="Sample videos run through both models to verify.")
    gate: CaptionGateConfig = Field(default_factory=CaptionGateConfig)

    @model_validator(mode="before")
    @classmethod
    def _legacy_optimize(cls, data: Any) -> Any:
        """`optimize` wrote ONNX Runtime's fused operators into vision.onnx; the graph is standard ONNX
        now and ONNX Runtime fuses when its session opens (issue 34, docs/EXPORT.md). Every run's
        config.yaml and every bundle.json from before holds the key, so it is read and ignored."""
        if isinstance(data, dict) and "optimize" in data:
            return {key: value for key, value in data.items() if key != "optimize"}
        return data


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N -> (I, N); ValueError with the reason otherwise."""
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"{text!r}: expected I/N, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"{text!r}: need 0 <= I < N")
    return index, count


class VllmConfig(_Section):
    """vLLM engine settings (docs/BATCH.md, "The pipeline")."""

    tensor_parallel_size: int = Field(1, ge=1, le=64, description="GPUs the LLM is split across.")
    gpu_memory_utilization: float | None = Field(
        None, gt=0, le=1, description="Fraction of GPU memory (of RAM on vLLM's CPU build) for weights + KV cache."
    )
    max_model_len: int | None = Field(None, ge=1, le=1 << 20, description="Context length (default: just enough).")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="What the LLM computes in (both engines); auto: the bundle's on GPUs, on CPUs bfloat16 "
        "where it is native, faster and checked against float32, else float32.",
    )
    quantization: str | None = Field(None, description="Weight quantization at load time, e.g. fp8.")
    max_num_seqs: int | None = Field(None, ge=1, le=1 << 16, description="Sequences scheduled together.")
    enforce_eager: bool = Field(False, description="No CUDA graphs (faster start, slower steps).")
    kv_cache_gib: float | None = Field(None, gt=0, description="KV cache size (default on CPU: one batch's).")


class GenerationOverrides(_Section):
    """Decoding settings; None keeps the bundle's own."""

    max_new_tokens: int | None = Field(None, ge=1, le=1 << 15, description="Caption length limit, in tokens.")
    temperature: float | None = Field(None, ge=0, description="0 = greedy.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling.")
    repetition_penalty: float | None = Field(None, gt=0, description="transformers engine only.")
    seed: int | None = Field(None, description="Sampling seed.")
    ignore_eos: bool | None = Field(
        None, description="Generate exactly max_new_tokens, no stop token: captions of one length (benchmarks)."
    )


QUALITY_CHECKS = ("repetition", "truncated", "wrong_script", "empty")


def _script_names(names: str) -> None:
    """auto, none, or script names joined by + (an unknown one fails here, before any work)."""
    if names not in ("auto", "none"):
        from vlmcap.text_script import script_pattern

        script_pattern(names)


class QualityConfig(_Section):
    """Caption guards (docs/BATCH.md, "Caption quality"): every caption is checked, a flagged one is
    generated once more with `retry_generation`, and the record says what was found."""

    checks: list[Literal["repetition", "truncated", "wrong_script", "empty"]] = Field(
        default_factory=lambda: list(QUALITY_CHECKS),
        description="Checks to run ([], or none on the command line, turns the guards off).",
    )
    repetition_ngram: int = Field(3, ge=1, le=64, description="n of the token n-grams the loop check counts.")
    repetition_max_fraction: float = Field(
        0.4, gt=0, le=1, description="A caption whose n-grams are more than this fraction repeats is a loop."
    )
    repetition_min_tokens: int = Field(12, ge=1, description="Shorter captions are not checked for loops.")
    script: Annotated[str, checked_by(_script_names)] = Field(
        "auto",
        description="Expected script of captions: auto (the prompt's main script), none, or Unicode script "
        "names joined by + (Hangul, Latin, Han+Hiragana+Katakana, ...).",
    )
    script_min_fraction: float = Field(
        0.5, ge=0, le=1, description="Least fraction of a caption's letters in the expected script."
    )
    retry: bool = Field(True, description="Generate a flagged caption once more with retry_generation.")
    # Sampling breaks the greedy loops and early ends that decoding at temperature 0 repeats
    # exactly; penalties would too, but vLLM refuses them with prompt embeds (engines/runtime/llm_vllm.py).
    retry_generation: GenerationOverrides = Field(
        default_factory=lambda: GenerationOverrides(temperature=0.7, top_p=0.9),
        description="Decoding of the retry, on top of the run's (default: temperature 0.7, top_p 0.9).",
    )
    strict: bool = Field(False, description="Write an error line instead of a caption still flagged after the retry.")

    @property
    def retries(self) -> bool:
        """A flagged caption is generated once more (checks on and retry on)."""
        return self.retry and bool(self.checks)


class RayConfig(_Section):
    """`vlmcap batch --ray` (docs/RAY.md); the run stays local while `address` is None."""

    address: str | None = Field(None, description="auto (RAY_ADDRESS, a running or a new local cluster) or ADDRESS.")
    decode_actors: int = Field(1, ge=1, le=1024, description="Each runs `workers` decode processes.")
    vision_actors: int = Field(1, ge=1, le=1024, description="Actors running the vision engine.")
    llm_actors: int = Field(1, ge=1, le=1024, description="Actors running the LLM engine.")
    gpus_per_vision_actor: float = Field(0.0, ge=0, description="GPUs (or a fraction) each vision actor holds.")
    gpus_per_llm_actor: float = Field(0.0, ge=0, description="GPUs (or a fraction) each LLM actor holds.")
    # The model actors mostly wait on their accelerator (or share the cores with decoding on a CPU
    # box): half a CPU each lets decode + vision + LLM actors fit a 2-CPU node together.
    cpus_per_model_actor: float = Field(0.5, gt=0)
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local cluster this run starts.")


class RemoteConfig(_Section):
    """s3://, gs://, http(s):// inputs (docs/BATCH.md, "Remote inputs"): each object is streamed to a
    local spool file for the decoders, which need a path, and deleted when it is decoded."""

    spool_dir: str | None = Field(
        None, description="Where objects are downloaded to (default: the system temp dir).", json_schema_extra=FOLDER
    )
    max_object_mb: int = Field(2048, ge=1, description="Larger objects are refused (RemoteTooLarge), not downloaded.")
    timeout_s: float = Field(60.0, gt=0, description="Longest wait for the server to connect or send more bytes.")
    retries: int = Field(3, ge=0, description="Tries after the first on a dropped connection or a timeout.")
    backoff_s: float = Field(1.0, ge=0, description="Wait before the first retry; doubles each retry.")
    anonymous: bool = Field(False, description="s3/gs: unsigned requests (public buckets), no credentials needed.")


DECODER_NAME = r"^(decord|pyav|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$"  # module:Class = a custom decoder (tests)


def _decoder_name(name: str) -> None:
    if not re.match(DECODER_NAME, name):
        raise ValueError(f"unknown decoder {name!r}; use decord, pyav or module:Class")


class BatchConfig(_Section):
    """`vlmcap batch` (and the engine settings `vlmcap eval` / `vlmcap bench batch` share), docs/BATCH.md.

    Every command-line flag of `vlmcap batch` has a key here, so a nightly job can be one config
    file; flags given on the command line win over the file.
    """

    _segment_plan: SegmentPlan | None = PrivateAttr(None)  # built from the segment fields by `_segment_plan_once`
    inputs: list[str] = Field(default_factory=list, description="Files, folders, globs, list files, - for stdin.")
    out: str | None = Field(None, description="The captions JSONL.", json_schema_extra=FILE)
    engine: str | None = Field(
        None, description="Bundle directory (default: VLMCAP_HOME/engines/default).", json_schema_extra=FOLDER
    )
    batch_size: int = Field(8, ge=1, le=4096, description="Videos (or segments) per LLM call (batched schedule).")
    vision_batch: int | None = Field(
        None, ge=1, le=4096, description="Videos (or segments) per vision call (default: batch_size)."
    )
    llm_schedule: Literal["auto", "stream", "batch"] = Field(
        "auto",
        description="stream: each request enters vLLM when its vision rows exist and leaves when done; "
        "batch: one generate per batch_size; auto: stream on vLLM, batch on transformers.",
    )
    max_inflight: int | None = Field(
        None,
        ge=1,
        le=1 << 16,
        description="Streaming: requests in the LLM engine at once (default: what its KV cache holds).",
    )
    workers: int = Field(2, ge=1, le=256, description="Decode worker processes.")
    decode_timeout_s: float = Field(60.0, gt=0, description="Seconds before a hung decode is killed.")
    decoders: list[Annotated[str, checked_by(_decoder_name)]] = Field(
        default_factory=lambda: ["decord", "pyav"], min_length=1, description="Decoder chain, first that works wins."
    )
    decode_memory_mb: int = Field(4096, ge=0, description="Address-space limit of each decode worker (0: none).")
    max_frame_pixels: int = Field(8192 * 8192, ge=1, description="Larger frames are refused before decoding.")
    max_aspect_ratio: float = Field(8.0, ge=1, description="Frames further from square are refused before decoding.")
    segments: Annotated[str, checked_by(parse_segments)] = Field(
        "none", description="none (one caption per file), fixed:SECONDS (e.g. fixed:30) or scenes (detected shots)."
    )
    segment_min_s: float = Field(2.0, gt=0, description="Shorter segments (a tail, a flash) join a neighbour.")
    segment_max_s: float = Field(60.0, gt=0, description="Longer scenes are split into equal parts.")
    scene_threshold: float = Field(27.0, gt=0, description="Content change that counts as a cut (PySceneDetect).")
    srt_dir: str | None = Field(
        None, description="Write one SRT subtitle file per video here.", json_schema_extra=FOLDER
    )
    vtt_dir: str | None = Field(
        None, description="Write one WebVTT subtitle file per video here.", json_schema_extra=FOLDER
    )
    thumbnails: str | None = Field(
        None,
        description="Write a contact-sheet JPEG of the frames the model saw per video (and segment) here.",
        json_schema_extra=FOLDER,
    )
    prompt: str | None = Field(None, description="Instruction for every video (default: the bundle's).")
    allow_control_tokens: bool = Field(False, description="Let --prompt hold chat control tokens (<|im_end|>, ...).")
    limit: int | None = Field(None, ge=1, description="Caption at most this many videos in this run.")
    shard: Annotated[str, checked_by(parse_shard)] | None = Field(
        None, description="I/N: only the videos of shard I of N; stable across runs (job arrays)."
    )
    retry_errors: bool = Field(False, description="Try again videos whose last line is an error.")
    recaption: Literal["none", "stale"] = Field(
        "none",
        description="stale: caption again videos whose line came from another bundle or prompt "
        "(none: a captioned video is done, whatever made it).",
    )
    overwrite: bool = Field(False, description="Start the output over instead of resuming it.")
    dedup: Literal["none", "sha256"] = Field(
        "none",
        description="sha256: hash each selected file and caption identical content once; "
        "the copies get a line with duplicate_of (and renamed files are not captioned again).",
    )
    wait_lock_s: float = Field(0.0, ge=0, description="Seconds to wait for another run's lock.")
    stats: str | None = Field(None, description="Write the run's stats as JSON here.", json_schema_extra=FILE)
    progress: bool | None = Field(None, description="Progress bar (default: when stderr is a terminal).")
    log_every_s: float = Field(30.0, gt=0, description="Without a bar: a progress line this often.")
    batch_wait_s: float = Field(2.0, ge=0, description="How long a partial batch waits for more decoded videos.")
    llm_backend: Literal["auto", "vllm", "transformers"] = Field(
        "auto", description="vllm, transformers, or auto: the faster on this machine, measured once (docs/BATCH.md)."
    )
    vision_backend: Literal["auto", "onnx", "torch", "openvino"] = Field(
        "auto",
        description="onnx: the bundle's vision.onnx in ONNX Runtime; torch: its reference weights in PyTorch; "
        "openvino: vision.onnx in OpenVINO (the openvino extra); auto: the fastest that passes the check "
        'against float32 on this machine (docs/BATCH.md, "Engines and precision").',
    )
    vision_precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto",
        description="What the torch and OpenVINO engines compute in (ONNX Runtime computes the bundle's "
        "precision); auto: bf16 where the CPU or GPU has it natively and it is faster and checked.",
    )
    providers: list[str] | None = Field(None, description="ONNX Runtime providers (tensorrt, cuda, cpu); default best.")
    device: str | None = Field(None, description="Device of the torch engines (default: cuda when available).")
    cpu_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Threads of each model engine on CPU (default: the cores split between the two "
        "engines by their measured cost per video; evenly where nothing was measured).",
    )
    vision_threads: int | None = Field(
        None,
        ge=1,
        le=1024,
        description="Threads of the vision engine on CPU (default: cpu_threads when set, else the cores "
        "split between the two engines by their measured cost per video).",
    )
    llm_threads: int | None = Field(
        None, ge=1, le=1024, description="Threads of the LLM engine on CPU (default: as vision_threads)."
    )
    generation: GenerationOverrides = Field(default_factory=GenerationOverrides)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    vllm: VllmConfig = Field(default_factory=VllmConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    remote: RemoteConfig = Field(default_factory=RemoteConfig)

    @model_validator(mode="after")
    def _stream_needs_vllm(self) -> BatchConfig:
        if self.llm_schedule == "stream" and self.llm_backend == "transformers":
            raise ValueError("llm_schedule stream needs the vLLM engine; transformers runs batched generate")
        if self.max_inflight is not None and (self.llm_backend == "transformers" or self.llm_schedule == "batch"):
            raise ValueError("max_inflight bounds the streaming schedule, which needs vLLM (schedule auto or stream)")
        return self

    @property
    def vision_batch_size(self) -> int:
        return self.vision_batch or self.batch_size

    @model_validator(mode="after")
    def _segment_plan_once(self) -> BatchConfig:
        """The segment settings become one frozen `SegmentPlan` here, at validation (and again on an
        assignment): every stage takes that plan, none reads the text again."""
        if self.segment_min_s > self.segment_max_s:
            raise ValueError(
                f"segment_min_s ({self.segment_min_s:g}) is more than segment_max_s ({self.segment_max_s:g})"
            )
        mode, window_s = parse_segments(self.segments)
        plan = (
            None
            if mode == "none"
            else SegmentPlan(mode, window_s, self.segment_min_s, self.segment_max_s, self.scene_threshold)
        )
        object.__setattr__(self, "_segment_plan", plan)  # a private attribute: no re-validation loop
        return self

    @property
    def segment_plan(self) -> SegmentPlan | None:
        """How videos are cut into segments; None: one caption per file."""
        return self._segment_plan

    @property
    def remote_options(self) -> RemoteOptions:
        """`remote` as input discovery and the decode workers take it (frozen, picklable)."""
        from vlmcap.video.remote_urls import RemoteOptions

        return RemoteOptions.from_config(self.remote)

    def decode_options(self, num_frames: int) -> DecodeOptions:
        """What a batch run decodes with: the bundle's frame count and these decode settings, built once
        here so vlmcap/video takes frozen options and never this config."""
        from vlmcap.video.decoders import DecodeOptions

        return DecodeOptions(
            num_frames=num_frames,
            decoders=tuple(self.decoders),
            max_frame_pixels=self.max_frame_pixels,
            max_aspect_ratio=self.max_aspect_ratio,
            memory_limit_mb=self.decode_memory_mb or None,
            remote=self.remote_options,
            thumbnail_dir=os.path.abspath(self.thumbnails) if self.thumbnails is not None else None,
        )


class VlmcapConfig(_Section):
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
