"""Decoders that misbehave the way decord can: hang in native code holding the GIL, or crash the process.

Loaded inside decode workers by name (`fault_decoders:HangingDecoder`), like any custom decoder.
"""

from __future__ import annotations

import ctypes
import os
import signal


class HangingDecoder:
    name = "hanging"

    def fetch(self, probe, indices, size):
        # PyDLL keeps the GIL during the call, as decord's native loop does: no Python thread could interrupt it.
        ctypes.PyDLL(None).sleep(3600)


class CrashingDecoder:
    name = "crashing"

    def fetch(self, probe, indices, size):
        os.kill(os.getpid(), signal.SIGSEGV)
