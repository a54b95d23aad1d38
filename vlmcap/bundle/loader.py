"""Reading, verifying and writing an engine bundle (docs/EXPORT.md, "Loading a bundle").

Everything that reads a bundle goes through `load_bundle`:

- bundle.json must be a regular file, of a known `format_version`, with every field valid, and
  its `id` must be the hash of its own content (the id covers every field and every file hash,
  so an edited bundle.json no longer matches the id the records carry);
- every listed file must be a regular file inside the bundle with the listed size and sha256;
  unlisted files are refused (vLLM would load a stray `*.safetensors`), and so is anything that
  would run code on load (vlmcap.bundle.hashing);
- hashing 16 GB on every nightly run is avoided: after a full check, the stamp of every file
  (inode, size, mtime, ctime) is recorded beside the bundle, and a file with the same stamp is not
  hashed again. Any write to a file changes its ctime, so a changed file is always re-hashed.

This module imports no torch: an edge box that only runs ONNX Runtime can load a bundle with it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmcap.bundle.hashing import bundle_id, file_table, read_regular, verify_files
from vlmcap.bundle.manifest import FORMAT_VERSION, LLM_DIR, MANIFEST, BundleManifest
from vlmcap.errors import BundleError
from vlmcap.storage.files import atomic_write_text

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bundle:
    """A loaded, verified bundle: its directory and its manifest."""

    root: Path
    manifest: BundleManifest

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def llm_dir(self) -> Path:
        return self.root / LLM_DIR


def write_manifest(root: Path, manifest: BundleManifest) -> BundleManifest:
    """Hash every file under root and write bundle.json; returns the manifest as written (id set)."""
    hashed = manifest.model_copy(update={"files": file_table(root), "id": ""})
    hashed = BundleManifest.model_validate({**hashed.to_json_dict(), "id": bundle_id(hashed.to_json_dict())})
    (root / MANIFEST).write_text(json.dumps(hashed.to_json_dict(), indent=2, ensure_ascii=False) + "\n", "utf-8")
    return hashed


def _validation_message(path: Path, error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(top level)"
    problem = "unknown field" if first["type"] == "extra_forbidden" else first["msg"]
    more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
    return f"{path}: field {field}: {problem}{more}"


def read_manifest(root: str | Path) -> BundleManifest:
    """bundle.json of `root`: format version, every field and the id checked; files are not
    verified (see `load_bundle`)."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no engine bundle there (run `vlmcap export` first)")
    if not path.exists() and not path.is_symlink():
        raise BundleError(f"{path}: missing; {root} is not an engine bundle")
    try:
        data: Any = json.loads(read_regular(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: format_version {version!r} is not supported by this vlmcap (reads {FORMAT_VERSION}); "
            "re-export the bundle with this version"
        )
    try:
        manifest = BundleManifest.model_validate(data)
    except ValidationError as e:
        raise BundleError(_validation_message(path, e)) from None
    if bundle_id(data) != manifest.id:
        raise BundleError(
            f"{path}: changed after export (its content hashes to {bundle_id(data)}, not to its id {manifest.id}); "
            "re-export the bundle"
        )
    return manifest


def _stamps_path(root: Path) -> Path:
    return root.parent / f".{root.name}.verified.json"


def _known_stamps(root: Path, manifest: BundleManifest) -> dict[str, Any]:
    try:
        data = json.loads(_stamps_path(root).read_text(encoding="utf-8"))
        return data["files"] if data.get("bundle") == manifest.id else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no record (or an unreadable one): hash everything


def _record_stamps(root: Path, manifest: BundleManifest, stamps: dict[str, list[int]]) -> None:
    try:
        atomic_write_text(_stamps_path(root), json.dumps({"bundle": manifest.id, "files": stamps}) + "\n")
    except OSError as e:  # a read-only bundle location: it is simply hashed in full every time
        log.debug("%s: cannot record verified stamps (%s)", root, e.strerror)


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle: bundle.json always checked; with `verify`, every file too (hashed unless its
    stamp shows it unchanged since it was last verified)."""
    root = Path(root).expanduser().resolve()
    manifest = read_manifest(root)
    if verify:
        known = _known_stamps(root, manifest)
        stamps = verify_files(root, manifest.files, known)
        if stamps != known:
            _record_stamps(root, manifest, stamps)
    return Bundle(root, manifest)
