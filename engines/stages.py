"""The batch-captioning stages as plain functions over videos and batches.

Two drivers run them: the local threaded pipeline (`engines.pipeline`) and the Ray Data operators
(`engines.ray_pipeline`). Keeping the stage logic here means one implementation of what is
captioned, how a batch becomes embeddings, and what a record says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from vlmcap.engines.output import FileIdentity, ResumeState, file_identity, utc_now

from vlmcap.errors import ConfigError
from vlmcap.video.preprocess import ImageSpec, normalize
from vlmcap.video.worker import DecodeResult


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`i/N` with 0 <= i < N."""
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ConfigError(f"--shard {text!r}: expected I/N, e.g. 0/4") from None
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"--shard {text!r}: need 0 <= I < N")
        return cls(index, count)

    def owns(self, video: str) -> bool:
        """Stable across runs and machines: a hash of the path as given, not of listing order."""
        digest = hashlib.blake2b(video.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index


@dataclass
class VideoTask:
    video: str  # the path as given (discovered); the JSONL's "video"
    identity: FileIdentity | None  # None: vanished before it could be read


@dataclass
class Selection:
    """Counts of what the resume/shard/limit filter let through or held back."""

    selected: int = 0
    superseding: int = 0  # selected videos that already have a line (retried, changed): compact at the end
    skipped_ok: int = 0
    skipped_failed: int = 0
    other_shard: int = 0
    over_limit: bool = False


@dataclass
class TaskFilter:
    state: ResumeState
    retry_errors: bool = False
    shard: Shard | None = None
    limit: int | None = None
    counts: Selection = field(default_factory=Selection)

    def __call__(self, paths: Iterable[str]) -> Iterator[VideoTask]:
        for video in paths:
            if self.shard is not None and not self.shard.owns(video):
                self.counts.other_shard += 1
                continue
            identity = file_identity(video)
            if identity is not None:
                status = self.state.status((video, identity.size, identity.mtime_ns))
                if status == "ok":
                    self.counts.skipped_ok += 1
                    continue
                if status == "error" and not self.retry_errors:
                    self.counts.skipped_failed += 1
                    continue
            if self.limit is not None and self.counts.selected >= self.limit:
                self.counts.over_limit = True
                return
            self.counts.selected += 1
            if video in self.state.videos:
                self.counts.superseding += 1
            yield VideoTask(video, identity)


def pixel_batch(frames: Sequence[np.ndarray] | np.ndarray, spec: ImageSpec) -> np.ndarray:
    """Decoded, already resized+cropped uint8 (T, H, W, 3) per video -> (B, T, 3, H, W) float32."""
    return normalize(np.stack(list(frames)), spec).numpy()


@dataclass
class BatchTimings:
    vision_ms: float
    llm_ms: float


def decoded_fields(result: DecodeResult) -> dict[str, Any]:
    """What an ok record keeps of a decoded video (plain values: they also travel as Ray columns)."""
    video = result.video
    return {
        "frames_s": [round(t, 3) for t in video.timestamps_s],
        "duration_s": round(video.meta.duration_s, 3),
        "decoder": video.meta.decoder,
        "decode_ms": result.decode_ms,
    }


def ok_record(
    task: VideoTask,
    decoded: dict[str, Any],
    caption: str,
    num_tokens: int,
    bundle_id: str,
    prompt: str,
    timings: BatchTimings,
    batch_size: int,
) -> dict[str, Any]:
    return {
        "video": task.video,
        "status": "ok",
        "caption": caption,
        "frames_s": [float(t) for t in decoded["frames_s"]],
        "duration_s": float(decoded["duration_s"]),
        "decoder": str(decoded["decoder"]),
        "bundle": bundle_id,
        "prompt": prompt,
        "num_tokens": int(num_tokens),
        # vision and LLM run per batch: each video is charged its share of the batch's time.
        "timings_ms": {
            "decode": round(float(decoded["decode_ms"]), 1),
            "vision": round(timings.vision_ms / batch_size, 1),
            "llm": round(timings.llm_ms / batch_size, 1),
        },
        "file": task.identity.as_dict() if task.identity else None,
        "finished_at": utc_now(),
    }


def error_record(
    task: VideoTask, error_type: str, message: str, bundle_id: str, prompt: str, decode_ms: float = 0.0
) -> dict[str, Any]:
    return {
        "video": task.video,
        "status": "error",
        "error": {"type": error_type, "message": message},
        "bundle": bundle_id,
        "prompt": prompt,
        "timings_ms": {"decode": round(decode_ms, 1)},
        "file": task.identity.as_dict() if task.identity else None,
        "finished_at": utc_now(),
    }
