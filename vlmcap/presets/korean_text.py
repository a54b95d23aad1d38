"""Korean text the project generates itself, to train the tiny presets' tokenizer offline.

The sentences describe short videos: the attribute words of the synthetic data set (colours,
shapes, positions, motions) in several templates, plus everyday scene vocabulary, so the BPE
merges cover both the captions vlmcap is tested on and ordinary Korean.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

# Attribute vocabulary shared with the synthetic video-caption set (training.synth).
COLOURS = {"red": "빨간색", "green": "초록색", "blue": "파란색", "yellow": "노란색"}
SHAPES = {"circle": "원", "square": "사각형", "triangle": "삼각형"}
MOTIONS = {
    "left_to_right": "왼쪽에서 오른쪽으로",
    "right_to_left": "오른쪽에서 왼쪽으로",
    "top_to_bottom": "위에서 아래로",
    "bottom_to_top": "아래에서 위로",
}
POSITIONS = {"top": "위쪽", "bottom": "아래쪽", "left": "왼쪽", "right": "오른쪽", "center": "가운데"}

_SUBJECTS = [
    "사람",
    "아이",
    "강아지",
    "고양이",
    "자동차",
    "자전거",
    "새",
    "버스",
    "여자",
    "남자",
    "학생",
    "공",
]
_PLACES = [
    "공원",
    "거리",
    "바닷가",
    "방 안",
    "운동장",
    "부엌",
    "사무실",
    "숲",
    "다리 위",
    "강가",
    "무대",
    "교실",
]
_ACTIONS = [
    "걸어갑니다",
    "달려갑니다",
    "멈춰 있습니다",
    "천천히 움직입니다",
    "빠르게 지나갑니다",
    "돌고 있습니다",
]
_EXTRAS = [
    "화면이 밝습니다",
    "배경은 단색입니다",
    "카메라는 고정되어 있습니다",
    "조명이 어둡습니다",
    "소리가 없습니다",
]
_TIME = ["처음에는", "잠시 후", "마지막에는", "영상 내내", "중간에"]

# Instructions a user may give; the default prompt (vlmcap.config.DEFAULT_PROMPT) is the first.
_PROMPTS = [
    "이 영상을 한국어로 자세히 설명해 주세요.",
    "이 영상을 한 문장으로 설명해 주세요.",
    "영상에 무엇이 나오는지 한국어로 알려 주세요.",
    "화면에서 움직이는 물체를 자세히 설명해 주세요.",
    "이 동영상의 내용을 간단히 요약해 주세요.",
]

_CAPTION_TEMPLATES = [
    "{colour} {shape_i} {motion} 움직입니다.",
    "{colour} {shape} 하나가 화면 {motion} 이동합니다.",
    "영상에서 {colour} {shape_i} {motion} 지나갑니다.",
    "{time} {colour} {shape_i} {position}에 있다가 {motion} 움직입니다.",
    "화면 {position}의 {colour} {shape_i} {motion} 천천히 이동합니다.",
]
_SCENE_TEMPLATES = [
    "{place}에서 {subject_i} {action}.",
    "{time} {subject_i} {place}에서 {action}.",
    "{place} 장면입니다. {extra}.",
    "이 영상은 {place}에서 촬영되었고 {subject_i} {action}.",
]


def with_subject_particle(word: str) -> str:
    """Attach 이/가: 이 after a final consonant (받침), 가 after a vowel."""
    last = ord(word[-1]) - 0xAC00
    has_final_consonant = 0 <= last < 11172 and last % 28 != 0
    return word + ("이" if has_final_consonant else "가")


def korean_sentences(num_sentences: int, seed: int = 0) -> Iterator[str]:
    """Deterministic stream of Korean sentences for a seed."""
    rng = random.Random(seed)
    for i in range(num_sentences):
        if i % 10 == 0:
            text = rng.choice(_PROMPTS)
        elif i % 2 == 0:
            text = rng.choice(_CAPTION_TEMPLATES).format(
                colour=rng.choice(list(COLOURS.values())),
                shape_i=with_subject_particle(shape := rng.choice(list(SHAPES.values()))),
                shape=shape,
                motion=rng.choice(list(MOTIONS.values())),
                position=rng.choice(list(POSITIONS.values())),
                time=rng.choice(_TIME),
            )
        else:
            text = rng.choice(_SCENE_TEMPLATES).format(
                place=rng.choice(_PLACES),
                subject_i=with_subject_particle(rng.choice(_SUBJECTS)),
                action=rng.choice(_ACTIONS),
                extra=rng.choice(_EXTRAS),
                time=rng.choice(_TIME),
            )
        yield text
