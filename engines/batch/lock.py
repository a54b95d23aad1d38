"""The output's lock: one `vlmcap batch` writes a given JSONL at a time, however it is named (docs/BATCH.md).

Two exclusive `flock`s, both dropped by the kernel when the process dies, however it dies:

- on `<real output>.lock` beside the real file (symlinks resolved), which also holds the holder's
  pid for the message a second run prints;
- on the output file itself, so two names for one file (a symlink, a hard link) and a lock file
  deleted while a run holds it cannot admit a second writer. When the run replaces the output
  (compaction writes a new file and renames it over the old one), it locks the new file before
  the rename (`adopt`), so there is no moment without the lock.

`--overwrite` truncates the file in place for the same reason: a new inode would be unlocked.
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


def _flock(fd: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


class OutputLock:
    def __init__(self, out: Path, wait_s: float = 0.0) -> None:
        self.out = Path(os.path.realpath(out))
        self.path = self.out.with_name(self.out.name + ".lock")
        self.wait_s = wait_s
        self._fd: int | None = None  # the lock file
        self._out_fd: int | None = None  # the output file itself
        self._created = False

    def _refuse(self, what: str, holder: str) -> LockHeld:
        waited = f" after waiting {self.wait_s:g} s" if self.wait_s else ""
        return LockHeld(
            f"{what}: another vlmcap batch (pid {holder}) is writing this output{waited}; "
            "exiting (use --wait-lock SECONDS to wait)"
        )

    def __enter__(self) -> OutputLock:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.wait_s
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if not _flock(fd, deadline):
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise self._refuse(str(self.path), holder)
        self._created = not self.out.exists()
        out_fd = os.open(self.out, os.O_RDWR | os.O_CREAT, 0o644)
        if not _flock(out_fd, deadline):
            os.close(out_fd)
            os.close(fd)
            # Its lock file is not the one we hold: the output is reached by another name, or the
            # lock file was deleted under a running job.
            raise self._refuse(f"{self.out} (through another name or a deleted lock file)", "?")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._out_fd = fd, out_fd
        return self

    def adopt(self, fd: int) -> None:
        """Hold the lock on `fd`, the file about to be renamed over the output, instead of the old one."""
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh private file: nobody else can hold it
        if self._out_fd is not None:
            os.close(self._out_fd)
        self._out_fd = fd

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None and self._created and self._out_fd is not None and os.fstat(self._out_fd).st_size == 0:
            self.out.unlink(missing_ok=True)  # a run that failed before writing leaves no empty output behind
        for fd in (self._out_fd, self._fd):
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
        self._fd = self._out_fd = None
