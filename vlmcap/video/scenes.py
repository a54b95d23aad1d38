"""Shot cuts of a video, found by PySceneDetect's ContentDetector on its PyAV backend.

Why PySceneDetect and not TransNetV2 (docs/VIDEO.md, "Segments", has the measurement from
scripts/compare-shot-detectors): it runs inside a decode worker on one core 10-12x faster, needs
no model weights, and every cut it reports is right within a frame. TransNetV2's PyTorch port
ships its weights only as a pickled `.pth`, which this project never loads.

Detection reads every frame, so an hour takes a while: it runs in chunks of `chunk_s` of video
and calls `progress()` after each, which the decode pool takes as a sign of life (a stuck decoder
sends none and is killed at the timeout).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from vlmcap.errors import TruncatedVideo
from vlmcap.video.probe import is_utf8_path


def detect_cuts(
    path: str, threshold: float, min_scene_s: float, progress: Callable[[], None] | None = None, chunk_s: float = 30.0
) -> list[float]:
    """Seconds (from the first frame) at which a new shot starts; empty for a single shot."""
    from scenedetect import ContentDetector, SceneManager
    from scenedetect.backends.pyav import VideoStreamAv

    with contextlib.ExitStack() as stack:
        # FFmpeg takes names as UTF-8: any other name goes in as a file object (as probe.py does).
        source = path if is_utf8_path(path) else stack.enter_context(open(path, "rb"))
        try:
            video = VideoStreamAv(source, name="video", suppress_output=True)
        except Exception as e:  # VideoOpenFailure, OSError: the probe accepted it, so it is damaged
            raise TruncatedVideo(f"{path}: scene detection cannot open it ({e})") from None
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=float(min_scene_s)))
        try:
            while manager.detect_scenes(video, duration=chunk_s) > 0:
                if progress is not None:
                    progress()
        except Exception as e:
            raise TruncatedVideo(f"{path}: scene detection stopped ({type(e).__name__}: {e})") from None
        scenes = manager.get_scene_list(start_in_scene=True)
    return [round(start.seconds, 6) for start, _ in scenes[1:]]
