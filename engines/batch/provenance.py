"""Where a caption came from, written into every record (docs/BATCH.md, "Output").

A line must say what produced it without the run's logs: the vlmcap version, the bundle (its id is
a hash of every file in it), the precision each model ran in, the prompt and every decoding
parameter. The record's top level keeps `bundle`, `prompt` and `finish_reason`; the rest sits in
its `provenance` object.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vlmcap import __version__

if TYPE_CHECKING:  # records are built before the lock is taken: no torch (engines.llm) on that path
    from vlmcap.bundle import Bundle
    from vlmcap.config.schema import BatchConfig
    from vlmcap.engines.runtime.engine_choice import EngineChoice
    from vlmcap.model.generation import GenerationParams


def _decoding(params: GenerationParams) -> dict[str, Any]:
    """The decoding as records name it; `ignore_eos` (captions forced to length, benchmarks only) when set."""
    values = asdict(params)
    if not values.pop("ignore_eos"):
        return values
    return {**values, "ignore_eos": True}


@dataclass
class Provenance:
    bundle_id: str
    prompt: str
    fields: dict[str, Any] = field(default_factory=dict)  # the record's `provenance` object

    @classmethod
    def of_run(
        cls, bundle: Bundle, settings: BatchConfig, params: GenerationParams, choice: EngineChoice | None = None
    ) -> Provenance:
        """`choice`: what `auto` decided (engines/runtime/engine_choice.py); a precision below the bundle's
        is recorded with its check against float32."""
        manifest = bundle.manifest
        quantization = manifest.llm.quantization
        fields: dict[str, Any] = {
            "vlmcap": __version__,
            "vision": {"precision": manifest.vision.precision},
            "llm": {"dtype": manifest.llm.dtype, "quantization": quantization.scheme if quantization else None},
            "generation": _decoding(params),
        }
        for stage in ("vision", "llm"):
            checked = choice.checked(stage) if choice is not None else None
            if checked is not None:
                fields[stage]["checked"] = checked
        quality = settings.quality
        if quality.retries:  # the decoding of the caption guards' retry
            fields["retry_generation"] = _decoding(params.overridden(quality.retry_generation))
        return cls(bundle.id, manifest.prompt.instruction(settings.prompt), fields)

    def set_engines(self, engines: dict[str, str]) -> None:
        """The engines as they started: their names say the device and the precision they compute in
        (a bfloat16 bundle runs in float32 on the CPU's transformers engine)."""
        for stage in ("vision", "llm"):
            if stage in engines and stage in self.fields:
                self.fields[stage]["engine"] = engines[stage]
