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


class ExportError(VlmcapError):
    """An export did not meet its verification thresholds, or could not be written."""


class VideoError(VlmcapError):
    """A video cannot be read or decoded."""


# --- video input: one subclass per cause; `kind` is what error records carry as "type" ---


class VideoNotFound(VideoError):
    """The path does not exist (or vanished before it was read)."""


class NotAVideo(VideoError):
    """The path is not a media file FFmpeg recognises (empty, text, random bytes, a directory)."""


class NoVideoStream(VideoError):
    """A media file without a video stream (audio only, subtitles)."""


class UnsupportedCodec(VideoError):
    """No installed decoder can decode the video stream's codec."""


class TruncatedVideo(VideoError):
    """The container opens but the stream ends early or yields no decodable frame."""


class DecodeTimeout(VideoError):
    """Decoding took longer than the per-video timeout; the worker was killed and replaced."""


class DecoderCrashed(VideoError):
    """The decoding worker process died (segfault, abort) on this video; it was replaced."""


class UnsupportedFrameSize(VideoError):
    """Frames too large, or too far from square, to decode within a worker's memory (checked before decoding)."""


class DecodeOutOfMemory(VideoError):
    """Decoding needed more memory than a decode worker may use (batch.decode_memory_mb)."""


class ThumbnailWriteError(VideoError):
    """The video's contact sheet (--thumbnails) could not be written: a full disk, a folder the run may not write."""


class UnreadableDirectory(VideoError):
    """An input directory that cannot be listed (permissions, I/O error): its videos were not seen."""


class SymlinkLoop(VideoError):
    """An input entry that is a symlink pointing (through others) back at itself."""


class BadInputLine(VideoError):
    """A line of a list file (or stdin) that is neither a video path nor a supported URL."""


# --- remote inputs (s3://, gs://, http(s)://, vlmcap/video/remote_*.py): per-object problems ---


class RemoteError(VideoError):
    """A remote object could not be fetched; the subclasses say why."""


class RemoteNotFound(RemoteError):
    """The object (or its bucket) does not exist."""


class RemoteAccessDenied(RemoteError):
    """The server refused to give the object to these credentials (HTTP 401/403)."""


class RemoteConnectionError(RemoteError):
    """The connection failed or dropped mid-download on every try (batch.remote.retries)."""


class RemoteTimeout(RemoteError):
    """The server sent nothing for batch.remote.timeout_s on every try."""


class RemoteRedirectLoop(RemoteError):
    """The server redirected in a loop (or more times than the HTTP client follows)."""


class RemoteTooLarge(RemoteError):
    """The object is larger than batch.remote.max_object_mb, the most the local spool takes."""


class RemoteBackendMissing(RemoteError):
    """The fsspec backend of the URL's scheme (s3fs, gcsfs, aiohttp) is not installed."""
