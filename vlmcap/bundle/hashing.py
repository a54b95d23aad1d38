"""The bundle's file table and id: size and sha256 of every file, and a hash over the manifest."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from vlmcap.bundle.manifest import MANIFEST, FileEntry
from vlmcap.errors import BundleError

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)  # hashlib releases the GIL on large buffers: threads hash files in parallel
    return h.hexdigest()


def _bundle_files(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.relative_to(root).as_posix() != MANIFEST:
                yield path


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


def verify_files(root: Path, listed: Mapping[str, FileEntry], threads: int = 4) -> None:
    """Raise BundleError naming the first file that is missing, extra, truncated or changed."""
    present = {p.relative_to(root).as_posix(): p for p in _bundle_files(root)}
    for rel in sorted(set(listed) - set(present)):
        raise BundleError(f"{root / rel}: listed in {MANIFEST} but missing; the bundle is incomplete")
    for rel in sorted(set(present) - set(listed)):
        raise BundleError(f"{root / rel}: not listed in {MANIFEST}; remove it or re-export the bundle")
    for rel, entry in sorted(listed.items()):
        size = present[rel].stat().st_size
        if size != entry.size:
            raise BundleError(f"{root / rel}: {size} bytes, {MANIFEST} says {entry.size}; the bundle is damaged")
    names = sorted(listed)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = pool.map(sha256_file, [present[n] for n in names])
        for rel, digest in zip(names, digests, strict=True):
            if digest != listed[rel].sha256:
                raise BundleError(f"{root / rel}: sha256 does not match {MANIFEST}; the file was changed")
