"""vlmcap/display_text.py: terminal columns in display cells, and no character cut in half."""

from __future__ import annotations

import pytest

from vlmcap.cli.demo import table_row
from vlmcap.display_text import cells, drop_cut_character, fit


@pytest.mark.parametrize(
    "text", ["", "red circle", "빨간색 원이 왼쪽으로 움직입니다", "노란색 " * 22, "a\nb\tc", "e\u0301"]
)
@pytest.mark.parametrize("width", [1, 5, 12, 44])
def test_fit_fills_exactly_its_cells_and_never_splits_a_character(text: str, width: int) -> None:
    fitted = fit(text, width)
    assert cells(fitted) == width
    assert "\n" not in fitted and "\t" not in fitted
    shown = fitted.rstrip().removesuffix("…")
    assert " ".join(text.split()).startswith(shown)  # a prefix of whole characters, nothing made up


def test_a_wide_character_that_would_straddle_the_edge_goes_whole() -> None:
    assert fit("가나다", 4) == "가… "  # "가나" would need 4 cells before the ellipsis
    assert fit("가나다", 6) == "가나다"
    assert cells("가a") == 3


def test_the_demo_table_lines_up_korean_and_latin_rows() -> None:
    rows = [
        table_row("video", "generated caption", "reference"),
        table_row(
            "00017.mp4",
            "빨간색 원이 왼쪽에서 오른쪽으로 천천히 움직입니다 그리고 또",
            "파란색 사각형이 위로 움직입니다",
        ),
        table_row("00018.mp4", "a red circle moves", "노란색 " * 22),
    ]
    # The reference column starts at the same cell on every row: 12 + 1 + 44 + 1.
    starts = [cells(row[: row.index(ref)]) for row, ref in zip(rows, ["reference", "파란색", "노란색"], strict=True)]
    assert starts == [58, 58, 58]
    assert all(cells(row) <= 12 + 1 + 44 + 1 + 44 for row in rows)


def test_a_generation_cut_inside_a_character_loses_only_that_remnant() -> None:
    cut = "움직".encode()[:-1].decode("utf-8", errors="replace")  # what a byte-level decoder gives
    assert cut.endswith("\ufffd")
    assert drop_cut_character(cut) == "움"
    assert drop_cut_character("움직입니다") == "움직입니다"
