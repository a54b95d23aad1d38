"""The output's lock: one `vlmcap batch` writes a given JSONL at a time (cron-safe).

An exclusive `flock` on `<out>.lock`. The kernel drops it when the process dies, however it
dies, so a crashed run never leaves a stale lock behind. The holder's pid is written into the
file for the message a second run prints.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from vlmcap.errors import VlmcapError

EXIT_LOCKED = 75  # EX_TEMPFAIL: cron wrappers treat it as "try again later" (docs/BATCH.md, "Cron and systemd")


class LockHeld(VlmcapError):
    exit_code = EXIT_LOCKED


class OutputLock:
    def __init__(self, out: Path, wait_s: float = 0.0) -> None:
        self.path = out.with_name(out.name + ".lock")
        self.wait_s = wait_s
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
                    os.close(fd)
                    waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
                    raise LockHeld(
                        f"{self.path}: another vlmcap batch (pid {holder}) is writing this output{waited}; "
                        "exiting (use --wait-lock SECONDS to wait)"
                    ) from None
                time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
