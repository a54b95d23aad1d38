"""Bundles are data: what `load_bundle`, `vlmcap inspect` and `vlmcap batch` refuse, and hashing once per file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmcap.bundle import hashing, load_bundle
from vlmcap.bundle.hashing import bundle_id, sha256_file
from vlmcap.errors import BundleError


def copy_bundle(tiny_bundle: Path, tmp_path: Path) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    return bundle


def relist(bundle: Path, **changes) -> None:
    """What a forger does: list the files as they are now and recompute the id, so only the rules catch it."""
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest.update(changes)
    files = {}
    for path in sorted(p for p in bundle.rglob("*") if p.name != "bundle.json" and not p.is_dir()):
        rel = path.relative_to(bundle).as_posix()
        regular = path.is_file() and not path.is_symlink()
        files[rel] = {"size": path.lstat().st_size, "sha256": sha256_file(path) if regular else "0" * 64}
    manifest["files"] = files
    manifest["id"] = bundle_id(manifest)
    (bundle / "bundle.json").write_text(json.dumps(manifest))


def refused(bundle: Path, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        load_bundle(bundle)
    result = subprocess.run(
        [sys.executable, "-m", "vlmcap.cli", "inspect", str(bundle)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "vlmcap: error:" in result.stderr


def test_bundle_json_edited_after_export_no_longer_matches_its_id(tiny_bundle, tmp_path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    manifest = json.loads((bundle / "bundle.json").read_text())
    manifest["generation"]["max_new_tokens"] = 4096
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    refused(bundle, "changed after export")


def test_every_field_is_validated_by_name(tiny_bundle, tmp_path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    relist(
        bundle, generation={"max_new_tokens": -1, "temperature": 0.0, "repetition_penalty": 1.0, "stop_token_ids": [1]}
    )
    refused(bundle, r"field generation.max_new_tokens: Input should be greater than or equal to 1")
    bundle = copy_bundle(tiny_bundle, tmp_path / "again")
    relist(bundle, surprise=True)
    refused(bundle, "field surprise: unknown field")


@pytest.mark.parametrize(
    "plant, message",
    [
        (lambda b: (b / "llm" / "modeling_evil.py").write_text("import os\n"), r"modeling_evil.py: a .py file"),
        (lambda b: (b / "llm" / "pytorch_model.bin").write_bytes(b"\x80\x04N."), r"pytorch_model.bin: a .bin file"),
        (lambda b: (b / "llm" / "link.json").symlink_to("/etc/hostname"), r"link.json: a symlink"),
        (lambda b: os.mkfifo(b / "llm" / "pipe.txt"), r"pipe.txt: not a regular file"),
    ],
    ids=["python", "pickle", "symlink-outside", "fifo"],
)
def test_code_links_and_special_files_are_refused_without_hanging(tiny_bundle, tmp_path, plant, message) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    plant(bundle)
    relist(bundle)
    start = time.monotonic()
    refused(bundle, message)
    assert time.monotonic() - start < 60


def test_bundle_json_itself_must_be_a_regular_file(tiny_bundle, tmp_path) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    (bundle / "bundle.json").unlink()
    os.mkfifo(bundle / "bundle.json")
    refused(bundle, "bundle.json: not a regular file")


def test_a_bundle_that_asks_to_run_its_own_code_never_does(tiny_bundle, tmp_path) -> None:
    """auto_map + a modeling file: transformers would ask on stdin, and "y" would import it."""
    bundle = copy_bundle(tiny_bundle, tmp_path)
    marker = tmp_path / "code-ran"
    config = json.loads((bundle / "llm" / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    (bundle / "llm" / "config.json").write_text(json.dumps(config))
    relist(bundle)
    refused(bundle, "config.json: has an auto_map")
    (bundle / "llm" / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    relist(bundle)
    out = tmp_path / "c.jsonl"
    result = subprocess.run(
        [sys.executable, "-m", "vlmcap.cli", "batch", str(tmp_path), "--out", str(out), "--engine", str(bundle)],
        input="y\ny\ny\n",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert not marker.exists()


def test_files_are_hashed_once_per_identity_and_rehashed_when_touched(tiny_bundle, tmp_path, monkeypatch) -> None:
    bundle = copy_bundle(tiny_bundle, tmp_path)
    hashed: list[str] = []

    def counting(path):
        hashed.append(Path(path).name)
        return sha256_file(path)

    monkeypatch.setattr(hashing, "sha256_file", counting)
    load_bundle(bundle)
    assert len(hashed) == len(json.loads((bundle / "bundle.json").read_text())["files"])
    assert (tmp_path / ".bundle.verified.json").is_file()  # beside the bundle, not in it
    hashed.clear()
    load_bundle(bundle)
    assert hashed == []  # nothing changed: nothing re-hashed
    # Same size, same mtime, different content: what a careful tamperer leaves. ctime still moves.
    target = bundle / "llm" / "model.safetensors"
    st = target.stat()
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    time.sleep(0.01)
    target.write_bytes(bytes(data))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(BundleError, match=r"model\.safetensors: sha256 does not match"):
        load_bundle(bundle)
    assert hashed == ["model.safetensors"]
