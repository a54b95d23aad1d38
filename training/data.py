"""Deterministic, resumable batches of videos for training.

Each epoch visits the samples in a permutation fixed by (seed, epoch); a data position
(epoch, cursor) says exactly where the next batch starts, so a resumed run sees the same batches.
Videos are decoded in the crash-proof worker pool (vlmcap.video.pool), prefetched and put back in
order. A sample with a window (a labelled time segment) gets frames sampled inside it only. A video
(segment) that fails to decode is skipped, counted and logged; too many failures stop the run.
With a feature cache, the frozen encoder's output is read instead of decoding at all.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch

from vlmcap.errors import VlmcapError
from vlmcap.labelled_manifest import Sample
from vlmcap.training.features import FeatureCache
from vlmcap.video.decoders import DecodeOptions
from vlmcap.video.image_spec import ImageSpec
from vlmcap.video.pool import DecodePool
from vlmcap.video.preprocess import normalize
from vlmcap.video.segments import Segment
from vlmcap.video.worker import DecodeResult

log = logging.getLogger(__name__)


class TooManyDecodeFailures(VlmcapError):
    """More training videos failed to decode than train.max_decode_failures allows."""


@dataclass
class DataPosition:
    epoch: int = 0
    cursor: int = 0  # index into this epoch's permutation of the next sample to read
    failed: list[str] = field(default_factory=list)  # `sample_key`s skipped so far (each counted once)


@dataclass
class Batch:
    samples: list[Sample]
    pixel_values: torch.Tensor | None = None  # (B, T, 3, H, W), when decoding
    features: torch.Tensor | None = None  # (B, T, N, Dv), from the feature cache


def epoch_order(num_samples: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_samples, generator=generator).tolist()[rank::world]


def sample_key(sample: Sample) -> str:
    """What a failure is recorded under: the video, or the video and its window (the path alone for
    whole-file samples, as checkpoints written before segments hold)."""
    if sample.window is None:
        return sample.video
    return f"{sample.video}@{sample.window.start_s:g}-{sample.window.end_s:g}s"


def decode_item(sample: Sample) -> str | tuple[str, Segment]:
    """What the decode pool is given for a sample: its path, with its window when it has one."""
    return sample.video if sample.window is None else (sample.video, sample.window)


def _in_order(results: Iterator[DecodeResult]) -> Iterator[DecodeResult]:
    """Put the pool's completion-ordered results back in submission order."""
    waiting: dict[int, DecodeResult] = {}
    expected = 0
    for result in results:
        waiting[result.index] = result
        while expected in waiting:
            yield waiting.pop(expected)
            expected += 1


class VideoBatches:
    def __init__(
        self,
        samples: list[Sample],
        batch_size: int,
        seed: int,
        image_spec: ImageSpec,
        decode: DecodeOptions,
        num_workers: int = 2,
        decode_timeout_s: float = 60.0,
        max_failures: int = 100,
        cache: FeatureCache | None = None,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.samples = samples
        self.batch_size = batch_size
        self.seed = seed
        self.image_spec = image_spec
        self.decode = decode
        self.num_workers = num_workers
        self.decode_timeout_s = decode_timeout_s
        self.max_failures = max_failures
        self.cache = cache
        self.rank, self.world = rank, world

    def _pool(self) -> DecodePool:
        return DecodePool(self.decode, self.image_spec, self.num_workers, self.decode_timeout_s)

    def _record_failure(self, position: DataPosition, sample: Sample, result: DecodeResult) -> None:
        key = sample_key(sample)
        if key not in position.failed:
            position.failed.append(key)
            log.warning("skipping training video: %s", result.error_message)
        if len(position.failed) > self.max_failures:
            raise TooManyDecodeFailures(
                f"{len(position.failed)} training videos failed to decode (train.max_decode_failures="
                f"{self.max_failures}); last: {result.error_message}"
            )

    def fill_cache(self, encode: Callable[[torch.Tensor], torch.Tensor], position: DataPosition) -> None:
        """Decode and encode every sample of this rank's shard that is not cached yet."""
        assert self.cache is not None
        mine = [s for i, s in enumerate(self.samples) if i % self.world == self.rank]
        todo = [s for s in mine if not self.cache.contains(s.video, s.window)]
        if not todo:
            return
        log.info("feature cache: encoding %d of %d videos", len(todo), len(mine))
        with self._pool() as pool:
            pending: list[tuple[Sample, DecodeResult]] = []
            for result in pool.imap_unordered([decode_item(s) for s in todo]):
                if not result.ok:
                    self._record_failure(position, todo[result.index], result)
                    continue
                pending.append((todo[result.index], result))
                if len(pending) == self.batch_size:
                    self._encode_into_cache(pending, encode)
                    pending = []
            if pending:
                self._encode_into_cache(pending, encode)

    def _encode_into_cache(self, results: list[tuple[Sample, DecodeResult]], encode) -> None:
        pixels = normalize(np.stack([r.video.frames for _, r in results]), self.image_spec)
        with torch.no_grad():
            features = encode(pixels)
        for (sample, _), row in zip(results, features, strict=True):
            self.cache.put(sample.video, row, sample.window)

    def batches(self, position: DataPosition) -> Iterator[tuple[Batch, DataPosition]]:
        """Endless stream of (batch, position after it) from `position`, epoch after epoch."""
        position = DataPosition(position.epoch, position.cursor, list(position.failed))
        failed = set(position.failed)
        pool = None if self.cache is not None else self._pool()
        try:
            while True:
                order = epoch_order(len(self.samples), self.seed, position.epoch, self.rank, self.world)
                todo = [i for i in order[position.cursor :] if sample_key(self.samples[i]) not in failed]
                slot = {i: n for n, i in enumerate(order)}
                stream = self._read(pool, todo)
                batch: list[tuple[Sample, torch.Tensor]] = []
                produced = False
                for index, item in stream:
                    if isinstance(item, DecodeResult):
                        self._record_failure(position, self.samples[index], item)
                        failed.add(sample_key(self.samples[index]))
                        continue
                    batch.append((self.samples[index], item))
                    if len(batch) == self.batch_size:
                        after = DataPosition(position.epoch, slot[index] + 1, list(position.failed))
                        yield self._collate(batch), after
                        position = after
                        batch = []
                        produced = True
                # An incomplete last batch is dropped: every optimizer step sees the same batch size.
                if not produced and position.cursor == 0:
                    raise VlmcapError(
                        f"no full batch of {self.batch_size} videos in an epoch: this process reads {len(order)} "
                        f"samples ({len(failed)} failed to decode); lower train.batch_size or add data"
                    )
                position = DataPosition(position.epoch + 1, 0, list(position.failed))
        finally:
            if pool is not None:
                pool.close()

    def _read(self, pool: DecodePool | None, todo: list[int]) -> Iterator[tuple[int, object]]:
        if pool is None:
            for i in todo:
                sample = self.samples[i]
                features = self.cache.get(sample.video, sample.window)
                if features is None:
                    reason = (
                        f"{sample_key(sample)}: no cached features (it failed to decode while the cache was "
                        "filled, or VLMCAP_HOME is not shared storage across nodes)"
                    )
                    yield i, DecodeResult(i, self.samples[i].video, None, "VideoError", reason)
                else:
                    yield i, features.float()
            return
        # Chunks of a few videos per worker keep the reorder buffer small even when the video at
        # the head of the order hangs until its timeout while the others finish.
        chunk = 4 * self.num_workers
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            for result in _in_order(pool.imap_unordered(decode_item(self.samples[i]) for i in part)):
                yield part[result.index], (result.video.frames if result.ok else result)

    def _collate(self, batch: list[tuple[Sample, object]]) -> Batch:
        samples = [s for s, _ in batch]
        if self.cache is not None:
            return Batch(samples, features=torch.stack([t for _, t in batch]))
        return Batch(samples, pixel_values=normalize(np.stack([f for _, f in batch]), self.image_spec))
