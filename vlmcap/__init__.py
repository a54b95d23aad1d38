"""vlmcap: bulk video captioning with a LLaVA-style vision-language model.

The Python API runs bundles, so it is the engines' front door: `from vlmcap.engines import Captioner,
caption_videos` (engines/api.py). The core imports no stage (docs/ARCHITECTURE.md), so `import vlmcap`
stays light and the API's names are not here.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

API_NAMES = ("Captioner", "batch_settings", "caption_videos")


def __getattr__(name: str) -> object:
    if name in API_NAMES:  # where these names lived before the front door moved: say where they are now
        raise AttributeError(f"vlmcap.{name} is vlmcap.engines.{name}: from vlmcap.engines import {name}")
    raise AttributeError(f"module 'vlmcap' has no attribute {name!r}")
