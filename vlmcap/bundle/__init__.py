"""The engine bundle format (docs/EXPORT.md): a typed bundle.json, its file hashes, load and verify.

A core contract: the export stage writes bundles through it and the engines read them through
it, so neither stage imports the other.
"""

from vlmcap.bundle.loader import Bundle, load_bundle, read_manifest, write_manifest
from vlmcap.bundle.manifest import (
    FORMAT_VERSION,
    LLM_DIR,
    MANIFEST,
    REFERENCE_DIR,
    VISION_ONNX,
    BundleManifest,
)

__all__ = [
    "FORMAT_VERSION",
    "LLM_DIR",
    "MANIFEST",
    "REFERENCE_DIR",
    "VISION_ONNX",
    "Bundle",
    "BundleManifest",
    "load_bundle",
    "read_manifest",
    "write_manifest",
]
