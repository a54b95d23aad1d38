"""Training manifests: JSONL, one `{"video", "caption", "prompt"?}` object per line (docs/TRAINING.md, "Data").

Every problem is found before training starts, with the file and line number: bad JSON, a
missing or empty field, a video that does not exist. Video paths are relative to the manifest.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from vlmcap.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    video: str  # resolved path
    caption: str
    prompt: str | None
    source: str  # "manifest.jsonl:LINE", for messages


def load_manifest(path: str | Path) -> list[Sample]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: manifest is not UTF-8 text") from None
    samples, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        missing = [k for k in ("video", "caption") if not isinstance(record.get(k), str) or not record[k].strip()]
        if missing:
            problems.append(f"{where}: missing or empty field {missing[0]!r}")
            continue
        prompt = record.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            problems.append(f"{where}: field 'prompt' must be a string")
            continue
        video = path.parent / record["video"]
        if not video.is_file():
            problems.append(f"{where}: video {record['video']!r} not found (looked at {video})")
            continue
        samples.append(Sample(str(video), record["caption"].strip(), prompt, where))
    if problems:
        for problem in problems:
            log.error("%s", problem)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    if not samples:
        raise ConfigError(f"{path}: manifest has no samples")
    return samples
