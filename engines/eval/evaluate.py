"""`vlmcap eval`: caption a labelled manifest through the batch path and score it.

The captions come from exactly what `vlmcap batch` runs (decode workers, the bundle's ONNX graph,
the chosen LLM engine, the same run core), so the scores describe the shipped bundle, not the
training-time model. The records stay in memory: nothing is written unless asked.

A manifest whose lines carry start_s/end_s is scored per segment: the run captions segments
(`batch.segments`, `scenes` unless set), each reference segment is paired with the predicted
segment of its video that overlaps it most, and the boundary recall says how many reference cuts
the run found (vlmcap.metrics.segments).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.batch.in_memory import records_in_memory
from vlmcap.engines.batch.progress import Progress
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.run import RunStats
from vlmcap.engines.runtime.engine_choice import engine_settings
from vlmcap.engines.runtime.engines import Engines
from vlmcap.errors import ConfigError
from vlmcap.labelled_manifest import Sample, load_manifest
from vlmcap.metrics.captions import caption_metrics, caption_scores
from vlmcap.metrics.segments import BOUNDARY_TOLERANCE_S, best_match, boundaries_found, inner_boundaries
from vlmcap.model.generation import GenerationParams
from vlmcap.presets.synthetic import parse_attributes
from vlmcap.storage.files import write_jsonl
from vlmcap.video.segments import Segment

# What a manifest with segments is captioned with when the settings do not say.
DEFAULT_EVAL_SEGMENTS = "scenes"


def evaluate_bundle(
    bundle: Bundle, manifest: Path, settings: BatchConfig, records_out: Path | None = None
) -> dict[str, Any]:
    """Metrics over the manifest (+ per-video records, per reference segment with segments); failed
    videos are counted, not scored."""
    labelled = load_manifest(manifest)
    segmented = [s for s in labelled if s.window is not None]
    if segmented and len(segmented) != len(labelled):
        whole = next(s for s in labelled if s.window is None)
        raise ConfigError(
            f"{whole.source}: a whole-video line in a manifest of segments (start_s/end_s at "
            f"{segmented[0].source}); evaluate segments and whole videos from separate manifests"
        )
    if segmented and "segments" not in settings.model_fields_set:
        settings = settings.model_copy()
        settings.segments = DEFAULT_EVAL_SEGMENTS  # assigned, so validated and the segment plan rebuilt
    samples, seen = [], set()
    for sample in labelled:  # a video listed twice (two references, or segments) is captioned once
        if sample.video not in seen:
            seen.add(sample.video)
            samples.append(sample)
    prompts = {s.prompt for s in samples}
    if len(prompts) > 1:
        raise ConfigError(f"{manifest}: samples carry different prompts; evaluate one prompt per manifest")
    settings = settings.model_copy(update={"prompt": prompts.pop()})
    params = GenerationParams.from_bundle(bundle, settings.generation)
    settings, choice = engine_settings(bundle, settings, params)  # `auto` engines decided, threads set
    stats = RunStats()
    by_video = records_in_memory(
        bundle,
        settings,
        lambda: Engines.open(bundle, settings, params),
        [s.video for s in samples],
        Provenance.of_run(bundle, settings, params, choice),
        stats=stats,
        progress=Progress(settings.progress, settings.log_every_s),
    )
    if segmented:
        records, metrics = _score_segments(segmented, by_video)
        metrics["segments"] = settings.segments
    else:
        records = []
        for s in samples:
            r = by_video[s.video]
            kept = ("status", "caption", "error", "thumbnail")
            records.append({"video": s.video, "reference": s.caption, **{k: r[k] for k in kept if k in r}})
        done = [r for r in records if r["status"] == "ok"]
        metrics = caption_metrics([r["caption"] for r in done], [r["reference"] for r in done], parse_attributes)
        metrics["failed"] = len(records) - len(done)
    for record in records:
        if record["status"] == "ok":
            record["scores"] = caption_scores(record["caption"], record["reference"], parse_attributes)
    metrics["engines"] = stats.engines
    metrics["bundle"] = bundle.id
    if records_out is not None:
        write_jsonl(records_out, records)
    return {"metrics": metrics, "records": records}


def _predicted(record: dict[str, Any]) -> tuple[list[Segment], list[dict[str, Any]]]:
    """A captioned video's segments and their parts of the record (the whole record, when the run did not segment)."""
    if "segments" not in record:
        return [Segment(0.0, float(record["duration_s"]))], [record]
    parts = record["segments"]
    return [Segment(p["start_s"], p["end_s"]) for p in parts], parts


def _score_segments(
    references: list[Sample], by_video: dict[str, dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One record per reference segment, paired with its best-overlapping predicted segment; the
    caption metrics over the pairs, the segment counts and the boundary recall."""
    records = []
    for s in references:
        r = by_video[s.video]
        record = {"video": s.video, "start_s": s.window.start_s, "end_s": s.window.end_s, "reference": s.caption}
        record["status"] = r["status"]
        if r["status"] == "ok":
            segments, parts = _predicted(r)
            best = best_match(s.window, segments)
            record |= {
                "caption": parts[best]["caption"],
                "predicted_start_s": segments[best].start_s,
                "predicted_end_s": segments[best].end_s,
                **({"thumbnail": parts[best]["thumbnail"]} if "thumbnail" in parts[best] else {}),
            }
        elif "error" in r:
            record["error"] = r["error"]
        records.append(record)
    done = [r for r in records if r["status"] == "ok"]
    metrics = caption_metrics([r["caption"] for r in done], [r["reference"] for r in done], parse_attributes)
    metrics["failed"] = len(records) - len(done)
    windows: dict[str, list[Segment]] = defaultdict(list)  # per video, in manifest order
    for s in references:
        windows[s.video].append(s.window)
    cuts = found = predicted = 0
    for video, reference in windows.items():
        r = by_video[video]
        if r["status"] != "ok":
            continue
        segments, _ = _predicted(r)
        predicted += len(segments)
        duration_s = float(r["duration_s"])
        reference_cuts = inner_boundaries(reference, duration_s)
        cuts += len(reference_cuts)
        found += boundaries_found(reference_cuts, inner_boundaries(segments, duration_s))
    metrics["segments_reference"] = len(references)
    metrics["segments_predicted"] = predicted
    # None when no captioned video has a reference cut (one segment per video): nothing to find.
    metrics["boundary_recall"] = round(found / cuts, 4) if cuts else None
    metrics["boundary_tolerance_s"] = BOUNDARY_TOLERANCE_S
    return records, metrics
