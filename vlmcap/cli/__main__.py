"""`python -m vlmcap.cli` = the `vlmcap` command."""

from vlmcap.cli import main

main()
