"""bundle.json as a typed model: what an engine bundle holds and everything an engine needs to know.

The exporter builds a `BundleManifest` and writes it through `vlmcap.bundle.loader.write_manifest`;
every reader gets one back from `load_bundle`, validated field by field. Field meanings are in
docs/EXPORT.md ("bundle.json").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from vlmcap.config.schema import ExportConfig, ProjectorConfig, ProjectorKind
from vlmcap.video.image_spec import ImageSpec

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
VISION_ONNX = "vision.onnx"
LLM_DIR = "llm"
REFERENCE_DIR = "reference"  # the run's projector weights + config, for the PyTorch vision engine


class _Section(BaseModel):
    # A field that is not in the model is an error: a manifest written by a different format would
    # otherwise be half-understood.
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class FileEntry(_Section):
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SourceRun(_Section):
    weights: str
    step: int | None
    stage: Literal["projector", "lora"]


class ModelIds(_Section):
    vision: str
    vision_revision: str | None
    llm: str
    llm_revision: str | None
    seed: int
    trained_quantization: Literal["none", "4bit"]


class ProjectorInfo(_Section):
    kind: ProjectorKind
    tokens_per_frame: int = Field(ge=1)
    config: ProjectorConfig


class VideoInfo(_Section):
    num_frames: int = Field(ge=1)


class ImageInfo(_Section):
    """The vision model's preprocessing (`ImageSpec`) and the size it produces, (height, width)."""

    shortest_edge: int | None
    resize_hw: tuple[int, int] | None
    crop_hw: tuple[int, int] | None
    resample: Literal["bilinear", "bicubic"]
    rescale_factor: float
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: tuple[int, int]

    @classmethod
    def from_spec(cls, spec: ImageSpec) -> ImageInfo:
        return cls(**spec.to_dict(), size=spec.output_hw)

    def spec(self) -> ImageSpec:
        return ImageSpec.from_fields(self.model_dump())


class TensorInfo(_Section):
    name: str
    shape: list[str | int]
    dtype: str


class Verification(_Section):
    """One comparison of a shipped artefact with the model it came from (docs/EXPORT.md)."""

    max_abs: float
    mean_abs: float
    ref_max_abs: float
    max_abs_scaled: float
    min_cosine: float
    mean_cosine: float
    finite: bool
    tolerance: dict[str, float]
    passed: bool
    providers: list[str] | None = None  # vision: the ONNX Runtime providers that ran the check
    top1_agreement: float | None = None  # llm: share of positions with the same greedy next token
    positions: int | None = None  # llm: positions compared
    text_rows_checked: int | None = None  # llm: token ids whose engine rows were checked against the model


class VisionInfo(_Section):
    file: str
    external_data: bool
    precision: Literal["fp32", "fp16", "int8"]
    opset: int
    fused_ops: dict[str, int]  # ONNX Runtime operators fused into the file: {} since issue 34 (standard ONNX)
    input: TensorInfo
    output: TensorInfo
    verification: dict[str, Verification]  # "final" (the shipped graph) + every intermediate graph
    seconds: float
    feature_layer: int
    hidden_size: int
    grid_size: int


class Quantization(_Section):
    """How the shipped LLM was quantized (export/quantize_llm.py; docs/EXPORT.md, "Quantized LLM")."""

    scheme: Literal["w4a16", "w8a8", "fp8"]
    format: Literal["pack-quantized", "int-quantized", "float-quantized"]  # compressed-tensors format
    weights: str
    activations: str | None
    group_size: int | None
    ignored: list[str]
    method: str
    layers: int = Field(ge=1)
    calibration_sequences: int = Field(ge=1)
    calibration_tokens: int = Field(ge=1)
    error_reduction_vs_minmax: float


class CaptionGate(_Section):
    """Captions of the lossy bundle against the float32 model's (export/caption_gate.py)."""

    videos: int = Field(ge=1)
    sources: list[str]
    lossy: list[str]
    chrf: float
    exact_match: float
    token_agreement: float
    thresholds: dict[str, float]
    passed: bool


class LLMInfo(_Section):
    dir: str
    dtype: Literal["float32", "bfloat16", "float16"]
    hidden_size: int = Field(ge=1)
    vocab_size: int = Field(ge=1)
    embed_tokens: str  # safetensors name of the input embedding table (the engines read it directly)
    # What the model's embedding layer multiplies table rows by (Gemma: sqrt(hidden)); vlmcap.model.text_rows.
    # Bundles from before this field was recorded were all 1.
    embed_scale: float = Field(1.0, gt=0)
    adapter_merged: bool
    merge_into: Literal["dequantized", "original"]
    verification: Verification
    quantization: Quantization | None = None  # None: the merged weights as they are, in `dtype`
    seconds: float


class PromptInfo(_Section):
    default_prompt: str
    system_prompt: str | None
    placeholder: str
    enable_thinking: bool
    chat_template: str | None

    def instruction(self, prompt: str | None) -> str:
        """The instruction a video gets: `prompt` (--prompt), or the bundle's default when it is None."""
        return self.default_prompt if prompt is None else prompt


class GenerationInfo(_Section):
    max_new_tokens: int = Field(ge=1)
    temperature: float = Field(ge=0)
    repetition_penalty: float = Field(gt=0)
    stop_token_ids: list[int] = Field(min_length=1)


class ExportRecord(ExportConfig):
    """The options the bundle was exported with, and what exporting it took (export/memory.py).

    MB are 10^6 bytes of resident memory (RSS, as /usr/bin/time counts it). Bundles exported before
    these fields existed have neither.
    """

    peak_rss_mb: float | None = Field(None, ge=0)
    phase_peak_rss_mb: dict[str, float] | None = None  # each phase's own peak, where the OS can tell


class BundleManifest(_Section):
    format_version: Literal[1] = FORMAT_VERSION
    id: str = ""  # set by write_manifest: a hash of every other field, file hashes included
    vlmcap_version: str
    created: str
    source_run: SourceRun
    model: ModelIds
    projector: ProjectorInfo
    video: VideoInfo
    image: ImageInfo
    vision: VisionInfo
    tokens_per_video: int = Field(ge=1)
    llm: LLMInfo
    caption_gate: CaptionGate | None = None  # None: nothing in the bundle is lossy
    prompt: PromptInfo
    generation: GenerationInfo
    verification_inputs: list[str]
    export: ExportRecord
    files: dict[str, FileEntry] = Field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
