"""The errors vlmcap raises on purpose.

Each message is one sentence that names the file or field at fault and, where there is one,
the fix. The CLI prints them without a traceback and maps them to exit codes.
"""


class VlmcapError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""


class ConfigError(VlmcapError):
    """A configuration file, field or flag is invalid."""


class ModelError(VlmcapError):
    """A model (vision encoder, LLM, projector, preset) cannot be built or loaded as asked."""


class BundleError(VlmcapError):
    """An engine bundle is missing, incomplete, tampered with, or of an unknown format."""


class VideoError(VlmcapError):
    """A video cannot be read or decoded."""
