"""Text as a terminal shows it: columns counted in display cells, and no character cut in half.

A Hangul syllable takes two terminal cells, so `f"{caption:<44}"` (which counts characters) puts
every column after a Korean caption out of line; `fit` counts cells. A caption decoded from a
generation cut at `max_new_tokens` can end inside a character's bytes (byte-level BPE splits
Hangul into 3 bytes), which decodes to U+FFFD; `drop_cut_character` removes that remnant.
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "…"
REPLACEMENT_CHARACTER = "\ufffd"


def cell_width(char: str) -> int:
    """Terminal cells of one character: 2 for East Asian wide/full-width, 0 for combining marks."""
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cells(text: str) -> int:
    return sum(cell_width(c) for c in text)


def fit(text: str, width: int) -> str:
    """`text` on one line in exactly `width` cells: padded with spaces, or cut between characters
    with an ellipsis (a wide character that would straddle the edge goes whole)."""
    text = " ".join(text.split())  # one line: newlines and tabs would break the table
    if cells(text) <= width:
        return text + " " * (width - cells(text))
    kept, used = [], 0
    for char in text:
        if used + cell_width(char) > width - 1:
            break
        kept.append(char)
        used += cell_width(char)
    return "".join(kept) + ELLIPSIS + " " * (width - 1 - used)


def drop_cut_character(text: str) -> str:
    """Text without the U+FFFD a generation cut inside a character's bytes leaves at its end."""
    return text.rstrip(REPLACEMENT_CHARACTER)
