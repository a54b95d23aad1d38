"""Decoding: codecs, containers, sampling and timestamps, odd shapes, rotation, fallback, broken files."""

from __future__ import annotations

import numpy as np
import pytest

from vlmcap.errors import NotAVideo, NoVideoStream, TruncatedVideo, VideoError, VideoNotFound
from vlmcap.video.decoders import DecodeOptions, DecoderUnsuitable, decode_video
from vlmcap.video.probe import probe_video
from vlmcap.video.sampling import frames_at_times, sample_indices

DECORD_FIRST = DecodeOptions()
PYAV_ONLY = DecodeOptions(decoders=("pyav",))

# Which decoder ends up reading each clip with the default chain (decord, then PyAV).
EXPECTED_DECODER = {
    "av1_mp4": "pyav",  # decord 0.6.0 has no AV1 decoder
    "rotated_90": "pyav",  # decord mangles rotated streams
    "rotated_180": "pyav",
    "h264_ts": "pyav",  # decord mis-seeks in MPEG-TS and gives up on the last frames
}


def bar_positions(frames: np.ndarray) -> list[int]:
    """Column of the bright green bar media.pattern draws, per frame: it encodes the frame index."""
    return [int(np.argmax(f[..., 1].astype(float).mean(0))) for f in frames]


def test_sampling_is_the_middle_of_equal_segments() -> None:
    times = np.arange(30) / 10.0
    assert sample_indices(times, 3.0, 8).tolist() == [1, 5, 9, 13, 16, 20, 24, 28]  # floor((j+.5)*30/8)
    assert sample_indices(np.array([0.0]), 0.1, 8).tolist() == [0] * 8
    assert frames_at_times(np.array([0.0, 1.0, 5.0]), np.array([0.5, 4.9, 5.0, 9.0])).tolist() == [0, 1, 2, 2]


@pytest.mark.parametrize(
    "name",
    ["h264_mp4", "hevc_mkv", "vp9_webm", "mpeg4_avi", "av1_mp4", "h264_ts", "odd_97x61", "portrait"],
)
def test_codecs_and_containers_decode_the_right_frames(clips, name: str) -> None:
    video = decode_video(str(clips[name]), DECORD_FIRST)
    meta = video.meta
    assert video.frames.shape == (8, meta.height, meta.width, 3) and video.frames.dtype == np.uint8
    assert meta.decoder == EXPECTED_DECODER.get(name, "decord")
    n = meta.num_frames
    assert meta.fps == pytest.approx(10.0) and meta.duration_s == pytest.approx(n / 10)
    expected = [int((j + 0.5) * n / 8) for j in range(8)]
    assert video.timestamps_s == pytest.approx([i / 10 for i in expected], abs=1e-3)
    # The content of each frame confirms it is the frame the timestamp names.
    bar_x = [(i * 7) % (meta.width - 4) for i in expected]
    assert all(abs(got - (x + 1.5)) <= 2.5 for got, x in zip(bar_positions(video.frames), bar_x, strict=True))


@pytest.mark.parametrize("name", ["h264_mp4", "hevc_mkv", "vp9_webm", "mpeg4_avi", "odd_97x61", "vfr_mp4"])
def test_decord_and_pyav_return_identical_frames(clips, name: str) -> None:
    a = decode_video(str(clips[name]), DecodeOptions(decoders=("decord",)))
    b = decode_video(str(clips[name]), PYAV_ONLY)
    assert (a.meta.decoder, b.meta.decoder) == ("decord", "pyav")
    assert a.timestamps_s == b.timestamps_s
    assert np.array_equal(a.frames, b.frames)


def test_variable_frame_rate_samples_by_time(clips) -> None:
    video = decode_video(str(clips["vfr_mp4"]))
    # frames at 0, .1, .2, .3, 1.0, 1.05, 1.1, 1.15, 1.2, 2.5, 2.6, 3.0 s; segments of a 3.23 s video
    assert video.timestamps_s == pytest.approx([0.2, 0.3, 1.0, 1.2, 1.2, 1.2, 2.6, 3.0])


def test_videos_shorter_than_t_frames_repeat_frames(clips) -> None:
    one = decode_video(str(clips["one_frame"]))
    assert one.frames.shape[0] == 8 and one.timestamps_s == [0.0] * 8 and one.meta.num_frames == 1
    short = decode_video(str(clips["short_0_2s"]))
    assert short.meta.duration_s == pytest.approx(0.2)
    assert short.timestamps_s == pytest.approx([0.0] * 4 + [0.1] * 4)


@pytest.mark.parametrize(("name", "corner"), [("rotated_90", "bottom_left"), ("rotated_180", "bottom_right")])
def test_display_rotation_is_applied(clips, name: str, corner: str) -> None:
    video = decode_video(str(clips[name]))
    h, w = video.frames.shape[1:3]
    assert video.meta.rotation == int(name.split("_")[1])
    assert (w, h) == ((96, 160) if name == "rotated_90" else (160, 96))
    assert (video.meta.width, video.meta.height) == (w, h)
    # The white block was drawn top-left in coded orientation; rotating counter-clockwise moves it.
    frame = video.frames[0].astype(float).mean(-1)
    quadrants = {
        "top_left": frame[: h // 4, : w // 4],
        "bottom_left": frame[-h // 4 :, : w // 4],
        "bottom_right": frame[-h // 4 :, -w // 4 :],
    }
    assert quadrants[corner].mean() > 240
    assert quadrants["top_left"].mean() < 200


def test_decode_at_reduced_size_caps_memory(clips) -> None:
    video = decode_video(str(clips["h264_mp4"]), DecodeOptions(max_short_side=48))
    assert video.frames.shape == (8, 48, 80, 3)
    assert (video.meta.width, video.meta.height) == (160, 96)  # metadata keeps the real size


def test_decord_refuses_a_container_that_overstates_its_frames(clips) -> None:
    """decord loops forever seeking to frames that are not there: it must not be asked to."""
    from dataclasses import replace

    from vlmcap.video.decord_decoder import DecordDecoder

    probe = probe_video(str(clips["h264_mp4"]))
    fewer = replace(probe, frame_times_s=probe.frame_times_s[:20])  # the stream really has 20 frames
    with pytest.raises(DecoderUnsuitable, match="reports 30 frames, stream has 20"):
        DecordDecoder().fetch(fewer, np.arange(8), (160, 96))


def test_real_clips_decode_with_metadata(real_clips) -> None:
    video = decode_video(str(real_clips["bigbuckbunny"]))
    meta = video.meta
    assert (meta.width, meta.height, meta.codec, meta.decoder) == (1280, 720, "h264", "decord")
    assert meta.num_frames == 132 and meta.fps == pytest.approx(25.0) and meta.duration_s == pytest.approx(5.28)
    assert video.frames.shape == (8, 720, 1280, 3)
    assert video.timestamps_s[0] == pytest.approx(0.32) and video.timestamps_s == sorted(video.timestamps_s)
    for name in ("bikes", "carphone_pristine", "carphone_distorted"):
        clip = decode_video(str(real_clips[name]))
        assert clip.frames.shape[0] == 8 and 0 < clip.timestamps_s[-1] < clip.meta.duration_s


@pytest.mark.parametrize(
    ("name", "error", "cause"),
    [
        ("zero_bytes", NotAVideo, "empty file"),
        ("truncated_mp4", TruncatedVideo, "MP4/MOV header present"),
        ("random_bytes", NotAVideo, "not a video container"),
        ("text_file", NotAVideo, "not a video container"),
        ("directory", NotAVideo, "is a directory"),
        ("audio_only", NoVideoStream, "no video stream"),
        ("missing", VideoNotFound, "file not found"),
    ],
)
def test_broken_inputs_raise_typed_one_line_errors(broken_inputs, name, error, cause) -> None:
    path = str(broken_inputs[name])
    with pytest.raises(error) as info:
        decode_video(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and cause in message and "\n" not in message
    assert isinstance(info.value, VideoError)
