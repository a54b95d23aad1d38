"""Where the tests and the repository are, for tests in any subfolder (the helpers here are on sys.path)."""

from pathlib import Path

TESTS = Path(__file__).resolve().parent  # the helpers subprocesses import: media, fault_decoders, ...
REPO = TESTS.parent
