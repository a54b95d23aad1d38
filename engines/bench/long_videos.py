"""`vlmcap bench long`: hour-long files through `vlmcap batch --segments` (docs/PERFORMANCE.md, "Long videos").

Generates 640x360 videos of the given lengths (scenes of moving shapes on noise, a keyframe every
10 s as recordings have; kept in the work folder for the next run), runs the real `vlmcap batch`
command on each in a child process, and samples the resident memory of its whole process tree
(the run, its decode workers and their forkserver) every 0.1 s. The baseline is the same command
over a folder of short clips. What to read: wall time per minute of video stays flat as files get
longer, and the peak memory stays near the short-clip run's, because a decode worker holds one
segment's frames at a time and the queues hold a few batches of segments.
"""

from __future__ import annotations

import contextlib
import json
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from vlmcap.presets.synthetic import Scene, draw_shape
from vlmcap.storage.output_guard import claim_folder, write_marker
from vlmcap.video.encode import write_h264

WIDTH, HEIGHT, FPS, SCENE_S, KEYFRAME_S = 640, 360, 5, 20.0, 10.0


def write_long_video(path: Path, seconds: float, seed: int, fps: int = FPS) -> Path:
    """A `seconds`-long 640x360 H.264 file of consecutive scenes at `fps`; an existing file is reused."""
    if path.exists():
        return path
    rng = random.Random(seed)
    tmp = path.with_suffix(".partial.mp4")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_h264(
        tmp,
        _frames(seconds, rng, fps),
        fps,
        WIDTH,
        HEIGHT,
        {"preset": "ultrafast", "crf": "28", "g": str(int(fps * KEYFRAME_S))},
    )
    tmp.rename(path)
    return path


def _frames(seconds: float, rng: random.Random, fps: int) -> Iterator[np.ndarray]:
    """Scenes of SCENE_S: a shape crossing a noise background, a new shape and background each scene."""
    total = round(seconds * fps)
    per_scene = round(SCENE_S * fps)
    for start in range(0, total, per_scene):
        scene = Scene.random(rng)
        background = np.random.default_rng(rng.getrandbits(32)).integers(10, 60, (HEIGHT, WIDTH, 3), np.uint8)
        count = min(per_scene, total - start)
        for i in range(count):
            img = background.copy()
            along = 0.15 + 0.7 * i / max(count - 1, 1)
            along = 1 - along if scene.motion in ("right_to_left", "bottom_to_top") else along
            horizontal = scene.motion in ("left_to_right", "right_to_left")
            cx, cy = (along * WIDTH, HEIGHT / 2) if horizontal else (WIDTH / 2, along * HEIGHT)
            draw_shape(img, scene.shape, scene.colour, cx, cy, HEIGHT * 0.15)
            yield img


def _tree_rss(process: psutil.Process) -> int:
    total = 0
    try:
        tree = [process, *process.children(recursive=True)]
    except psutil.Error:  # a child ended while psutil listed the tree
        tree = [process]
    for p in tree:
        with contextlib.suppress(psutil.Error):  # it ended between the listing and the reading
            total += p.memory_info().rss
    return total


def measure_batch(args: list[str], stats_path: Path) -> dict[str, Any]:
    """Run `vlmcap batch ARGS --stats STATS` in a child process: wall time, peak tree RSS, its stats."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "vlmcap.cli", "batch", *args, "--stats", str(stats_path)])
    root = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(root))
            done.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    code = proc.wait()
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if code not in (0, 1):
        raise RuntimeError(f"vlmcap batch exited {code}: {' '.join(args)}")
    stats = json.loads(stats_path.read_text())
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20), "stats": stats}


def bench_long(
    minutes: list[float], workdir: Path, batch_args: list[str], short_clips: int = 20, short_s: float = 20.0
) -> dict[str, Any]:
    """Rows for a folder of short clips and for each long file, all through the same batch flags."""
    workdir = claim_folder("--workdir", workdir, "bench long")  # it writes videos and replaces ledgers there
    videos = workdir / "videos"
    short_dir = videos / f"short-{short_clips}x{short_s:g}s"
    for i in range(short_clips):
        write_long_video(short_dir / f"clip{i:03d}.mp4", short_s, seed=1000 + i)
    longs = [write_long_video(videos / f"long-{m:g}min.mp4", m * 60, seed=int(m)) for m in minutes]

    def run(name: str, inputs: list[str], seconds: float) -> dict[str, Any]:
        out = workdir / f"{name}.jsonl"
        out.unlink(missing_ok=True)
        row = measure_batch([*inputs, "--out", str(out), "--overwrite", *batch_args], workdir / f"{name}.stats.json")
        stats = row.pop("stats")
        return {
            "name": name,
            "video_minutes": round(seconds / 60, 2),
            "segments": stats["segments"],
            "wall_s": row["wall_s"],
            "wall_s_per_video_minute": round(row["wall_s"] / (seconds / 60), 2),
            "peak_rss_mb": row["peak_rss_mb"],
            "llm_batches": stats["llm_batches"],
            "failed": stats["failed"],
        }

    rows = [run(f"short-{short_clips}x{short_s:g}s", [str(short_dir)], short_clips * short_s)]
    rows += [run(f"long-{m:g}min", [str(path)], m * 60) for m, path in zip(minutes, longs, strict=True)]
    baseline = rows[0]["peak_rss_mb"]
    for row in rows:
        row["peak_rss_vs_short"] = round(row["peak_rss_mb"] / baseline, 2)
    write_marker(workdir, "bench long")
    return {"batch_args": batch_args, "rows": rows}
