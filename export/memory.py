"""Peak resident memory of an export, per phase and overall (bundle.json `export.peak_rss_mb`).

Two readings, because neither alone is exact and harmless:
- the kernel's high-water mark of this process (VmHWM in /proc/self/status, which is also what
  /usr/bin/time reports): exact, also inside C code that holds the GIL (protobuf, safetensors),
  but only for the phase that sets a new record for the process;
- a thread that samples the current RSS every 10 ms while a phase is open: every phase, but it
  cannot run while another thread holds the GIL, so it may miss a short peak.
A phase's peak is the high-water mark when the mark rose during the phase, else the sampled maximum.
The mark is never reset (Linux could, through /proc/self/clear_refs, but /usr/bin/time would then
report less than the process really took).

RSS includes the file pages the process has mapped (memory-mapped safetensors, ONNX external
data): pages the machine must hold at that moment too.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import resource
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

SAMPLE_INTERVAL_S = 0.01
_PAGE = resource.getpagesize()


def _high_water_mark() -> int:
    """The process's peak RSS so far, in bytes."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere


def _current_rss() -> int:
    """RSS now, in bytes (0 where /proc is missing: then only the high-water mark counts)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * _PAGE
    except OSError:
        return 0


@dataclass
class _OpenPhase:
    name: str
    mark_at_start: int
    sampled_peak: int


class PeakMemory:
    """Peak RSS of each named phase (phases may nest) and of all of them: `phases`, `peak_bytes()`."""

    def __init__(self) -> None:
        self.phases: dict[str, int] = {}  # bytes, in the order the phases started
        self._open: list[_OpenPhase] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _sample(self) -> None:
        rss = _current_rss()
        with self._lock:
            for phase in self._open:
                phase.sampled_peak = max(phase.sampled_peak, rss)

    def _run_sampler(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self._sample()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        opened = _OpenPhase(name, _high_water_mark(), _current_rss())
        with self._lock:
            self._open.append(opened)
        if self._sampler is None:
            self._stop.clear()
            self._sampler = threading.Thread(target=self._run_sampler, name="vlmcap-peak-memory", daemon=True)
            self._sampler.start()
        try:
            yield
        finally:
            self._sample()
            with self._lock:
                self._open.remove(opened)
                last = not self._open
            mark = _high_water_mark()
            peak = mark if mark > opened.mark_at_start else opened.sampled_peak
            self.phases[name] = max(self.phases.get(name, 0), peak)
            if last and self._sampler is not None:
                self._stop.set()
                self._sampler.join()
                self._sampler = None

    def peak_bytes(self) -> int:
        """The highest phase peak so far (what the export took at its worst)."""
        return max(self.phases.values(), default=_current_rss())


def release_freed_memory() -> None:
    """Collect garbage, then hand the heap pages that frees left behind back to the OS.

    After the first large frees glibc raises its mmap threshold, so tensors of a few MB (most of an
    LLM's weights) come from its heap, whose freed pages it keeps: RSS stays at the old peak, and
    what is mapped next (a checkpoint loaded through mmap, an ONNX Runtime session) comes on top.
    `malloc_trim` returns them. It is glibc's; elsewhere this only collects garbage.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
