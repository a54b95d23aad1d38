"""Korean text the project generates itself, to train the tiny presets' tokenizer offline.

The sentences describe short videos: captions and frame descriptions of the synthetic world
(vlmcap.presets.synthetic), instructions, and everyday scene vocabulary, so the BPE merges cover
both the captions vlmcap is tested on and ordinary Korean.
"""

from __future__ import annotations

import random
from collections.abc import Iterator

from vlmcap.presets.synthetic import Scene, describe_frame, with_subject_particle

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

# Instructions a user may give; the default prompt (vlmcap.config.schema.DEFAULT_PROMPT) is the first.
_PROMPTS = [
    "이 영상을 한국어로 자세히 설명해 주세요.",
    "이 영상을 한 문장으로 설명해 주세요.",
    "영상에 무엇이 나오는지 한국어로 알려 주세요.",
    "화면에서 움직이는 물체를 자세히 설명해 주세요.",
    "이 동영상의 내용을 간단히 요약해 주세요.",
]

_SCENE_TEMPLATES = [
    "{place}에서 {subject_i} {action}.",
    "{time} {subject_i} {place}에서 {action}.",
    "{place} 장면입니다. {extra}.",
    "이 영상은 {place}에서 촬영되었고 {subject_i} {action}.",
]


def korean_sentences(num_sentences: int, seed: int = 0) -> Iterator[str]:
    """Deterministic stream of Korean sentences for a seed."""
    rng = random.Random(seed)
    for i in range(num_sentences):
        if i % 10 == 0:
            text = rng.choice(_PROMPTS)
        elif i % 4 == 1:
            scene = Scene.random(rng)
            text = " / ".join(describe_frame(scene.colour, scene.shape, x, y) for x, y in scene.trajectory(8, rng))
        elif i % 2 == 0:
            text = Scene.random(rng).caption(rng)
        else:
            text = rng.choice(_SCENE_TEMPLATES).format(
                place=rng.choice(_PLACES),
                subject_i=with_subject_particle(rng.choice(_SUBJECTS)),
                action=rng.choice(_ACTIONS),
                extra=rng.choice(_EXTRAS),
                time=rng.choice(_TIME),
            )
        yield text
