"""`vlmcap eval`: caption a labelled manifest through the batch path and score it.

The captions come from exactly what `vlmcap batch` runs (decode workers, the bundle's ONNX graph,
the chosen LLM engine), so the scores describe the shipped bundle, not the training-time model.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vlmcap.engines.captioner import Captioner, EngineOptions, cpu_threads_per_engine
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.pipeline import BatchOptions, run_batch
from vlmcap.export.bundle import Bundle
from vlmcap.training.manifest import load_manifest
from vlmcap.training.metrics import caption_metrics

from vlmcap.errors import ConfigError


def evaluate_bundle(
    bundle: Bundle,
    manifest: Path,
    engines: EngineOptions,
    batch_size: int = 8,
    workers: int = 2,
    max_new_tokens: int | None = None,
    records_out: Path | None = None,
    open_captioner: Callable[[], Captioner] | None = None,
) -> dict[str, Any]:
    """Metrics over the manifest (+ per-video records); failed videos are counted, not scored."""
    samples, seen = [], set()
    for sample in load_manifest(manifest):  # a video listed twice (two references) is captioned once
        if sample.video not in seen:
            seen.add(sample.video)
            samples.append(sample)
    prompts = {s.prompt for s in samples}
    if len(prompts) > 1:
        raise ConfigError(f"{manifest}: samples carry different prompts; evaluate one prompt per manifest")
    prompt = prompts.pop()
    params = GenerationParams.from_bundle(bundle, max_new_tokens=max_new_tokens)
    if engines.cpu_threads is None:
        engines.cpu_threads = cpu_threads_per_engine(workers)
    with tempfile.TemporaryDirectory(prefix="vlmcap-eval-") as tmp:
        options = BatchOptions(
            Path(tmp) / "captions.jsonl", batch_size=batch_size, workers=workers, prompt=prompt, progress_bar=False
        )
        opener = open_captioner or (lambda: Captioner.open(bundle, engines, params, prompt, batch_size))
        stats = run_batch([s.video for s in samples], bundle, opener, options)
        lines = options.out.read_text(encoding="utf-8").splitlines()
    by_video = {r["video"]: r for r in map(json.loads, lines)}
    records = []
    for s in samples:
        r = by_video[s.video]
        records.append({"video": s.video, "reference": s.caption, **{k: r[k] for k in ("status", "caption") if k in r}})
    done = [r for r in records if r["status"] == "ok"]
    metrics = caption_metrics([r["caption"] for r in done], [r["reference"] for r in done])
    metrics["failed"] = len(records) - len(done)
    metrics["engines"] = stats.engines
    metrics["bundle"] = bundle.id
    if records_out is not None:
        records_out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return {"metrics": metrics, "records": records}
