"""Subtitle sidecars of a run's captions: one SRT and/or WebVTT file per video (docs/BATCH.md).

A cue per segment (one cue for the whole file without --segments). Each file is written
atomically before the video's JSONL line, so a run killed in between writes it again on resume
and a reader never sees half a file. The formats are small enough to write here; the tests read
them back with the `srt` and `webvtt-py` parsers.

A sidecar mirrors the video's real path (or URL) under its directory and keeps its whole name
(`/data/a/clip.mp4` -> `DIR/data/a/clip.mp4.srt`): one file per video, never shared
(vlmcap/storage/output_names.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vlmcap.engines.batch.ledger import as_error
from vlmcap.storage.files import atomic_write_text
from vlmcap.storage.output_names import per_video_path


def _timestamp(seconds: float, decimal: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cue_text(caption: str) -> str:
    """A caption as cue text: no blank line (it would end the cue) and no `-->` (WebVTT reserves it)."""
    lines = [line.strip() for line in caption.replace("-->", "->").splitlines() if line.strip()]
    return "\n".join(lines) or "…"


def cues(record: dict[str, Any]) -> list[tuple[float, float, str]]:
    """(start_s, end_s, text) of an ok record: its segments, or the whole file as one cue."""
    segments = record.get("segments")
    if segments:
        return [(s["start_s"], s["end_s"], _cue_text(s["caption"])) for s in segments]
    return [(0.0, float(record.get("duration_s") or 0.0), _cue_text(record["caption"]))]


def srt_text(record: dict[str, Any]) -> str:
    blocks = [
        f"{i}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n"
        for i, (start, end, text) in enumerate(cues(record), start=1)
    ]
    return "\n".join(blocks)


def vtt_text(record: dict[str, Any]) -> str:
    blocks = [f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{text}\n" for start, end, text in cues(record)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def write_sidecars(records: list[dict[str, Any]], srt_dir: Path | None, vtt_dir: Path | None) -> list[int]:
    """The sidecars of the ok records among `records`. A video whose sidecar cannot be written (a
    full disk, a folder the run may not write) gets an error line instead, `SidecarWriteError`,
    so `--retry-errors` writes both again; the other videos go on. Returns the positions of the ok
    records replaced."""
    replaced = []
    for i, record in enumerate(records):
        if record.get("status") != "ok":
            continue
        real_path = record["file"]["path"] if record.get("file") else os.path.realpath(record["video"])
        for directory, suffix, render in ((srt_dir, ".srt", srt_text), (vtt_dir, ".vtt", vtt_text)):
            if directory is None:
                continue
            target = per_video_path(directory, real_path, suffix)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(target, render(record))
            except OSError as e:
                message = f"{record['video']}: cannot write its sidecar {target} ({e.strerror or e})"
                records[i] = as_error(record, "SidecarWriteError", message)
                replaced.append(i)
                break
    return replaced
