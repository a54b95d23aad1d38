"""Which discovered videos a run captions: what is already done (resume), the shard, the limit.

Both drivers (the local pipeline and Ray) and `--dry-run` select through `TaskFilter`, so they
agree on what a run does (docs/BATCH.md, "Resume, crash safety, retries").
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from vlmcap.config.schema import parse_shard
from vlmcap.engines.batch.ledger import ResumeState
from vlmcap.errors import ConfigError
from vlmcap.storage.files import FileIdentity
from vlmcap.video.discovery import InputProblem
from vlmcap.video.remote_urls import RemoteOptions
from vlmcap.video.sources import source_of


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`i/N` with 0 <= i < N."""
        try:
            return cls(*parse_shard(text))
        except ValueError as e:
            raise ConfigError(f"--shard {e}") from None

    def owns(self, video: str) -> bool:
        """Stable across runs and machines: a hash of the path as given, not of listing order."""
        digest = hashlib.blake2b(video.encode("utf-8", "surrogateescape"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index


@dataclass
class VideoTask:
    # the path (or URL) as given (discovered); the JSONL's "video". A URL is a RemoteVideo, which
    # carries what its metadata request said on to the decode worker (vlmcap/video/remote_listing.py)
    video: str
    identity: FileIdentity | None  # None: vanished before it could be read (or never a file)
    real_path: str = ""  # symlinks resolved (a URL: normalized): what resume and compaction know a video by
    problem: InputProblem | None = None  # set: not decodable at all, goes straight to an error line
    sha256: str | None = None  # --dedup sha256: the file's content hash (engines/batch/dedup.py)

    def __post_init__(self) -> None:
        if not self.real_path:
            self.real_path = source_of(self.video).key(self.video)


@dataclass
class Selection:
    """Counts of what the resume/shard/limit filter let through or held back."""

    new: int = 0  # no line for the file as it is now (never captioned, or changed since)
    stale: int = 0  # --recaption stale: an ok line from another bundle or prompt
    retried: int = 0  # --retry-errors: an error line
    superseding: int = 0  # selected videos that already have a line (retried, changed): compact at the end
    skipped_ok: int = 0  # done: an ok line (from this bundle and prompt, or any without --recaption stale)
    skipped_stale: int = 0  # of skipped_ok: from another bundle or prompt
    skipped_failed: int = 0
    other_shard: int = 0
    over_limit: bool = False
    duplicates: int = 0  # --dry-run with --dedup: selected videos whose content is captioned already

    @property
    def selected(self) -> int:
        """What the filter let through: new, stale (--recaption stale) and failed (--retry-errors) videos."""
        return self.new + self.stale + self.retried


@dataclass
class TaskFilter:
    state: ResumeState
    retry_errors: bool = False
    recaption_stale: bool = False
    shard: Shard | None = None
    limit: int | None = None
    counts: Selection = field(default_factory=Selection)
    remote: RemoteOptions = field(default_factory=RemoteOptions)  # how URLs' identities are fetched
    stop: threading.Event | None = None  # the run's first signal: a URL's metadata request is abandoned

    def __call__(self, paths: Iterable[str | InputProblem]) -> Iterator[VideoTask]:
        for item in paths:
            problem = item if isinstance(item, InputProblem) else None
            video = item.path if isinstance(item, InputProblem) else item
            if self.shard is not None and not self.shard.owns(video):
                self.counts.other_shard += 1
                continue
            source = source_of(video, self.remote, self.stop)  # chosen once: a local file or a URL's object
            video, identity = (video, None) if problem else source.look(video)
            task = VideoTask(video, identity, source.key(video), problem=problem)
            status = None
            if identity is not None:
                status = self.state.status((task.real_path, identity.size, identity.mtime_ns))
                if status == "ok" or (status == "stale" and not self.recaption_stale):
                    self.counts.skipped_ok += 1
                    self.counts.skipped_stale += status == "stale"
                    continue
                if status == "error" and not self.retry_errors:
                    self.counts.skipped_failed += 1
                    continue
            if self.limit is not None and self.counts.selected >= self.limit:
                self.counts.over_limit = True
                return
            if status == "stale":
                self.counts.stale += 1
            elif status == "error":
                self.counts.retried += 1
            else:
                self.counts.new += 1
            if task.real_path in self.state.videos:
                self.counts.superseding += 1
            yield task
