"""On-disk cache of frozen vision features, so later epochs skip decoding and the encoder.

The encoder never changes during training, so its output for a video is a pure function of the
encoder (weights, feature layer), the frame sampling (T, decode options), the preprocessing and
the file. The cache key covers all of them; a file is identified by its resolved path, size and
modification time, so an edited or replaced video never hits a stale entry, and a labelled
segment of it also by its window, so two segments of one file never share features. Entries are
fp16 safetensors written atomically (temp file + rename), one per video or segment.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from vlmcap.storage.files import atomic_write_bytes, file_identity
from vlmcap.video.segments import Segment


def encoder_fingerprint(model_path: str, revision: str | None, extra: dict) -> str:
    """Identify the encoder: its config and weight files (content of config, stat of weights) + options."""
    parts = {"model": model_path, "revision": revision, **extra}
    root = Path(model_path)
    if root.is_dir():
        config = root / "config.json"
        parts["config_sha256"] = hashlib.sha256(config.read_bytes()).hexdigest() if config.exists() else None
        parts["weights"] = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in root.glob("*.safetensors"))
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class FeatureCache:
    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)

    def _entry(self, video: str, window: Segment | None = None) -> Path:
        identity = file_identity(video)
        if identity is None:
            raise FileNotFoundError(video)
        fields = {"path": os.path.realpath(video), **identity.as_dict()}
        if window is not None:  # whole-file keys stay as they were: existing caches keep hitting
            fields["window_s"] = [window.start_s, window.end_s]
        key = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]
        return self.dir / key[:2] / f"{key}.safetensors"

    def contains(self, video: str, window: Segment | None = None) -> bool:
        try:
            return self._entry(video, window).exists()
        except OSError:
            return False

    def get(self, video: str, window: Segment | None = None) -> torch.Tensor | None:
        """The cached features, or None: not cached, the video vanished, or the entry is damaged."""
        try:
            entry = self._entry(video, window)
            features = load_file(entry)["features"]
        except Exception:  # OSError (vanished video, missing entry), or safetensors' error on a torn file
            return None
        return features

    def put(self, video: str, features: torch.Tensor, window: Segment | None = None) -> None:
        entry = self._entry(video, window)
        entry.parent.mkdir(exist_ok=True)
        atomic_write_bytes(entry, save({"features": features.detach().to("cpu", torch.float16).contiguous()}))
