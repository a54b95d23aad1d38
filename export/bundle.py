"""The engine bundle on disk (DESIGN.md section 3): bundle.json, its file hashes, and the loader.

Everything that reads a bundle goes through `load_bundle`, which checks the format version and
the size and sha256 of every file the manifest lists, and refuses files it does not list (an
extra `*.safetensors` under llm/ would be loaded by vLLM). This module imports no torch: an edge
box that only runs ONNX Runtime can load a bundle with it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmcap.errors import BundleError

FORMAT_VERSION = 1
MANIFEST = "bundle.json"
VISION_ONNX = "vision.onnx"
LLM_DIR = "llm"
REFERENCE_DIR = "reference"  # the run's projector weights + config, for the PyTorch vision engine
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


def file_table(root: Path, threads: int = 4) -> dict[str, dict[str, Any]]:
    """{relative posix path: {"size", "sha256"}} for every file under root except bundle.json."""
    paths = list(_bundle_files(root))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = list(pool.map(sha256_file, paths))
    return {
        p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": d}
        for p, d in zip(paths, digests, strict=True)
    }


def bundle_id(manifest: dict[str, Any]) -> str:
    """Short content id: changes whenever any file or any manifest field changes."""
    canonical = json.dumps({k: v for k, v in manifest.items() if k != "id"}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def write_manifest(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file under root and write bundle.json; returns the manifest as written."""
    manifest = {**manifest, "format_version": FORMAT_VERSION, "files": file_table(root)}
    manifest["id"] = bundle_id(manifest)
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: its directory and its manifest."""

    root: Path
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.manifest["id"]

    @property
    def vision_onnx(self) -> Path:
        return self.root / VISION_ONNX

    @property
    def llm_dir(self) -> Path:
        return self.root / LLM_DIR

    def __getitem__(self, key: str) -> Any:
        return self.manifest[key]


def read_manifest(root: str | Path) -> dict[str, Any]:
    """bundle.json of `root`, format version checked; files are not verified (see `load_bundle`)."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no engine bundle there (run `vlmcap export` first)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; {root} is not an engine bundle") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not supported by this vlmcap (reads {FORMAT_VERSION}); "
            "re-export the bundle with this version"
        )
    for key in ("id", "files", "vision", "llm", "prompt", "generation"):
        if key not in manifest:
            raise BundleError(f"{path}: required field {key!r} is missing")
    return manifest


def verify_files(root: Path, manifest: dict[str, Any], threads: int = 4) -> None:
    """Raise BundleError naming the first file that is missing, extra, truncated or changed."""
    listed: dict[str, dict[str, Any]] = manifest["files"]
    present = {p.relative_to(root).as_posix(): p for p in _bundle_files(root)}
    for rel in sorted(set(listed) - set(present)):
        raise BundleError(f"{root / rel}: listed in {MANIFEST} but missing; the bundle is incomplete")
    for rel in sorted(set(present) - set(listed)):
        raise BundleError(f"{root / rel}: not listed in {MANIFEST}; remove it or re-export the bundle")
    for rel, entry in sorted(listed.items()):
        size = present[rel].stat().st_size
        if size != entry["size"]:
            raise BundleError(f"{root / rel}: {size} bytes, {MANIFEST} says {entry['size']}; the bundle is damaged")
    names = sorted(listed)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        digests = pool.map(sha256_file, [present[n] for n in names])
        for rel, digest in zip(names, digests, strict=True):
            if digest != listed[rel]["sha256"]:
                raise BundleError(f"{root / rel}: sha256 does not match {MANIFEST}; the file was changed")


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle: format version always checked; with `verify`, every file's size and sha256 too."""
    root = Path(root).expanduser()
    manifest = read_manifest(root)
    if verify:
        verify_files(root, manifest)
    return Bundle(root.resolve(), manifest)
