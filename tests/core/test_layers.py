"""The one-way layering (docs/ARCHITECTURE.md) holds for every import in the tree, and the check can fail."""

from __future__ import annotations

from pathlib import Path

from import_layers import modules, package_dirs, violations
from repo_paths import REPO


def test_core_stages_and_cli_import_one_way_only() -> None:
    found = violations(package_dirs(REPO / "pyproject.toml"))
    assert not found, "\n".join(map(str, found))


def test_every_module_is_checked_under_its_installed_name() -> None:
    names = dict(modules(package_dirs(REPO / "pyproject.toml")))
    assert names["vlmcap.engines.batch.run_batch"] == REPO / "engines" / "batch" / "run_batch.py"
    assert names["vlmcap.training"] == REPO / "training" / "__init__.py"
    assert "vlmcap.bundle.manifest" in names and "vlmcap.cli" in names
    assert not [n for n in names if n.split(".")[0] != "vlmcap"]


def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    names = {"vlmcap": "vlmcap", "vlmcap.training": "training", "vlmcap.export": "export", "vlmcap.engines": "engines"}
    return {package: tmp_path / folder for package, folder in names.items()}


def test_each_kind_of_violation_is_reported(tmp_path: Path) -> None:
    dirs = _tree(
        tmp_path,
        {
            "vlmcap/__init__.py": "def __getattr__(name):\n    import vlmcap.engines.api as api\n",  # lazy: counts
            "vlmcap/storage/home.py": "import vlmcap.engines.api\n",
            "vlmcap/config/schema.py": "def f():\n    from vlmcap.engines import batch\n",  # lazy import: still counts
            "vlmcap/cli/__init__.py": "import vlmcap.engines.batch.caption_videos, vlmcap.training\n",  # allowed
            "training/__init__.py": "",
            "training/trainer.py": "from ..export import bundle\n",  # relative, into another stage
            "export/__init__.py": "",
            "export/bundle.py": "from vlmcap import cli\n",
            "engines/__init__.py": "",
            "engines/batch/caption_videos.py": (
                "from training.trainer import run\nfrom . import lock\nimport vlmcap.config.schema\n"
            ),
            "engines/batch/lock.py": "from vlmcap.cli import main\n",
        },
    )
    found = sorted((v.module, v.imported) for v in violations(dirs))
    assert found == [
        ("vlmcap", "vlmcap.engines.api"),
        ("vlmcap.config.schema", "vlmcap.engines"),
        ("vlmcap.config.schema", "vlmcap.engines.batch"),
        ("vlmcap.engines.batch.caption_videos", "training.trainer"),
        ("vlmcap.engines.batch.caption_videos", "training.trainer.run"),
        ("vlmcap.engines.batch.lock", "vlmcap.cli"),
        ("vlmcap.engines.batch.lock", "vlmcap.cli.main"),
        ("vlmcap.export.bundle", "vlmcap.cli"),
        ("vlmcap.storage.home", "vlmcap.engines.api"),
        ("vlmcap.training.trainer", "vlmcap.export"),
        ("vlmcap.training.trainer", "vlmcap.export.bundle"),
    ]
