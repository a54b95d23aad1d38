"""Training manifests: JSONL, one `{"video", "caption", "prompt"?, "start_s"?, "end_s"?}` object per
line (docs/TRAINING.md, "Data").

Every problem is found before training starts, with the file and line number: bad JSON, a
missing or empty field, a video that does not exist, a segment that is empty, overlaps another
segment of its video or ends after the video does. Video paths are relative to the manifest.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vlmcap.errors import ConfigError, VideoError
from vlmcap.video.probe import probe_video
from vlmcap.video.segments import Segment

log = logging.getLogger(__name__)

# A segment may end this far past the probed duration: one frame at 20 fps, since a caption's end
# time is often written rounded, or as the start of the frame after the last one.
END_TOLERANCE_S = 0.05


@dataclass(frozen=True)
class Sample:
    video: str  # resolved path
    caption: str
    prompt: str | None
    source: str  # "manifest.jsonl:LINE", for messages
    window: Segment | None = None  # the caption describes this time segment only (seconds from the first frame)


def _window(record: dict) -> Segment | str | None:
    """The line's segment, None for a whole-file line, or what is wrong with it."""
    has = [k for k in ("start_s", "end_s") if k in record]
    if not has:
        return None
    if len(has) == 1:
        other = "end_s" if has[0] == "start_s" else "start_s"
        return f"field {has[0]!r} without {other!r}: give both, or neither for the whole video"
    start, end = record["start_s"], record["end_s"]
    for key, value in (("start_s", start), ("end_s", end)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return f"field {key!r} must be a number of seconds, got {json.dumps(value, ensure_ascii=False)}"
    if start < 0 or start >= end:
        return f"segment start_s={start:g} end_s={end:g}: needs 0 <= start_s < end_s"
    return Segment(float(start), float(end))


def load_manifest(path: str | Path) -> list[Sample]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: manifest is not UTF-8 text") from None
    samples: list[Sample] = []
    problems: list[tuple[int, str]] = []  # (line, message): reported in line order
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append((number, f"{where}: not valid JSON ({e.msg})"))
            continue
        if not isinstance(record, dict):
            problems.append((number, f"{where}: expected a JSON object"))
            continue
        missing = [k for k in ("video", "caption") if not isinstance(record.get(k), str) or not record[k].strip()]
        if missing:
            problems.append((number, f"{where}: missing or empty field {missing[0]!r}"))
            continue
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            problems.append((number, f"{where}: field 'prompt' must be a string"))
            continue
        window = _window(record)
        if isinstance(window, str):
            problems.append((number, f"{where}: {window}"))
            continue
        video = path.parent / record["video"]
        if not video.is_file():
            problems.append((number, f"{where}: video {record['video']!r} not found (looked at {video})"))
            continue
        samples.append(Sample(str(video), record["caption"].strip(), prompt, where, window))
    problems += _segment_problems(samples)
    if problems:
        messages = [message for _, message in sorted(problems, key=lambda p: p[0])]
        for message in messages:
            log.error("%s", message)
        more = f" (and {len(messages) - 1} more problems)" if len(messages) > 1 else ""
        raise ConfigError(messages[0] + more)
    if not samples:
        raise ConfigError(f"{path}: manifest has no samples")
    return samples


def _line(sample: Sample) -> int:
    return int(sample.source.rsplit(":", 1)[1])


def _segment_problems(samples: list[Sample]) -> list[tuple[int, str]]:
    """Segments of one video that overlap, or that end after the video does (probed once per video)."""
    by_video: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        if sample.window is not None:
            by_video[sample.video].append(sample)
    problems = []
    for video, segments in by_video.items():
        segments.sort(key=lambda s: (s.window.start_s, _line(s)))
        for i, a in enumerate(segments):
            # Sorted by start: a later segment overlaps a exactly when it starts before a ends.
            for b in segments[i + 1 :]:
                if b.window.start_s >= a.window.end_s:
                    break
                first, second = sorted((a, b), key=_line)
                problems.append(
                    (
                        _line(second),
                        f"{second.source}: segment {_span(second.window)} overlaps {_span(first.window)} of the "
                        f"same video at line {_line(first)}; segments of one video must not overlap",
                    )
                )
        try:
            duration_s = probe_video(video).duration_s
        except VideoError as e:
            first = min(segments, key=_line)
            problems.append((_line(first), f"{first.source}: cannot read the video's duration for its segments ({e})"))
            continue
        for sample in segments:
            if sample.window.end_s > duration_s + END_TOLERANCE_S:
                problems.append(
                    (
                        _line(sample),
                        f"{sample.source}: segment {_span(sample.window)} ends after the video, which is "
                        f"{duration_s:.3f} s long",
                    )
                )
    return problems


def _span(window: Segment) -> str:
    return f"{window.start_s:g}-{window.end_s:g} s"
