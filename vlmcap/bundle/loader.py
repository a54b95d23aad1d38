"""Reading, verifying and writing an engine bundle (docs/EXPORT.md).

Everything that reads a bundle goes through `load_bundle`, which checks the format version,
validates bundle.json field by field, and checks the size and sha256 of every file the manifest
lists, refusing files it does not list (an extra `*.safetensors` under llm/ would be loaded by
vLLM). This module imports no torch: an edge box that only runs ONNX Runtime can load a bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from vlmcap.bundle.hashing import bundle_id, file_table, verify_files
from vlmcap.bundle.manifest import FORMAT_VERSION, LLM_DIR, MANIFEST, BundleManifest
from vlmcap.errors import BundleError


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
    """bundle.json of `root`, format version checked and every field validated; files are not
    verified (see `load_bundle`)."""
    root = Path(root)
    path = root / MANIFEST
    if not root.is_dir():
        raise BundleError(f"{root}: no engine bundle there (run `vlmcap export` first)")
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: missing; {root} is not an engine bundle") from None
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
        return BundleManifest.model_validate(data)
    except ValidationError as e:
        raise BundleError(_validation_message(path, e)) from None


def load_bundle(root: str | Path, verify: bool = True) -> Bundle:
    """Open a bundle: format version and fields always checked; with `verify`, every file's size and sha256 too."""
    root = Path(root).expanduser()
    manifest = read_manifest(root)
    if verify:
        verify_files(root, manifest.files)
    return Bundle(root.resolve(), manifest)
