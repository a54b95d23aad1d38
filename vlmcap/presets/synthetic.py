"""A synthetic world of coloured shapes moving across the screen, with Korean captions.

One place defines it for everyone: the tiny presets are pretrained on it (the vision encoder on
single frames, the language model on text descriptions of frames), `vlmcap synth` writes video
data sets from it, and evaluation parses captions back into its attributes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

COLOURS = {"red": "빨간색", "green": "초록색", "blue": "파란색", "yellow": "노란색"}
COLOUR_RGB = {"red": (220, 40, 40), "green": (40, 190, 70), "blue": (50, 100, 235), "yellow": (235, 215, 40)}
SHAPES = {"circle": "원", "square": "사각형", "triangle": "삼각형"}
MOTIONS = {
    "left_to_right": "왼쪽에서 오른쪽으로",
    "right_to_left": "오른쪽에서 왼쪽으로",
    "top_to_bottom": "위에서 아래로",
    "bottom_to_top": "아래에서 위로",
}
# Where the object travels, across its motion: rows for horizontal motion, columns for vertical.
LANES = {
    "horizontal": {"top": "위쪽", "center": "가운데", "bottom": "아래쪽"},
    "vertical": {"left": "왼쪽", "center": "가운데", "right": "오른쪽"},
}
X_BINS = ("왼쪽", "가운데", "오른쪽")
Y_BINS = ("위", "가운데", "아래")

CAPTION_TEMPLATES = (
    "{colour} {shape_i} {motion} 움직입니다.",
    "화면 {lane}의 {colour} {shape_i} {motion} 이동합니다.",
    "영상에서 {colour} {shape_i} {motion} 지나갑니다.",
    "{colour} {shape} 하나가 화면 {lane}에서 {motion} 천천히 움직입니다.",
)

OBJECT_RADIUS = (0.12, 0.16)  # of the frame size: the shape must stay recognisable at 112 px
_LANE_POS = {"top": 0.28, "bottom": 0.72, "left": 0.28, "right": 0.72, "center": 0.5}
_BACKGROUND = 24


def with_subject_particle(word: str) -> str:
    """Attach 이/가: 이 after a final consonant (받침), 가 after a vowel."""
    last = ord(word[-1]) - 0xAC00
    has_final_consonant = 0 <= last < 11172 and last % 28 != 0
    return word + ("이" if has_final_consonant else "가")


def axis_of(motion: str) -> str:
    return "horizontal" if motion in ("left_to_right", "right_to_left") else "vertical"


@dataclass(frozen=True)
class Scene:
    """One synthetic video: what moves, how, and where."""

    colour: str
    shape: str
    motion: str
    lane: str

    @classmethod
    def random(cls, rng: random.Random, colour: str | None = None, shape: str | None = None) -> Scene:
        motion = rng.choice(list(MOTIONS))
        return cls(
            colour=colour or rng.choice(list(COLOURS)),
            shape=shape or rng.choice(list(SHAPES)),
            motion=motion,
            lane=rng.choice(list(LANES[axis_of(motion)])),
        )

    def caption(self, rng: random.Random) -> str:
        shape = SHAPES[self.shape]
        return rng.choice(CAPTION_TEMPLATES).format(
            colour=COLOURS[self.colour],
            shape=shape,
            shape_i=with_subject_particle(shape),
            motion=MOTIONS[self.motion],
            lane=LANES[axis_of(self.motion)][self.lane],
        )

    def trajectory(self, num_frames: int, rng: random.Random) -> list[tuple[float, float]]:
        """Object centre (x, y) in [0, 1] per frame."""
        start, end = 0.18 + rng.uniform(-0.04, 0.04), 0.82 + rng.uniform(-0.04, 0.04)
        if self.motion in ("right_to_left", "bottom_to_top"):
            start, end = end, start
        across = _LANE_POS[self.lane] + rng.uniform(-0.05, 0.05)
        steps = np.linspace(start, end, num_frames)
        return [(float(s), across) if axis_of(self.motion) == "horizontal" else (across, float(s)) for s in steps]


def draw_shape(img: np.ndarray, shape: str, colour: str, cx: float, cy: float, radius: float) -> None:
    """Draw in place; centre and radius in pixels."""
    h, w, _ = img.shape
    yy, xx = np.mgrid[0:h, 0:w]
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        mask = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        mask = (np.abs(dx) <= radius * 0.9) & (np.abs(dy) <= radius * 0.9)
    else:  # triangle pointing up: inside when below the two slanted edges and above the base
        mask = (dy <= radius) & (dy >= -radius) & (np.abs(dx) <= (dy + radius) / 2)
    img[mask] = COLOUR_RGB[colour]


def render_frame(
    shape: str, colour: str, x: float, y: float, size: int, radius: float, rng: random.Random
) -> np.ndarray:
    img = np.full((size, size, 3), _BACKGROUND, np.uint8)
    noise = np.random.default_rng(rng.getrandbits(32)).integers(-6, 7, (size, size, 3))
    img = np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)
    draw_shape(img, shape, colour, x * size, y * size, radius)
    return img


def render_video(scene: Scene, num_frames: int, size: int, rng: random.Random) -> np.ndarray:
    """(num_frames, size, size, 3) uint8 RGB frames of the scene."""
    radius = size * rng.uniform(*OBJECT_RADIUS)
    return np.stack(
        [render_frame(scene.shape, scene.colour, x, y, size, radius, rng) for x, y in scene.trajectory(num_frames, rng)]
    )


def describe_frame(colour: str, shape: str, x: float, y: float) -> str:
    """What one frame shows, in words: `빨간색 원 왼쪽 위`."""
    col = X_BINS[min(int(x * 3), 2)]
    row = Y_BINS[min(int(y * 3), 2)]
    return f"{COLOURS[colour]} {SHAPES[shape]} {col} {row}"


def parse_attributes(caption: str) -> dict[str, str | None]:
    """Colour, shape and motion named in a caption (None where it names none)."""

    def find(table: dict[str, str]) -> str | None:
        hits = [(caption.find(word), key) for key, word in table.items() if word in caption]
        return min(hits)[1] if hits else None

    return {"colour": find(COLOURS), "shape": find(SHAPES), "motion": find(MOTIONS)}
