"""Engine processes never outlive the run, however the run dies (docs/BATCH.md, "Crash safety").

vLLM runs its engine in child processes. A clean exit shuts them down (`VllmEngine.close`), but
`kill -9` of the main process alone (what the OOM killer does) orphans them, and on a GPU they
keep its memory and break the next night's run. So the engine is started under a watchdog: a
small separate process that is told the engine's process ids and waits for the main process to
end (a pidfd, or polling where there is none). When it ends, or when the run says it is done, the
watchdog kills what is left of the engine's processes and their children.

Process ids are recorded with their start time, so a reused id is never killed by mistake.

    python -m vlmcap.engines.runtime.watchdog MAIN_PID    (reads "PID START_TIME" lines on stdin)
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger(__name__)

Process = tuple[int, int]  # (pid, start time in clock ticks since boot)


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
    if fields[0] == "Z":
        return None  # a zombie holds no resources; its parent reaps it
    return int(fields[1]), int(fields[19])


def descendants(pid: int) -> set[Process]:
    """Every live process below `pid` (children, their children, ...)."""
    parents: dict[int, list[Process]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if entry.isdigit() and (info := _stat(int(entry))) is not None:
            parents.setdefault(info[0], []).append((int(entry), info[1]))
    found: set[Process] = set()
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def alive(processes: set[Process]) -> set[Process]:
    """Those of `processes` still running (the same pid with the same start time)."""
    return {(pid, start) for pid, start in processes if (info := _stat(pid)) is not None and info[1] == start}


def kill_all(processes: set[Process]) -> None:
    """SIGKILL each process still alive with the same start time, and everything below it."""
    targets = set(processes)
    for pid, start in processes:
        if (info := _stat(pid)) is not None and info[1] == start:
            targets |= descendants(pid)
    for pid, start in targets:
        if (info := _stat(pid)) is not None and info[1] == start:
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.kill(pid, signal.SIGKILL)


class EngineWatchdog:
    """Started by the main process; `guard` processes it started, `release` when they are shut down."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        if not os.path.isdir("/proc"):
            log.debug("no /proc here: engine processes are not watched")
            return
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "vlmcap.engines.runtime.watchdog", str(os.getpid())],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a Ctrl-C to the job's process group must not end it before the engine
        )

    def guard(self, processes: set[Process]) -> None:
        if self._proc is None or self._proc.stdin is None:
            return
        self._proc.stdin.write("".join(f"{pid} {start}\n" for pid, start in processes))
        self._proc.stdin.flush()

    def release(self) -> None:
        """The engine was shut down: the watchdog kills any straggler and exits."""
        if self._proc is None or self._proc.stdin is None:
            return
        try:
            self._proc.stdin.close()
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
        self._proc = None


def _watch(main_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the main process's end (or its word) ends this
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    guarded: set[Process] = set()
    try:
        main_fd: int | None = os.pidfd_open(main_pid)
    except (AttributeError, OSError):
        main_fd = None  # no pidfd (old kernel): poll instead
    stdin = sys.stdin.fileno()
    buffered = b""
    while True:
        watched = [stdin] + ([main_fd] if main_fd is not None else [])
        ready, _, _ = select.select(watched, [], [], 1.0)
        if (main_fd is not None and main_fd in ready) or (main_fd is None and _stat(main_pid) is None):
            break  # the run ended without releasing the engine: clean up after it
        if stdin in ready:
            chunk = os.read(stdin, 65536)
            if not chunk:
                time.sleep(1.0)  # released: give a clean shutdown a moment to finish on its own
                break
            buffered += chunk
            *lines, buffered = buffered.split(b"\n")
            guarded |= {(int(p), int(s)) for p, s in (line.split() for line in lines if line.strip())}
    kill_all(guarded)


if __name__ == "__main__":
    _watch(int(sys.argv[1]))
