"""The names of per-video output files (subtitle sidecars), one per video and always legal.

A video's outputs mirror its key (its real path, or its normalized URL) under the output folder,
and keep its whole file name, extension included: `/data/a/clip.mp4` -> `DIR/data/a/clip.mp4.srt`,
`s3://bucket/a/clip.mp4` -> `DIR/s3:/bucket/a/clip.mp4.srt`. So `a.mp4` and `a.mkv` in one folder,
or the same name in two folders, never share a file, and the `scheme:` folder (no local path's
first folder ends with a colon but by design) keeps URLs apart from local paths.

What the mirror cannot keep as it is gets a tag: 16 hex digits of the BLAKE2b of the whole key
(`clip.mp4~3f2a9c1d0e4b5a67.srt`): a URL's query, and its empty, `.` and `..` segments (dropped, so
they cannot climb out of DIR). A name or folder longer than the file system allows (255 bytes,
less room for the temporary name an atomic write uses beside it) is cut on a character boundary
and tagged with the hash of the whole name (`vlmcap.storage.files.short_name`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from vlmcap.storage.files import NAME_MAX_BYTES, TEMP_NAME_BYTES, digest16, short_name


def per_video_path(directory: Path, key: str, suffix: str) -> Path:
    """Where the `suffix` file (".srt") of the video known by `key` goes under `directory`."""
    url = urlsplit(key)
    if url.scheme and url.netloc:
        segments = url.path.split("/")[1:]
        parts = [f"{url.scheme}:", url.netloc, *segments]
        lossy = bool(url.query) or not segments or any(s in ("", ".", "..") for s in segments)
    else:  # a real path: no empty, `.` or `..` part
        parts = key.split("/")
        lossy = False
    kept = [short_name(part, NAME_MAX_BYTES) for part in parts if part not in ("", ".", "..")]
    stem = kept.pop()
    if lossy:
        stem = f"{stem}~{digest16(key)}"
    name = short_name(stem, TEMP_NAME_BYTES - len(suffix.encode())) + suffix
    return directory.joinpath(*kept, name)
