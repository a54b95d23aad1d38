"""`python -m vlmcap` = the `vlmcap` command.

It runs the installed `vlmcap` console script (pyproject.toml) instead of importing the CLI, so the
core package never imports the layer above it (docs/ARCHITECTURE.md).
"""

from importlib.metadata import entry_points

(script,) = entry_points(group="console_scripts", name="vlmcap")
script.load()()
