"""The `vlmcap` command line: the only layer that joins the stages (docs/ARCHITECTURE.md).

Commands are thin: the work lives in library functions. Stage packages (vlmcap.training,
vlmcap.export, vlmcap.engines) are imported inside their commands only, so `vlmcap --help` and
`vlmcap info` stay fast and never need the heavy stacks.
"""

from vlmcap.cli.app import cli, main

__all__ = ["cli", "main"]
