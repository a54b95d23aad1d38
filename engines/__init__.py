"""Running a bundle (`vlmcap batch`, `eval`, `bench`, `captions convert`), one subpackage per role, and the
Python API at its front door: `from vlmcap.engines import Captioner, caption_videos` (api.py).

- `runtime/`: a bundle's vision and LLM engines behind one `Engines`, `auto`'s measured choice among
  them, and the guards on what they write;
- `batch/`: one batch run (the night): which videos, the run core, the local and Ray drivers, the JSONL ledger;
- `eval/`: `vlmcap eval`, a labelled manifest captioned through the batch path and scored, and its page;
- `outputs/`: what a night leaves beside its ledger: subtitles, datasets (`vlmcap captions convert`), the report site;
- `bench/`: the benchmarks that run a bundle (`vlmcap bench batch|llm|long|stages|night|report`).

The API's names load on first use, so `import vlmcap.engines` stays light. docs/ARCHITECTURE.md maps
every file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Captioner", "batch_settings", "caption_videos", "selected_videos"]

if TYPE_CHECKING:
    from vlmcap.engines.api import Captioner, batch_settings, caption_videos, selected_videos


def __getattr__(name: str) -> Any:
    if name in __all__:
        from vlmcap.engines import api

        return getattr(api, name)
    raise AttributeError(f"module 'vlmcap.engines' has no attribute {name!r}")
