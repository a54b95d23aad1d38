"""`vlmcap eval`: caption a labelled manifest through the batch path and score it.

The captions come from exactly what `vlmcap batch` runs (decode workers, the bundle's ONNX graph,
the chosen LLM engine, the same run core), so the scores describe the shipped bundle, not the
training-time model. The records stay in memory: nothing is written unless asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config import BatchConfig
from vlmcap.engines.captioner import Captioner, with_cpu_threads
from vlmcap.engines.llm import GenerationParams
from vlmcap.engines.output import ResumeState
from vlmcap.engines.pipeline import LocalPipeline
from vlmcap.engines.progress import Progress
from vlmcap.engines.run import BatchRun, RunStats
from vlmcap.engines.selection import TaskFilter
from vlmcap.errors import ConfigError
from vlmcap.files import write_jsonl
from vlmcap.labelled_manifest import load_manifest
from vlmcap.metrics import caption_metrics


def evaluate_bundle(
    bundle: Bundle, manifest: Path, settings: BatchConfig, records_out: Path | None = None
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
    settings = with_cpu_threads(settings.model_copy(update={"prompt": prompts.pop()}))
    params = GenerationParams.from_bundle(bundle, settings.generation)
    driver = LocalPipeline(bundle, settings, lambda: Captioner.open(bundle, settings, params))
    tasks = TaskFilter(ResumeState())(s.video for s in samples)
    prompt = bundle.manifest.prompt.default_prompt if settings.prompt is None else settings.prompt
    stats = RunStats()
    by_video: dict[str, dict[str, Any]] = {}
    with BatchRun(driver, tasks, bundle.id, prompt, stats, Progress(settings.progress, settings.log_every_s)) as run:
        for records in run:
            by_video.update((r["video"], r) for r in records)
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
        write_jsonl(records_out, records)
    return {"metrics": metrics, "records": records}
