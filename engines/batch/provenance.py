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
    from vlmcap.config import BatchConfig
    from vlmcap.generation import GenerationParams


@dataclass
class Provenance:
    bundle_id: str
    prompt: str
    fields: dict[str, Any] = field(default_factory=dict)  # the record's `provenance` object

    @classmethod
    def of_run(cls, bundle: Bundle, settings: BatchConfig, params: GenerationParams) -> Provenance:
        manifest = bundle.manifest
        quantization = manifest.llm.quantization
        fields: dict[str, Any] = {
            "vlmcap": __version__,
            "vision": {"precision": manifest.vision.precision},
            "llm": {"dtype": manifest.llm.dtype, "quantization": quantization.scheme if quantization else None},
            "generation": asdict(params),
        }
        quality = settings.quality
        if quality.retries:  # the decoding of the caption guards' retry
            fields["retry_generation"] = asdict(params.overridden(quality.retry_generation))
        return cls(bundle.id, manifest.prompt.instruction(settings.prompt), fields)

    def set_engines(self, engines: dict[str, str]) -> None:
        """The engines as they started: their names say the device and the precision they compute in
        (a bfloat16 bundle runs in float32 on the CPU's transformers engine)."""
        for stage in ("vision", "llm"):
            if stage in engines and stage in self.fields:
                self.fields[stage]["engine"] = engines[stage]
