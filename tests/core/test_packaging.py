"""The built wheel: `vlmcap` is its only top-level package, the stage folders install under it, and it imports."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib
from repo_paths import REPO

# Source folder -> the package path it installs as (pyproject.toml [tool.setuptools] package-dir).
FOLDERS = {"vlmcap": "vlmcap", "training": "vlmcap/training", "export": "vlmcap/export", "engines": "vlmcap/engines"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built from a copy of the sources, so the build leaves nothing in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for folder in FOLDERS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out)]
    subprocess.run([*cmd, str(src)], check=True, capture_output=True, cwd=tmp)
    (built,) = out.glob("vlmcap-*.whl")
    return built


def test_the_wheel_holds_one_top_level_package_with_every_module(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top_level == {"vlmcap"}
    for folder, package in FOLDERS.items():
        for path in (REPO / folder).rglob("*.py"):
            assert f"{package}/{path.relative_to(REPO / folder).as_posix()}" in names
    assert "vlmcap/presets/config-tiny.yaml" in names  # package data too
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "vlmcap = vlmcap.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_the_installed_wheel_imports_its_stages_from_itself(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(wheel)]
    subprocess.run(pip, check=True, capture_output=True)
    # Outside the checkout, with the wheel's copy first on the path: every stage resolves inside it,
    # and a user's own top-level `training` package cannot shadow ours.
    (tmp_path / "training").mkdir()
    (tmp_path / "training" / "__init__.py").write_text("raise ImportError('the user project shadowed vlmcap')\n")
    code = (
        "import vlmcap.cli, vlmcap.training.trainer, vlmcap.export.exporter, vlmcap.engines.batch.run_batch; "
        "print(vlmcap.training.trainer.__file__, vlmcap.engines.batch.run_batch.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": f"{target}{os.pathsep}{tmp_path}"}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert all(Path(p).is_relative_to(target) for p in done.stdout.split())


def test_every_package_states_its_role_and_the_architecture_lists_it() -> None:
    """Each folder's `__init__.py` says its role (a docstring), every folder with Python files is a
    declared package (none ships half-installed), and docs/ARCHITECTURE.md lists exactly those packages."""
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in FOLDERS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            dotted = ".".join([*package.split("/"), *init.parent.relative_to(REPO / folder).parts])
            found.add(dotted)
            assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(REPO)} says no role"
        for module in (REPO / folder).rglob("*.py"):
            assert (module.parent / "__init__.py").exists(), f"{module.relative_to(REPO)} is in no package"
    assert found == declared
    architecture = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    listed = set(re.findall(r"^\| `(vlmcap(?:\.\w+)*)` \|", architecture, flags=re.MULTILINE))
    assert listed == declared
