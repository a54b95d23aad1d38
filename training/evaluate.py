"""Greedy captions for a labelled manifest and the Korean caption metrics over them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from vlmcap.labelled_manifest import Sample
from vlmcap.metrics.captions import caption_metrics
from vlmcap.presets.synthetic import parse_attributes
from vlmcap.storage.files import write_jsonl
from vlmcap.training.data import decode_item
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.pool import DecodePool
from vlmcap.video.preprocess import normalize

log = logging.getLogger(__name__)


@torch.no_grad()
def caption_samples(
    model,
    samples: list[Sample],
    image_spec: ImageSpec,
    decode: DecodeOptions,
    batch_size: int = 16,
    max_new_tokens: int = 48,
    num_workers: int = 2,
    decode_timeout_s: float = 60.0,
) -> list[dict]:
    """One record per sample, in manifest order: the generated caption, or the decode error. A
    sample with a window (a labelled segment) is captioned from frames inside it."""
    was_training = model.training
    model.eval()
    device = next(model.projector.parameters()).device
    records: list[tuple[int, dict]] = []
    pending = []

    def record(index: int, **fields) -> None:
        sample = samples[index]
        window = {} if sample.window is None else {"start_s": sample.window.start_s, "end_s": sample.window.end_s}
        records.append((index, {"video": sample.video, **window, "reference": sample.caption, **fields}))

    def flush() -> None:
        pixels = normalize(np.stack([r.video.frames for r in pending]), image_spec).to(device)
        prompts = [samples[r.index].prompt for r in pending]
        for result, caption in zip(pending, model.generate(pixels, prompts, max_new_tokens), strict=True):
            record(result.index, caption=caption)
        pending.clear()

    try:
        with DecodePool(decode, image_spec, num_workers, decode_timeout_s) as pool:
            for result in pool.imap_unordered([decode_item(s) for s in samples]):
                if not result.ok:
                    record(result.index, error=result.error_message)
                    continue
                pending.append(result)
                if len(pending) == batch_size:
                    flush()
            if pending:
                flush()
    finally:
        model.train(was_training)
    return [r for _, r in sorted(records, key=lambda r: r[0])]


def evaluate(
    model, samples: list[Sample], image_spec: ImageSpec, decode: DecodeOptions, out: Path | None = None, **kwargs
) -> dict:
    records = caption_samples(model, samples, image_spec, decode, **kwargs)
    done = [r for r in records if "caption" in r]
    metrics = caption_metrics([r["caption"] for r in done], [r["reference"] for r in done], parse_attributes)
    metrics["decode_failures"] = len(records) - len(done)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(out, records)
    return metrics
