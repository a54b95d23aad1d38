"""Turn what the user typed into a stream of video paths.

Inputs may be files, directories (walked recursively, video extensions only, case-insensitive),
glob patterns, text files listing one path per line, or `-` for such a list on stdin. The order
is deterministic (inputs in order, directory entries sorted), duplicates are dropped (the same
file reached twice, through symlinks or spelled differently), a directory reached twice through
symlinks is walked once, and paths are yielded one at a time so a list of millions is never held
in memory (only a compact set of seen ids). Glob matches are the exception: each pattern's
matches are sorted, so collected in full first.

Inputs may also be URLs (vlmcap/video/remote_urls.py): `s3://`, `gs://`, `http(s)://`. A URL that ends
in a video extension (any http(s) URL) is one video; an s3/gs URL that does not is a prefix, listed
recursively (video extensions only, sorted by key). List files may hold URLs too.

Nothing is dropped silently: a directory that cannot be listed, a symlink that loops onto itself,
a prefix that cannot be listed and a list line that is neither a path nor a URL vlmcap reads (a
`ftp://` URL, binary junk) come out as an `InputProblem` in the stream, which the batch run writes
as an error line.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TextIO

from vlmcap.errors import RemoteError
from vlmcap.video.remote_listing import is_prefix, list_videos
from vlmcap.video.remote_urls import BACKENDS, RemoteOptions, backend_missing, url_scheme
from vlmcap.video.sources import source_of

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".m2ts", ".mts", ".wmv", ".flv"}
    | {".3gp", ".3g2", ".ogv", ".mxf", ".vob", ".f4v", ".asf"}
)
LIST_EXTENSIONS = frozenset({".txt", ".lst", ".list"})
_GLOB_CHARS = set("*?[")
# In a list line: bytes no file name or URL holds (a list file that is really a video, a tar, ...).
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def is_video_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


@dataclass(frozen=True)
class InputProblem:
    """An input entry that cannot be looked into; it gets an error line instead of a caption."""

    path: str
    error_type: str  # "UnreadableDirectory", "SymlinkLoop", "BadInputLine", a Remote* type (docs/VIDEO.md)
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


def _shown(line: str) -> str:
    """A list line as a message can hold it: escaped, and short."""
    text = ascii(line)
    return text if len(text) <= 80 else text[:77] + "..."


def _bad_line(where: str, line: str, why: str) -> InputProblem:
    return InputProblem(where, "BadInputLine", f"{where}: {_shown(line)} {why}")


def _remote(url: str, options: RemoteOptions, stop: threading.Event | None) -> Iterator[str | InputProblem]:
    """One URL: the video it names, or the videos under its prefix."""
    missing = backend_missing(url_scheme(url))
    if missing:
        yield InputProblem(url, "RemoteBackendMissing", f"{url}: {missing}")
    elif is_prefix(url, is_video_name):
        try:
            yield from list_videos(url, options, is_video_name, stop)
        except RemoteError as e:  # listing fails before it yields: nothing half-listed
            yield InputProblem(url, type(e).__name__, f"cannot list the prefix: {e}")
    else:
        yield url


def _read_list(
    stream: TextIO, base_dir: str, name: str, options: RemoteOptions, stop: threading.Event | None
) -> Iterator[str | InputProblem]:
    """The entries of a list file: paths (relative to the list's folder) and URLs; a line that is
    neither becomes a `BadInputLine` problem named `LIST:LINE`, never silence."""
    for number, raw in enumerate(stream, 1):
        line = raw.strip()
        if number == 1:
            line = line.removeprefix("\ufeff").strip()  # a byte-order mark (Windows editors) is not part of the path
        if not line or line.startswith("#"):
            continue
        where = f"{name}:{number}"
        scheme = url_scheme(line)
        if _CONTROL.search(line):
            yield _bad_line(where, line, "holds control characters: not a path or a URL (is this a list file?)")
        elif scheme is not None and scheme not in BACKENDS:
            yield _bad_line(where, line, f"is a {scheme}:// URL; vlmcap reads s3://, gs://, http(s):// and local paths")
        elif scheme is not None:
            yield from _remote(line, options, stop)
        else:
            path = line if os.path.isabs(line) or base_dir == "" else os.path.join(base_dir, line)
            if not is_video_name(path) and not os.path.lexists(path):
                yield _bad_line(where, line, "is no existing file, no name with a video extension and no URL")
            else:
                yield path  # a missing video is reported by decoding, as VideoNotFound


def _expand(
    item: str, stdin: TextIO, options: RemoteOptions, stop: threading.Event | None
) -> Iterator[str | InputProblem]:
    scheme = url_scheme(item)
    if scheme is not None and scheme in BACKENDS:
        yield from _remote(item, options, stop)
    elif scheme is not None and not os.path.exists(item):
        yield InputProblem(item, "BadInputLine", f"{item}: vlmcap cannot read {scheme}:// URLs")
    elif item == "-":
        yield from _read_list(stdin, "", "<stdin>", options, stop)
    elif os.path.isdir(item):
        yield from _walk(item)
    elif os.path.isfile(item) and os.path.splitext(item)[1].lower() in LIST_EXTENSIONS:
        # surrogateescape: a line in another encoding (or binary junk) is a problem of that line,
        # not a UnicodeDecodeError that ends the run.
        with open(item, encoding="utf-8", errors="surrogateescape") as f:
            yield from _read_list(f, os.path.dirname(item), item, options, stop)
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
    real = source_of(path).key(path)
    return hashlib.blake2b(real.encode("utf-8", "surrogateescape"), digest_size=16).digest()


def iter_video_paths(
    inputs: Iterable[str],
    stdin: TextIO | None = None,
    remote: RemoteOptions | None = None,
    stop: threading.Event | None = None,
) -> Iterator[str | InputProblem]:
    """Yield each video path (or URL) once, in a deterministic order, as the user gave it (not
    resolved), and each entry that could not be looked into as an `InputProblem`. `remote`: the
    timeouts and retries of prefix listings; `stop`: set when the run stops (a listing in progress
    is abandoned)."""
    stdin = stdin if stdin is not None else sys.stdin
    options = remote or RemoteOptions()
    seen: set[bytes] = set()
    for item in inputs:
        for path in _expand(item, stdin, options, stop):
            key = _identity(path.path if isinstance(path, InputProblem) else path)
            if key in seen:
                continue
            seen.add(key)
            yield path


def iter_videos_only(inputs: Iterable[str], stdin: TextIO | None = None) -> Iterator[str]:
    """`iter_video_paths` without the problems (for benchmarks, which only time what decodes)."""
    return (p for p in iter_video_paths(inputs, stdin) if isinstance(p, str))
