"""Contact sheets: one small JPEG of exactly the frames the model saw (docs/BATCH.md, "Thumbnails").

Written by the decode worker from the frames it already holds, after the model's own resize and
crop (vlmcap/video/preprocess.py), so a sheet shows what the caption was made from, not a fresh
decode. The frames are tiled in time order, left to right and top to bottom, each scaled down to
at most `TILE_PX` on its long side; the sheet is written atomically, so a reader (the report, a
resumed run) never sees half a file.

A sheet's name mirrors the video's key under the thumbnails folder, as the subtitle sidecars do
(vlmcap/storage/output_names.py): `clip.mp4.jpg`, and `clip.mp4.seg0003.jpg` for the fourth segment.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from vlmcap.storage.files import atomic_write_bytes
from vlmcap.storage.output_names import per_video_path

TILE_PX = 128  # a sheet of 8 CLIP frames is 512x256: enough to tell scenes apart, ~28 KB as JPEG
JPEG_QUALITY = 80


def sheet_columns(frames: int) -> int:
    """Tiles per row: one row up to 4 frames, then about twice as wide as tall (8 frames: 4x2)."""
    return frames if frames <= 4 else max(4, math.ceil(math.sqrt(2 * frames)))


def contact_sheet(frames: np.ndarray, tile_px: int = TILE_PX) -> Image.Image:
    """(T, H, W, 3) uint8 -> the sheet: T tiles on `sheet_columns(T)` columns, black where the grid has no frame.

    The frames are laid out at full size and the grid is scaled down once on uint8 by PIL (a whole-
    factor reduce, then a box filter): one call instead of one per frame, the cheap way to do it in a
    decode worker. A box filter's footprint ends where a tile does, so tiles do not blend, but for
    one pixel at a tile's edge when a frame's size is not a multiple of the whole factor.
    """
    count, height, width, _ = frames.shape
    columns = sheet_columns(count)
    rows = math.ceil(count / columns)
    if rows * columns > count:
        frames = np.concatenate([frames, np.zeros((rows * columns - count, height, width, 3), np.uint8)])
    grid = frames.reshape(rows, columns, height, width, 3).transpose(0, 2, 1, 3, 4)
    image = Image.fromarray(np.ascontiguousarray(grid).reshape(rows * height, columns * width, 3))
    scale = tile_px / max(height, width)
    if scale >= 1:  # never enlarged: a tiny model's frames stay as they are
        return image
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    return image.resize((columns * w, rows * h), Image.Resampling.BOX, reducing_gap=1.0)


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()


def thumbnail_path(directory: Path, key: str, segment: int | None = None) -> Path:
    """Where the sheet of the video known by `key` (its real path or URL), or of one segment, goes."""
    return per_video_path(directory, key, ".jpg" if segment is None else f".seg{segment:04d}.jpg")


def write_contact_sheet(path: Path, frames: np.ndarray) -> int:
    """Write the sheet of `frames` at `path` (folders made), whole or not at all; its size in bytes."""
    data = jpeg_bytes(contact_sheet(frames))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return len(data)
