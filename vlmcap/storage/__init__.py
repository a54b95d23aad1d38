"""Where and how vlmcap writes: durable files, the guard on what a command may write, per-video names,
the run directory and $VLMCAP_HOME."""
