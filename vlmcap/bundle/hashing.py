"""The bundle's files: what may be in a bundle, their size and sha256, and the id over the manifest.

A bundle is data (docs/EXPORT.md, "Bundles are data"): regular files only, no symlinks, devices
or FIFOs (reading one could hang or leave the bundle), no Python files and no pickle-format
weights (loading either runs code). Files are opened without following links and without
blocking, and checked again after opening, so a file swapped for something else mid-check is
refused too.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vlmcap.bundle.manifest import MANIFEST, FileEntry
from vlmcap.errors import BundleError

_CHUNK = 1 << 20
# Loading any of these runs code: Python modules (trust_remote_code), pickle-format weights.
CODE_SUFFIXES = frozenset({".py", ".pyc", ".so", ".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib"})


def open_regular(path: Path) -> int:
    """A read-only fd on `path`, which must be a regular file (not a link, FIFO or device)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise BundleError(f"{path}: cannot open ({e.strerror}); a bundle holds regular files only") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise BundleError(f"{path}: not a regular file; a bundle holds regular files only")
    return fd


def read_regular(path: Path) -> bytes:
    fd = open_regular(path)
    with os.fdopen(fd, "rb") as f:
        return f.read()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with os.fdopen(open_regular(path), "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)  # hashlib releases the GIL on large buffers: threads hash files in parallel
    return h.hexdigest()


def _bundle_files(root: Path) -> Iterator[Path]:
    """Every file under root except bundle.json, sorted; a link or special file is refused."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                raise BundleError(f"{path}: a symlink; a bundle holds regular files only (copy the file in)")
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                raise BundleError(f"{path}: not a regular file; a bundle holds regular files only")
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.relative_to(root).as_posix() != MANIFEST:
                yield path


def check_data_only(root: Path, names: list[str]) -> None:
    """Refuse what would run code when the bundle is loaded: Python and pickle files, `auto_map`."""
    for rel in names:
        path = root / rel
        if path.suffix.lower() in CODE_SUFFIXES:
            raise BundleError(f"{path}: a {path.suffix} file; bundles are data (safetensors, ONNX, JSON, text) only")
        if path.name.endswith("config.json"):  # where transformers looks for auto_map
            try:
                data = json.loads(read_regular(path))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise BundleError(f"{path}: not valid JSON ({e})") from None
            if isinstance(data, dict) and "auto_map" in data:
                raise BundleError(
                    f"{path}: has an auto_map (model code to import); vlmcap bundles carry no code. "
                    "Re-export from a model transformers ships, or load the model yourself with "
                    "model.llm.trust_remote_code for a model you trust"
                )


def file_table(root: Path, threads: int = 4) -> dict[str, FileEntry]:
    """{relative posix path: size and sha256} for every file under root except bundle.json."""
    paths = list(_bundle_files(root))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = list(pool.map(sha256_file, paths))
    return {
        p.relative_to(root).as_posix(): FileEntry(size=p.stat().st_size, sha256=d)
        for p, d in zip(paths, digests, strict=True)
    }


def bundle_id(manifest: Mapping[str, Any]) -> str:
    """Short content id: changes whenever any file or any manifest field changes."""
    canonical = json.dumps({k: v for k, v in manifest.items() if k != "id"}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def file_stamp(path: Path) -> list[int]:
    """What changes whenever a file's content can have changed: device, inode, size, mtime and ctime.

    ctime cannot be set back by the file's owner (only the clock moves it), so a file rewritten
    and given its old mtime still gets a new stamp.
    """
    st = os.lstat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def verify_files(
    root: Path, listed: Mapping[str, FileEntry], known: Mapping[str, Any] | None = None, threads: int = 4
) -> dict[str, list[int]]:
    """Raise BundleError naming the first file that is missing, extra, truncated or changed.

    `known`: {relative path: stamp} of files verified before against these same hashes; a file
    whose stamp is unchanged is not hashed again. Returns the stamps of every file, now verified.
    """
    known = known or {}
    present = {p.relative_to(root).as_posix(): p for p in _bundle_files(root)}
    for rel in sorted(set(listed) - set(present)):
        raise BundleError(f"{root / rel}: listed in {MANIFEST} but missing; the bundle is incomplete")
    for rel in sorted(set(present) - set(listed)):
        raise BundleError(f"{root / rel}: not listed in {MANIFEST}; remove it or re-export the bundle")
    check_data_only(root, sorted(listed))
    stamps = {rel: file_stamp(present[rel]) for rel in listed}
    for rel, entry in sorted(listed.items()):
        if stamps[rel][2] != entry.size:
            raise BundleError(
                f"{root / rel}: {stamps[rel][2]} bytes, {MANIFEST} says {entry.size}; the bundle is damaged"
            )
    names = sorted(rel for rel in listed if known.get(rel) != stamps[rel])
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = pool.map(sha256_file, [present[n] for n in names])
        for rel, digest in zip(names, digests, strict=True):
            if digest != listed[rel].sha256:
                raise BundleError(f"{root / rel}: sha256 does not match {MANIFEST}; the file was changed")
    return stamps
