"""Reads every import in the package tree and reports the ones that break the layering (docs/ARCHITECTURE.md).

    core (vlmcap/, but the CLI)  <-  each stage (vlmcap.training, .export, .engines)  <-  the CLI (vlmcap.cli)

The core imports no stage and no join; a stage imports the core and itself, never another
stage or the CLI; nothing imports the stage folders by their bare top-level names. Imports inside
functions count as much as those at the top of a file. No exceptions: the Python API is imported
from its stage (`from vlmcap.engines import Captioner`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tomllib

STAGES = ("vlmcap.training", "vlmcap.export", "vlmcap.engines")
JOINS = ("vlmcap.cli",)  # joins the stages: the command line


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line}: imports {self.imported}: {self.rule}"


def package_dirs(pyproject: Path) -> dict[str, Path]:
    """Package name -> source folder, from [tool.setuptools] package-dir."""
    mapping = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["package-dir"]
    return {package: pyproject.parent / folder for package, folder in mapping.items()}


def modules(dirs: dict[str, Path]) -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) for every .py file; a folder mapped to its own package is skipped
    under its parent so each file is named once, by its installed name."""
    roots = {folder.resolve() for folder in dirs.values()}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            if any(parent.resolve() in roots and parent.resolve() != folder.resolve() for parent in path.parents):
                continue
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            yield ".".join([package, *parts]), path


def imports(module: str, path: Path) -> Iterator[tuple[int, str]]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # `from vlmcap import engines` imports the stage too
                yield node.lineno, f"{name}.{alias.name}"


def _owner(name: str) -> str:
    """'join' (the CLI), a stage package, 'core' (the rest of vlmcap), or '' (not ours)."""
    if any(name == join or name.startswith(join + ".") for join in JOINS):
        return "join"
    for stage in STAGES:
        if name == stage or name.startswith(stage + "."):
            return stage
    return "core" if name == "vlmcap" or name.startswith("vlmcap.") else ""


def violations(dirs: dict[str, Path]) -> list[Violation]:
    bare = {stage.rsplit(".", 1)[1] for stage in STAGES}
    found = []
    for module, path in modules(dirs):
        layer = _owner(module)
        for line, name in imports(module, path):
            target = _owner(name)
            if name.split(".")[0] in bare:
                found.append(Violation(module, line, name, "a stage by its bare folder name; use vlmcap.<stage>"))
            elif layer == "core" and target in ("join", *STAGES):
                found.append(Violation(module, line, name, "the core never imports a stage or the CLI"))
            elif layer in STAGES and target == "join":
                found.append(Violation(module, line, name, "a stage never imports the CLI"))
            elif layer in STAGES and target in STAGES and target != layer:
                found.append(Violation(module, line, name, "stages never import each other"))
    return found
