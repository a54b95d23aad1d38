"""File helpers every stage uses: durable atomic replacement, fsync, JSONL lines, file identity.

"Durable" means what a crash or power loss cannot undo: the data is fsynced before the rename
that makes it visible, and the directory is fsynced after it, so the new name survives too.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path (a directory's fsync makes renames inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then every directory, deepest first."""
    directories = [root]
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        directories += [Path(dirpath) / d for d in dirnames]
    for directory in reversed(directories):
        fsync_path(directory)


NAME_MAX_BYTES = 255  # one path component, on ext4, XFS, btrfs, ZFS and APFS alike
# A temporary sibling is `.NAME.vlmcap-TAG-PID`: the `vlmcap-` part is what lets the clean-up after a
# killed process tell its own leftovers from a user's file that merely looks alike (`.c.jsonl.cam-1`).
TEMP_MARK = ".vlmcap-"
# The longest name whose temporary sibling (tag up to 4 letters, PID up to 7 digits) still fits:
# names vlmcap makes up itself stay within this.
TEMP_NAME_BYTES = NAME_MAX_BYTES - len(".") - len(TEMP_MARK) - len("tag-") - 7 - 4


def name_bytes(name: str) -> bytes:
    """A name's bytes: its undecodable bytes (surrogate escapes) as the file system gave them; any other
    lone surrogate, which no file name holds but a hand-edited ledger line may, as UTF-8 spells it."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def digest16(text: str) -> str:
    """16 hex digits of the BLAKE2b of `text` (undecodable bytes of a path included)."""
    return hashlib.blake2b(name_bytes(text), digest_size=8).hexdigest()


def short_name(name: str, max_bytes: int) -> str:
    """`name` when its UTF-8 fits `max_bytes`; else its start, cut on a character boundary, then `~`
    and `digest16(name)`: the same name always shortens the same way, and names that differ anywhere
    (past the cut included) shorten apart."""
    encoded = name_bytes(name)
    if len(encoded) <= max_bytes:
        return name
    tag = f"~{digest16(name)}"
    room, kept = max_bytes - len(tag), 0
    for kept, char in enumerate(name):  # noqa: B007 (the index is the result)
        room -= len(name_bytes(char))
        if room < 0:
            break
    return name[:kept] + tag


def temp_sibling(path: Path, tag: str = "tmp") -> Path:
    """A hidden name beside `path` (same file system, so a rename is atomic), unique to this process;
    shortened (`short_name`) where `path`'s own name leaves no room for the hidden one."""
    return path.with_name(f".{short_name(path.name, TEMP_NAME_BYTES)}{TEMP_MARK}{tag}-{os.getpid()}")


def open_regular(path: str | Path) -> BinaryIO:
    """`path` open for reading, without ever blocking: a FIFO (or a socket, a device) named like a
    video or a ledger is an OSError saying what it is, where a plain open would wait for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file (a directory, a pipe, a socket or a device)", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporary siblings of `path` (`temp_sibling`) that a killed process left behind."""
    prefix = f".{short_name(path.name, TEMP_NAME_BYTES)}{TEMP_MARK}"
    for stale in path.parent.glob(f"{glob.escape(prefix)}*-*"):
        tag, _, pid = stale.name.removeprefix(prefix).rpartition("-")
        if tag.isalpha() and pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(
    path: Path,
    mode: str = "wb",
    encoding: str | None = None,
    before_replace: Callable[[IO[Any]], None] | None = None,
) -> Iterator[IO[Any]]:
    """Write a file that appears whole or not at all: a temporary sibling, fsynced, renamed over `path`.

    On an exception the temporary file is removed and `path` is untouched. Renaming over a symlink
    would replace the link, so a symlinked `path` is written where it points. `before_replace(f)`
    runs on the finished file just before the rename (e.g. to lock it).
    """
    target = Path(os.path.realpath(path))
    tmp = temp_sibling(target)
    try:
        with open(tmp, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
            if before_replace is not None:
                before_replace(f)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(target.parent)


class StagedFiles:
    """Several files written under temporary names beside their targets and renamed into place together
    (`staged_files`): the outputs of one job appear all at once or not at all."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, Path]] = []  # (temporary, target)

    def open(self, path: Path, mode: str = "wb", **kwargs: Any) -> IO[Any]:
        target = Path(os.path.realpath(path))  # renaming over a symlink would replace the link
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(target)  # of jobs that were killed
        tmp = temp_sibling(target)
        self.files.append((tmp, target))
        return open(tmp, mode, **kwargs)

    def commit(self) -> None:
        for tmp, _ in self.files:
            fsync_path(tmp)
        for tmp, target in self.files:
            os.replace(tmp, target)
        for directory in {target.parent for _, target in self.files}:
            fsync_path(directory)

    def discard(self) -> None:
        for tmp, _ in self.files:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_files() -> Iterator[StagedFiles]:
    """Files opened through the yielded `StagedFiles` replace their targets when the block ends
    normally; on any exception none does and the temporaries are removed."""
    staged = StagedFiles()
    try:
        yield staged
        staged.commit()
    except BaseException:
        staged.discard()
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_file(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path, "w", encoding="utf-8") as f:
        f.write(text)


def replace_dir(tmp: Path, final: Path) -> None:
    """Durably put the finished directory `tmp` at `final`, replacing what was there.

    The old directory is removed before the rename, so a crash in between leaves no `final`
    (callers treat a missing one as not written yet), never a mix of old and new files.
    """
    fsync_tree(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(final.parent)


def json_line(record: dict[str, Any]) -> str:
    """One JSONL line of strict JSON, UTF-8 where it can be: every line vlmcap writes goes through here.

    Paths from the file system can hold undecodable bytes (surrogate escapes, e.g. a Latin-1 name
    on a UTF-8 system); such records are written with ASCII escapes, which read back to the same
    string. NaN and infinities have no JSON spelling (Python would write `NaN`, which other readers
    refuse): ValueError instead, for the writer to turn into that record's error.
    """
    text = json.dumps(record, ensure_ascii=False, allow_nan=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return text + "\n"


def append_durably(f: IO[str], text: str) -> None:
    """Append `text` with one write, then flush and fsync: on disk when this returns."""
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records to a JSONL file durably (one write per call)."""
    with open(path, "a", encoding="utf-8") as f:
        append_durably(f, "".join(json_line(r) for r in records))


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """A whole JSONL file, atomically."""
    atomic_write_text(path, "".join(json_line(r) for r in records))


@dataclass(frozen=True)
class FileIdentity:
    """Size and modification time: what changes when a file is rewritten or replaced."""

    size: int
    mtime_ns: int

    def as_dict(self) -> dict[str, int]:
        return {"size": self.size, "mtime_ns": self.mtime_ns}


def file_identity(path: str | Path) -> FileIdentity | None:
    """The identity of a regular file (symlinks followed); None when it is missing or not a regular file."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileIdentity(st.st_size, st.st_mtime_ns) if os.path.isfile(path) else None
