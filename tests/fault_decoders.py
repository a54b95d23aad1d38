"""Decoders that misbehave the way decord can: hang in native code holding the GIL, or crash the process.

Loaded inside decode workers by name (`fault_decoders:HangingDecoder`), like any custom decoder.
"""

from __future__ import annotations

import ctypes
import os
import signal
import time


class HangingDecoder:
    name = "hanging"

    def fetch(self, probe, indices, size):
        # PyDLL keeps the GIL during the call, as decord's native loop does: no Python thread could interrupt it.
        ctypes.PyDLL(None).sleep(3600)


class CrashingDecoder:
    name = "crashing"

    def fetch(self, probe, indices, size):
        os.kill(os.getpid(), signal.SIGSEGV)


class TrapDecoder:
    """PyAV, except for files whose name says `hang` or `crash`: those hang or crash the worker.

    Used alone in the chain (`--decoders fault_decoders:TrapDecoder`) it gives an end-to-end run a
    hung and a crashed video among good ones, with no second decoder to rescue them.
    """

    name = "trap"

    def __init__(self, num_threads: int = 1) -> None:
        from vlmcap.video.pyav_decoder import PyAVDecoder

        self.pyav = PyAVDecoder(num_threads)

    def fetch(self, probe, indices, size):
        name = os.path.basename(probe.path)
        if "hang" in name:
            HangingDecoder().fetch(probe, indices, size)
        if "crash" in name:
            CrashingDecoder().fetch(probe, indices, size)
        return self.pyav.fetch(probe, indices, size)


class SlowDecoder:
    """PyAV, taking 0.6 s more per fetch: a long video whose segments each decode well within a
    2 s timeout while the whole file takes longer."""

    name = "slow"

    def __init__(self, num_threads: int = 1) -> None:
        from vlmcap.video.pyav_decoder import PyAVDecoder

        self.pyav = PyAVDecoder(num_threads)

    def fetch(self, probe, indices, size):
        time.sleep(0.6)
        return self.pyav.fetch(probe, indices, size)


class LateHangDecoder:
    """PyAV until a fetch wants a frame past 10 s of the video: then it hangs like HangingDecoder."""

    name = "late-hang"

    def __init__(self, num_threads: int = 1) -> None:
        from vlmcap.video.pyav_decoder import PyAVDecoder

        self.pyav = PyAVDecoder(num_threads)

    def fetch(self, probe, indices, size):
        if probe.frame_times_s[indices[0]] - probe.frame_times_s[0] > 10.0:
            HangingDecoder().fetch(probe, indices, size)
        return self.pyav.fetch(probe, indices, size)
