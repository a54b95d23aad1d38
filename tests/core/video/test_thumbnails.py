"""Contact sheets (vlmcap/video/thumbnails.py): the frames in time order on a grid, small, whole JPEGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmcap.video.thumbnails import (
    TILE_PX,
    contact_sheet,
    jpeg_bytes,
    sheet_columns,
    thumbnail_path,
    write_contact_sheet,
)


def solid_frames(count: int, height: int, width: int) -> np.ndarray:
    """Frame i is one flat colour that no other frame has."""
    colours = [(37 * i % 256, 255 - 23 * i % 256, 90 + 11 * i % 166) for i in range(count)]
    return np.stack([np.full((height, width, 3), c, np.uint8) for c in colours])


@pytest.mark.parametrize(("count", "columns"), [(1, 1), (4, 4), (5, 4), (8, 4), (16, 6), (32, 8)])
def test_columns_make_a_sheet_about_twice_as_wide_as_tall(count: int, columns: int) -> None:
    assert sheet_columns(count) == columns


def test_frames_are_tiled_in_time_order_and_scaled_to_the_tile() -> None:
    frames = solid_frames(8, 336, 336)
    sheet = np.asarray(contact_sheet(frames))
    assert sheet.shape == (2 * TILE_PX, 4 * TILE_PX, 3)
    for i, frame in enumerate(frames):
        row, column = divmod(i, 4)
        tile = sheet[row * TILE_PX : (row + 1) * TILE_PX, column * TILE_PX : (column + 1) * TILE_PX]
        assert (tile == frame[0, 0]).all(), i


def test_a_wide_frame_keeps_its_shape_a_small_one_is_not_enlarged_and_the_grid_gap_is_black() -> None:
    wide = np.asarray(contact_sheet(solid_frames(5, 180, 320)))
    assert wide.shape == (2 * 72, 4 * TILE_PX, 3)  # 320x180 -> 128x72, 4 columns, 2 rows
    assert (wide[72:, TILE_PX:] == 0).all()  # the second row holds one frame
    assert contact_sheet(solid_frames(2, 32, 24)).size == (48, 32)


def test_the_jpeg_decodes_to_the_sheet_within_its_error(tmp_path: Path) -> None:
    ramp = np.linspace(0, 1, 336)
    frames = np.stack(  # smooth gradients, a different one per frame, as video mostly is
        [
            np.stack(
                [
                    ramp[:, None] * 255 * np.ones(336),
                    ramp[None, :] * 200 * np.ones((336, 1)),
                    np.full((336, 336), 30 * i),
                ],
                -1,
            )
            for i in range(8)
        ]
    ).astype(np.uint8)
    target = tmp_path / "a" / "clip.mp4.jpg"
    size = write_contact_sheet(target, frames)
    assert target.stat().st_size == size and not [p for p in target.parent.iterdir() if p != target]
    with Image.open(target) as image:
        assert image.format == "JPEG"
        shown = np.asarray(image.convert("RGB"), np.int16)
    assert np.abs(shown - np.asarray(contact_sheet(frames))).mean() < 3
    assert len(jpeg_bytes(contact_sheet(frames))) == size
    assert Image.open(io.BytesIO(jpeg_bytes(contact_sheet(np.zeros((1, 8, 8, 3), np.uint8))))).size == (8, 8)


def test_names_mirror_the_video_key_like_the_sidecars() -> None:
    root = Path("/thumbs")
    assert thumbnail_path(root, "/data/a/clip.mp4") == root / "data/a/clip.mp4.jpg"
    assert thumbnail_path(root, "/data/a/clip.mp4", 3) == root / "data/a/clip.mp4.seg0003.jpg"
    assert thumbnail_path(root, "s3://bucket/x/clip.mp4", 0) == root / "s3:/bucket/x/clip.mp4.seg0000.jpg"
    assert thumbnail_path(root, "/data/a.mp4") != thumbnail_path(root, "/data/a.mkv")
