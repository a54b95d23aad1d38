"""What every static page vlmcap writes shares: built beside its folder and renamed into place whole,
data as JavaScript files, the assets copied from the package (docs/BATCH.md, "Looking at a night").

Data goes in `.js` files that call a global function (`vlmcapPage({...})`): browsers load those by
`<script>` tags from `file://`, where `fetch` is refused, so the pages open on an offline machine
with no server.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vlmcap.engines.outputs.page_fields import json_text
from vlmcap.storage.files import replace_dir, temp_sibling
from vlmcap.storage.output_guard import Reads, check_apart, check_replaceable, real, write_marker

COMMON_ASSETS = ("common.js", "report.css")


def check_site_folder(out: Path, overwrite: bool, command: str, reads: Reads = (), flag: str = "--out") -> None:
    """Before any work: `out` is apart from what the command `reads` (its inputs, the folders the page
    links to) and free for `vlmcap COMMAND` to write whole (vlmcap/storage/output_guard.py): new, empty, or with
    `--overwrite` a folder the same command wrote and nothing else."""
    check_apart(flag, out, reads, folder=True)
    check_replaceable(flag, out, command, overwrite)


@contextmanager
def building_site(out: Path, command: str) -> Iterator[Path]:
    """A fresh folder beside `out` to build the site in; it replaces `out` when the block ends
    normally and is removed when it raises, so `out` is the old site or the new one, never half.
    The folder is absolute: files written into it by path (contact sheets) are linked relative to it.
    A symlinked `out` is built where it points; the finished site names `command` in its marker."""
    final = real(out)
    tmp = temp_sibling(final)
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "data").mkdir(parents=True)
    try:
        yield tmp
        write_marker(tmp, command)
        replace_dir(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def data_script(call: str, data: Any) -> str:
    # JSON is JavaScript; in a .js file loaded by src, no text in it can end a <script> element.
    # Every text in it is UTF-8 (a non-UTF-8 file name shown escaped: engines/outputs/page_fields.py).
    return f"{call}({json_text(data, separators=(',', ':'))});\n"


def copy_assets(site: Path, page: str, scripts: tuple[str, ...]) -> None:
    """The page (as `index.html`), its own scripts and what all pages share, from the package."""
    assets = resources.files("vlmcap.engines.outputs") / "report_assets"
    (site / "index.html").write_bytes((assets / page).read_bytes())
    for name in (*COMMON_ASSETS, *scripts):
        (site / name).write_bytes((assets / name).read_bytes())


def file_url(path: str) -> str | None:
    """A link a browser opens from file://: remote URLs as they are, local paths as file: URLs."""
    if path.startswith(("http://", "https://")):
        return path
    if "://" in path:  # s3://, gs://: nothing a browser opens
        return None
    try:  # a non-UTF-8 name's bytes percent-encoded, as the file system holds them
        return Path(os.path.abspath(path)).as_uri()
    except UnicodeEncodeError:  # a lone surrogate that is no undecodable byte: names no file
        return None


def sheet_link(path: Any, site: Path | None = None) -> dict[str, Any]:
    """A contact sheet's link, relative when it lies inside `site` (the page can be moved with it);
    `thumbnail_missing` when the file named is gone since the run (the page shows a placeholder that
    says so, instead of a request that fails)."""
    if not isinstance(path, str) or not path:
        return {"thumbnail": None}
    if "://" not in path and not os.path.isfile(path):
        return {"thumbnail": None, "thumbnail_missing": True}
    if site is not None and Path(path).is_relative_to(site):
        return {"thumbnail": quote(os.fsencode(Path(path).relative_to(site).as_posix()))}  # bytes: any name
    return {"thumbnail": file_url(path)}
