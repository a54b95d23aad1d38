"""One typed configuration for the whole tool: model, projector, video frames, prompt, training, export.

A config is a YAML file plus `section.key=value` overrides from the command line. It is validated
in full before any work starts: an unknown key, a wrong type or an out-of-range value fails with
a message that names the file and the dotted field.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vlmcap.errors import ConfigError

ProjectorKind = Literal["linear", "mlp2x_gelu", "c-abstractor", "resampler", "pixel-shuffle"]

DEFAULT_PROMPT = "이 영상을 한국어로 자세히 설명해 주세요."
VIDEO_PLACEHOLDER = "<video>"


class _Section(BaseModel):
    # extra="forbid" is what turns a typo in a YAML key into an error instead of a silent default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


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
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
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
    depth: int = Field(3, ge=0, description="C-Abstractor: RegNet blocks before and after pooling.")
    mlp_depth: int = Field(2, ge=1, description="C-Abstractor: Linear layers of the readout MLP.")
    hidden_size: int | None = Field(None, ge=1, description="C-Abstractor conv width (default: vision hidden size).")

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
    data: str | None = Field(None, description="Training manifest (JSONL); `vlmcap train --data` overrides.")
    val: list[str] = Field(default_factory=list, description="Validation manifests, evaluated separately.")
    init_from: str | None = Field(None, description="Run dir or checkpoint to take the projector (+adapter) from.")
    stage: Literal["projector", "lora"] = "projector"
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    lr_projector: float = Field(1e-3, gt=0)
    lr_lora: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    save_every: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)
    eval_every: int = Field(500, ge=1)
    max_decode_failures: int = Field(100, ge=0)
    feature_cache: bool = Field(False, description="Cache frozen encoder outputs on disk (fp16) across epochs.")
    decode_workers: int = Field(2, ge=1)
    decode_timeout_s: float = Field(60.0, gt=0)
    eval_max_new_tokens: int = Field(48, ge=1)
    eval_batch_size: int = Field(16, ge=1)
    log_every: int = Field(10, ge=1)
    tensorboard: bool = False


class ExportConfig(_Section):
    precision: Literal["fp32", "fp16", "int8"] = Field(
        "fp32", description="vision.onnx weights: fp32, fp16 (GPU) or int8 dynamic quantization (CPU edge boxes)."
    )
    opset: int = Field(17, ge=14, le=21)
    optimize: bool = Field(True, description="Fuse attention/LayerNorm/GELU with ONNX Runtime's transformer optimizer.")
    merge_into: Literal["dequantized", "original"] = Field(
        "dequantized", description="4-bit runs: merge LoRA into the NF4 weights it was trained on, or the originals."
    )
    llm_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="dtype of the merged LLM checkpoint; auto = what training computed in on this device."
    )
    max_new_tokens: int = Field(128, ge=1, description="Default caption length limit stored in the bundle.")
    verify_videos: int = Field(2, ge=1, le=16, description="Sample videos run through both models to verify.")


class VlmcapConfig(_Section):
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    video: VideoConfig = Field(default_factory=VideoConfig)
    prompt: PromptConfig = Field(default_factory=PromptConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)


def _format_validation_error(err: ValidationError, source: str) -> str:
    problems = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
        got = f" (got {e['input']!r})" if e["type"] != "extra_forbidden" and "input" in e else ""
        problems.append(f"{field}: {msg}{got}")
    return f"{source}: invalid config: " + "; ".join(problems)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`model.projector.kind=resampler` -> (["model", "projector", "kind"], "resampler"); values are YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. model.projector.kind=resampler")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e.__class__.__name__})") from None
    return key.strip().split("."), value


def _apply_override(data: dict[str, Any], path: list[str], value: Any, text: str) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {text!r}: {part} is not a section")
        node = child
    node[path[-1]] = value


CONFIG_PRESETS = ("tiny", "reference", "reference-random")


def config_preset(name: str) -> dict[str, Any]:
    """The YAML mapping of a built-in config preset (vlmcap/presets/config-NAME.yaml)."""
    if name not in CONFIG_PRESETS:
        raise ConfigError(f"unknown config preset {name!r}; choose one of: {', '.join(CONFIG_PRESETS)}")
    text = resources.files("vlmcap.presets").joinpath(f"config-{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | None = None,
) -> VlmcapConfig:
    """Start from defaults (or a config preset), merge a YAML file, apply overrides, validate everything."""
    data: dict[str, Any] = config_preset(preset) if preset else {}
    source = f"config preset {preset!r}" if preset else "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(loaded).__name__}")
        data = _deep_merge(data, loaded)
    for text in overrides:
        keys, value = parse_override(text)
        _apply_override(data, keys, value, text)
    try:
        return VlmcapConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def dump_config(config: VlmcapConfig) -> str:
    """YAML text that `load_config` reads back to an equal config."""
    return yaml.safe_dump(config.model_dump(mode="json"), allow_unicode=True, sort_keys=False)
