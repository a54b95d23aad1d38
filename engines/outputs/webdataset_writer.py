"""Caption records as WebDataset tars: per sample `KEY.json` (the ledger line), `KEY.txt` (the caption)
and, with `--with-videos`, the video itself; one tar, or a new shard every `shard_size` samples."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import tarfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from vlmcap.engines.outputs.schema import parse_timestamp
from vlmcap.storage.files import StagedFiles, name_bytes, open_regular

if TYPE_CHECKING:
    from vlmcap.engines.outputs.convert import ConvertStats

log = logging.getLogger(__name__)


def _captioned_path(record: dict[str, Any]) -> str:
    """The file the record was captioned from: `file.path` (the real path), else (older lines) `video`."""
    file = record.get("file")
    return file["path"] if isinstance(file, dict) and isinstance(file.get("path"), str) else record["video"]


def sample_key(record: dict[str, Any]) -> str:
    """The WebDataset key of a record's sample: stable (the same ledger gives the same keys), tar- and
    WebDataset-safe (ASCII letters, digits, `_` and `-`; no dot, which would end the key), readable
    (the file name's stem) and unique (a hash of the path it was captioned from)."""
    path = _captioned_path(record)
    digest = hashlib.sha256(name_bytes(path)).hexdigest()[:16]
    stem = re.sub(r"[^A-Za-z0-9]+", "_", os.path.splitext(os.path.basename(path))[0]).strip("_")[:48]
    return f"{stem}-{digest}" if stem else digest


def _tar_member(tar: tarfile.TarFile, name: str, f: IO[bytes], size: int, mtime: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, mtime, 0o644
    tar.addfile(info, f)


def _tar_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: int) -> None:
    _tar_member(tar, name, io.BytesIO(data), len(data), mtime)


def _open_video(record: dict[str, Any]) -> tuple[IO[bytes], int, str] | None:
    """(the open video, its size, its extension) when it is still the file that was captioned."""
    file, path = record.get("file"), _captioned_path(record)
    try:
        f = open_regular(path)  # closed by the caller; a path that is a FIFO now must not block
    except (OSError, ValueError) as e:  # ValueError: a NUL in a hand-edited line's path names no file
        cause = e.strerror if isinstance(e, OSError) else e
        log.warning("%s: not in the WebDataset: the video cannot be read (%s)", record["video"], cause)
        return None
    st = os.fstat(f.fileno())
    if isinstance(file, dict) and (file.get("size"), file.get("mtime_ns")) != (st.st_size, st.st_mtime_ns):
        f.close()
        log.warning("%s: not in the WebDataset: the video changed since it was captioned", record["video"])
        return None
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    return f, st.st_size, extension if re.fullmatch(r"[a-z0-9]{1,8}", extension) else "video"


class _Shards:
    """The tar being written: one, or a new one every `shard_size` samples named by `target`'s %d field."""

    def __init__(self, staged: StagedFiles, target: Path, shard_size: int | None) -> None:
        self.staged, self.target, self.shard_size = staged, target, shard_size
        self.written: list[Path] = []
        self._tar: tarfile.TarFile | None = None
        self._file: IO[bytes] | None = None
        self._samples = 0

    def tar(self) -> tarfile.TarFile:
        """The tar the next sample goes to."""
        if self._tar is None or (self.shard_size is not None and self._samples == self.shard_size):
            self.close()
            path = Path(str(self.target) % len(self.written)) if self.shard_size is not None else self.target
            self._file = self.staged.open(path)
            self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
            self.written.append(path)
            self._samples = 0
        self._samples += 1
        return self._tar

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()  # a tar opened on a file object leaves the file open
            self._tar = None
        if self._file is not None:
            self._file.close()
            self._file = None


def write_webdataset(
    records: Iterable[tuple[dict[str, Any], bytes]],
    staged: StagedFiles,
    target: Path,
    shard_size: int | None,
    with_videos: bool,
    stats: ConvertStats,
) -> list[Path]:
    shards = _Shards(staged, target, shard_size)
    used: set[str] = set()
    try:
        for record, line in records:
            video = _open_video(record) if with_videos else None
            if with_videos and video is None:
                stats.videos_unavailable += 1
                continue
            tar = shards.tar()
            key = sample_key(record)
            while key in used:  # two spellings of one path that resolved apart: keep both samples
                key = hashlib.sha256(key.encode()).hexdigest()[:16]
            used.add(key)
            finished_at = record.get("finished_at")
            finished = parse_timestamp(finished_at) if isinstance(finished_at, str) else None
            mtime = int(finished.timestamp()) if finished is not None else 0  # the same ledger, the same bytes
            _tar_bytes(tar, f"{key}.json", line + b"\n", mtime)
            if isinstance(record.get("caption"), str):
                _tar_bytes(tar, f"{key}.txt", record["caption"].encode("utf-8", "backslashreplace"), mtime)
            if video is not None:
                f, size, extension = video
                with f:
                    _tar_member(tar, f"{key}.{extension}", f, size, mtime)
            stats.records += 1
        if not shards.written:  # no samples: still one (empty) tar, so the output exists
            shards.tar()
    finally:
        shards.close()
    return shards.written
