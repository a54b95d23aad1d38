"""`python -m vlmcap` = the `vlmcap` command."""

from vlmcap.cli import main

main()
