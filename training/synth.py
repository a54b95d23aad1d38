"""`vlmcap synth`: a synthetic Korean video-caption data set that exercises what a captioner must see.

Colour, shape, position (the lane it travels in) and motion direction over time, so frame order
matters: the first and last frames differ only in where the object is. Captions vary over
templates. Three manifests:

- train.jsonl
- val.jsonl: random held-out videos of the same distribution;
- val_heldout_pairs.jsonl: colour-shape pairs that never appear in training (each colour and each
  shape on its own does), to test composition rather than memorisation.

and, with `multi_scene` > 0, a fourth: multiscene.jsonl, one line per scene (`start_s`, `end_s`)
of videos that cut from scene to scene, for training and evaluating on segments.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vlmcap.presets.synthetic import COLOURS, SHAPES, Scene, render_video
from vlmcap.storage.files import write_jsonl
from vlmcap.video.encode import write_h264

# One pair per shape and per colour: every colour and shape still occurs in training.
HELDOUT_PAIRS = (("red", "triangle"), ("green", "circle"), ("blue", "square"))
# Long enough to be a segment of its own under the batch path's default segment_min_s (2 s).
MULTI_SCENE_S = 5.0


@dataclass(frozen=True)
class SynthSpec:
    num_videos: int = 1000
    seed: int = 0
    frames: int = 16
    fps: int = 8
    size: int = 112
    val_fraction: float = 0.1
    heldout_fraction: float = 0.1
    multi_scene: int = 0  # multi-scene videos (3-5 scenes of MULTI_SCENE_S each) in multiscene.jsonl


def write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    write_h264(path, frames, fps, frames.shape[2], frames.shape[1], {"crf": "18", "preset": "veryfast"})


@dataclass(frozen=True)
class TimedCaption:
    start_s: float
    end_s: float
    caption: str
    scene: Scene


def write_multiscene_video(
    path: Path,
    num_scenes: int,
    rng: random.Random,
    scene_s: float = 5.0,
    fps: int = 8,
    size: int = 112,
) -> list[TimedCaption]:
    """A video of `num_scenes` consecutive scenes, each a different colour, shape and motion from
    the one before it, with one caption per scene: cuts a shot detector must find, and reference
    captions for per-segment evaluation."""
    frames_per_scene = max(1, round(scene_s * fps))
    scenes: list[Scene] = []
    while len(scenes) < num_scenes:
        scene = Scene.random(rng)
        previous = scenes[-1] if scenes else None
        if previous is None or (
            scene.colour != previous.colour and scene.shape != previous.shape and scene.motion != previous.motion
        ):
            scenes.append(scene)
    frames = np.concatenate([render_video(s, frames_per_scene, size, rng) for s in scenes])
    write_video(path, frames, fps)
    scene_len = frames_per_scene / fps
    return [TimedCaption(i * scene_len, (i + 1) * scene_len, s.caption(rng), s) for i, s in enumerate(scenes)]


def _scene(rng: random.Random, heldout: bool) -> Scene:
    if heldout:
        colour, shape = rng.choice(HELDOUT_PAIRS)
        return Scene.random(rng, colour=colour, shape=shape)
    while True:
        scene = Scene.random(rng)
        if (scene.colour, scene.shape) not in HELDOUT_PAIRS:
            return scene


def write_multiscene_set(out_dir: Path, spec: SynthSpec) -> Path:
    """`spec.multi_scene` videos of 3-5 scenes under out_dir/videos and multiscene.jsonl, one line per
    scene. Its own random stream (from the seed), so the other splits are the same with or without it."""
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(f"multiscene:{spec.seed}")
    lines = []
    for index in range(spec.multi_scene):
        name = f"videos/multiscene-{index:05d}.mp4"
        scenes = write_multiscene_video(out_dir / name, rng.randint(3, 5), rng, MULTI_SCENE_S, spec.fps, spec.size)
        lines += [
            {
                "video": name,
                "start_s": round(scene.start_s, 3),
                "end_s": round(scene.end_s, 3),
                "caption": scene.caption,
                "attributes": {
                    "colour": scene.scene.colour,
                    "shape": scene.scene.shape,
                    "motion": scene.scene.motion,
                    "lane": scene.scene.lane,
                },
            }
            for scene in scenes
        ]
    path = out_dir / "multiscene.jsonl"
    write_jsonl(path, lines)
    return path


def write_synthetic_dataset(out_dir: Path, spec: SynthSpec = SynthSpec()) -> dict[str, Path]:
    """Write videos/ and the three manifests (four with `spec.multi_scene`) under `out_dir`; returns
    the manifest paths."""
    out_dir = Path(out_dir)
    (out_dir / "videos").mkdir(parents=True, exist_ok=True)
    rng = random.Random(spec.seed)
    n_heldout = round(spec.num_videos * spec.heldout_fraction)
    n_val = round(spec.num_videos * spec.val_fraction)
    splits = {"val_heldout_pairs": n_heldout, "val": n_val, "train": spec.num_videos - n_heldout - n_val}
    manifests = {}
    index = 0
    for split, count in splits.items():
        lines = []
        for _ in range(count):
            scene = _scene(rng, heldout=split == "val_heldout_pairs")
            name = f"videos/{index:05d}.mp4"
            write_video(out_dir / name, render_video(scene, spec.frames, spec.size, rng), spec.fps)
            lines.append(
                {
                    "video": name,
                    "caption": scene.caption(rng),
                    "attributes": {
                        "colour": scene.colour,
                        "shape": scene.shape,
                        "motion": scene.motion,
                        "lane": scene.lane,
                    },
                }
            )
            index += 1
        path = out_dir / f"{split}.jsonl"
        write_jsonl(path, lines)
        manifests[split] = path
    if spec.multi_scene > 0:
        manifests["multiscene"] = write_multiscene_set(out_dir, spec)
    return manifests


__all__ = ["COLOURS", "HELDOUT_PAIRS", "SHAPES", "SynthSpec", "write_synthetic_dataset"]
