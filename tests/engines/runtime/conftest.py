"""What the vision engines' tests share: the tiny bundle loaded once, and frames as decoded."""

from __future__ import annotations

import numpy as np
import pytest

from vlmcap.bundle import load_bundle


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    return load_bundle(tiny_bundle)


@pytest.fixture
def decoded_frames():
    """What the decode workers hand over: uint8 (T, h, w, 3) per video at the bundle's size."""

    def frames(bundle, videos: int, seed: int = 0) -> list[np.ndarray]:
        h, w = bundle.manifest.image.size
        rng = np.random.default_rng(seed)
        return [
            rng.integers(0, 256, (bundle.manifest.video.num_frames, h, w, 3), dtype=np.uint8) for _ in range(videos)
        ]

    return frames
