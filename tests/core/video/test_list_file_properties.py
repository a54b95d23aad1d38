"""Properties of the list-file parser (vlmcap/video/discovery.py) over list files hypothesis makes
up: whatever the byte-order mark, line endings, blank and comment lines, a list yields exactly its
entries, in order, once each."""

from __future__ import annotations

import os
import string
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmcap.video.discovery import iter_video_paths

name_chars = st.sampled_from(string.ascii_letters + string.digits + " _-()[]가나다é")
entries = st.builds(
    lambda folder, stem, ext: f"{folder}{stem}{ext}",
    st.sampled_from(["", "sub/", "깊은/폴더/"]),
    st.text(name_chars, min_size=1, max_size=12).map(str.strip).filter(bool),
    st.sampled_from([".mp4", ".MKV", ".webm", ".mov"]),
)
noise = st.sampled_from(["", "   ", "\t", "# a comment", "   # indented comment", "#videos/x.mp4"])
endings = st.sampled_from(["\n", "\r\n", "\r"])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(st.tuples(st.booleans(), entries, noise), max_size=30),
    bom=st.booleans(),
    ending=endings,
    last_newline=st.booleans(),
    pad=st.sampled_from(["", " ", "\t "]),
)
def test_a_list_yields_exactly_its_entries_in_order_once(
    items: list[tuple[bool, str, str]], bom: bool, ending: str, last_newline: bool, pad: str, tmp_path: Path
) -> None:
    lines = []
    for is_entry, entry, filler in items:
        lines.append(f"{pad}{entry}{pad}" if is_entry else filler)
    text = ("\ufeff" if bom else "") + ending.join(lines) + (ending if last_newline and lines else "")
    listing = tmp_path / "videos.txt"
    listing.write_bytes(text.encode("utf-8"))

    found = list(iter_video_paths([str(listing)]))
    wanted = list(dict.fromkeys(os.path.join(str(tmp_path), e) for is_entry, e, _ in items if is_entry))
    assert found == wanted
