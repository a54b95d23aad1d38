"""Turn what the user typed into a stream of video paths.

Inputs may be files, directories (walked recursively, video extensions only, case-insensitive),
glob patterns, text files listing one path per line, or `-` for such a list on stdin. The order
is deterministic (inputs in order, directory entries sorted), duplicates are dropped (the same
file reached twice, through symlinks or spelled differently), a directory reached twice through
symlinks is walked once, and paths are yielded one at a time so a list of millions is never held
in memory (only a compact set of seen ids). Glob matches are the exception: each pattern's
matches are sorted, so collected in full first.

Nothing is dropped silently: a directory that cannot be listed and a symlink that loops onto
itself come out as an `InputProblem` in the stream, which the batch run writes as an error line.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".wmv", ".flv"}
    | {".3gp", ".3g2", ".ogv", ".mxf", ".vob", ".f4v", ".asf"}
)
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = set("*?[")


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class InputProblem:
    """An input entry that cannot be looked into; it gets an error line instead of a caption."""

    path: str
    error_type: str  # "UnreadableDirectory" or "SymlinkLoop" (docs/VIDEO.md)
    message: str


def _problem(path: str, error: OSError) -> InputProblem:
    if error.errno == errno.ELOOP:
        return InputProblem(path, "SymlinkLoop", f"{path}: a symlink that loops (too many levels of symbolic links)")
    return InputProblem(path, "UnreadableDirectory", f"{path}: cannot list the directory ({error.strerror})")


def _walk(directory: str) -> Iterator[str | InputProblem]:
    """Recursive, in sorted path order, following symlinks but entering each real directory once."""
    seen_dirs: set[tuple[int, int]] = set()

    def entries(path: str) -> Iterator[os.DirEntry | InputProblem]:
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen_dirs:
                return  # a second way into a directory already walked (a cycle of directory links)
            seen_dirs.add((st.st_dev, st.st_ino))
            with os.scandir(path) as it:
                listed = sorted(it, key=lambda e: e.name)
        except OSError as e:
            yield _problem(path, e)
            return
        yield from listed

    stack = [entries(directory)]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        if isinstance(entry, InputProblem):
            yield entry
            continue
        try:
            is_dir = entry.is_dir()  # follows symlinks
        except OSError as e:
            yield _problem(entry.path, e)
            continue
        if is_dir:
            stack.append(entries(entry.path))  # depth-first: a/deep/... comes before a/x
        elif is_video_name(entry.name):
            yield entry.path


def _read_list(stream: TextIO, base_dir: str) -> Iterator[str]:
    for line in stream:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        yield line if os.path.isabs(line) or base_dir == "" else os.path.join(base_dir, line)


def _expand(item: str, stdin: TextIO) -> Iterator[str | InputProblem]:
    if item == "-":
        yield from _read_list(stdin, "")
    elif os.path.isdir(item):
        yield from _walk(item)
    elif os.path.isfile(item) and os.path.splitext(item)[1].lower() in LIST_EXTENSIONS:
        with open(item, encoding="utf-8") as f:
            yield from _read_list(f, os.path.dirname(item))
    elif _GLOB_CHARS & set(item) and not os.path.exists(item):
        for match in sorted(glob.iglob(item, recursive=True)):
            if os.path.isdir(match):
                continue
            if is_video_name(match):
                yield match
    else:
        yield item  # a file named explicitly, or a missing path: decoding reports what is wrong with it


def _identity(path: str) -> bytes:
    """16 bytes per path instead of the path itself, so dedup of millions of inputs stays small."""
    return hashlib.blake2b(os.path.realpath(path).encode("utf-8", "surrogateescape"), digest_size=16).digest()


def iter_video_paths(inputs: Iterable[str], stdin: TextIO | None = None) -> Iterator[str | InputProblem]:
    """Yield each video path once, in a deterministic order, as the user gave it (not resolved),
    and each entry that could not be looked into as an `InputProblem`."""
    stdin = stdin if stdin is not None else sys.stdin
    seen: set[bytes] = set()
    for item in inputs:
        for path in _expand(item, stdin):
            key = _identity(path.path if isinstance(path, InputProblem) else path)
            if key in seen:
                continue
            seen.add(key)
            yield path


def iter_videos_only(inputs: Iterable[str], stdin: TextIO | None = None) -> Iterator[str]:
    """`iter_video_paths` without the problems (for benchmarks, which only time what decodes)."""
    return (p for p in iter_video_paths(inputs, stdin) if isinstance(p, str))
