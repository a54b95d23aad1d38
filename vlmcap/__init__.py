"""vlmcap: bulk video captioning with a LLaVA-style vision-language model.

The Python API (engines/api.py): `Captioner.from_bundle(path).caption(videos)` and
`caption_videos(inputs, out=...)`. They load on first use, so `import vlmcap` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Captioner", "__version__", "batch_settings", "caption_videos"]

if TYPE_CHECKING:
    from vlmcap.engines.api import Captioner, batch_settings, caption_videos


def __getattr__(name: str) -> Any:
    if name in ("Captioner", "batch_settings", "caption_videos"):
        import vlmcap.engines.api as api  # the one import the core makes of a stage: lazy, for these names

        return getattr(api, name)
    raise AttributeError(f"module 'vlmcap' has no attribute {name!r}")
