"""Put a finished bundle directory in place without ever exposing a half-written one.

The bundle is built in a hidden sibling directory (same filesystem, so renames are atomic) and
then renamed over the destination. Replacing an existing bundle uses Linux `renameat2` with
RENAME_EXCHANGE, which swaps the two directories in one step: a reader sees the old bundle or the
new one, never neither. Where that call is missing, the old bundle is first moved aside and is
put back if the second rename fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from vlmcap.storage.files import fsync_path, fsync_tree, remove_stale_temporaries, temp_sibling

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths; False where the platform or filesystem cannot."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name:
        return False
    libc = ctypes.CDLL(libc_name, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextlib.contextmanager
def staging_directory(dest: Path) -> Iterator[Path]:
    """A fresh hidden directory beside `dest`; removed on any failure, published by `publish`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dest)  # staging directories of exports that were killed
    stage = temp_sibling(dest)
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # gone after publish; leftovers after a failure


def publish(stage: Path, dest: Path) -> None:
    """Move the finished `stage` to `dest` (a real path, symlinks resolved), replacing what was there."""
    fsync_tree(stage)  # the data must be on disk before the rename makes it visible
    if not dest.exists():
        os.rename(stage, dest)
    elif dest.is_dir() and _exchange(stage, dest):
        shutil.rmtree(stage)  # now holds the previous bundle
    else:
        aside = temp_sibling(dest, "old")
        os.rename(dest, aside)
        try:
            os.rename(stage, dest)
        except OSError:
            os.rename(aside, dest)
            raise
        shutil.rmtree(aside) if aside.is_dir() else aside.unlink()
    fsync_path(dest.parent)
