"""The Python API: what `vlmcap batch` does, from Python (README, "Python API").

    from vlmcap.engines import Captioner, caption_videos

    with Captioner.from_bundle("engines/default", llm_backend="transformers") as captioner:
        records = captioner.caption(["a.mp4", "b.mkv"])       # the records the CLI writes, in input order

    stats = caption_videos(["./videos"], out="captions.jsonl")  # resume, lock, append, compact: the CLI's run
    videos, counts = selected_videos(["./videos"], out="captions.jsonl")  # what that run would caption

It is the engines' front door, so it lives with them (docs/ARCHITECTURE.md): it builds the batch
settings once, validated, from keyword arguments named like the `batch:` config keys, and hands them
to the engines. `vlmcap batch` itself runs `caption_videos` (and, with --dry-run, `selected_videos`)
with the settings its flags built; `vlmcap.engines` loads this module on first use of one of its names.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from vlmcap.config.loading import load_config
from vlmcap.config.schema import BatchConfig

if TYPE_CHECKING:
    from vlmcap.bundle import Bundle
    from vlmcap.engines.batch.run import RunStats
    from vlmcap.engines.batch.selection import Selection
    from vlmcap.engines.runtime.engines import Engines
    from vlmcap.model.generation import GenerationParams


def batch_settings(config: str | Path | None = None, **settings: Any) -> BatchConfig:
    """The `batch:` settings of the YAML file `config` (or the defaults) with `settings` on top, validated
    as the CLI validates them: an unknown key or a bad value raises ConfigError before any work."""
    flags = {f"batch.{key}": value for key, value in settings.items() if value is not None}
    return load_config(config, flags=flags).batch


def input_list(videos: Iterable[str | os.PathLike[str]]) -> list[str]:
    """The inputs as `vlmcap batch` takes them; one string or path alone is refused, since iterating it
    would give its characters."""
    if isinstance(videos, str | bytes | os.PathLike):
        one = os.fsdecode(videos)
        raise TypeError(f"videos must be a list of inputs, not one {type(videos).__name__}: write [{one!r}]")
    return [os.fspath(v) for v in videos]


class Captioner:
    """A bundle's engines, opened once, captioning any number of videos into in-memory records.

    `caption` runs the same pipeline as `vlmcap batch` (decode workers, vision graph, LLM engine,
    caption guards, segments) and returns the records the CLI would write, one per distinct input,
    in input order; nothing is written to disk. Close it (or use `with`) to stop the engines and, for
    vLLM, its worker processes.
    """

    def __init__(self, settings: BatchConfig) -> None:
        from vlmcap.engines.batch.provenance import Provenance
        from vlmcap.engines.batch.run_batch import prepare
        from vlmcap.engines.runtime.engine_choice import engine_settings
        from vlmcap.engines.runtime.engines import Engines

        bundle, params = prepare(settings)  # bundle verified, decoding and prompt checked: before any engine
        self.settings, choice = engine_settings(bundle, settings, params)  # `auto` engines decided, threads set
        self.bundle: Bundle = bundle
        self.params: GenerationParams = params
        self._provenance = Provenance.of_run(bundle, self.settings, params, choice)
        self._engines: Engines | None = Engines.open(bundle, self.settings, params)

    @classmethod
    def from_bundle(
        cls,
        path: str | Path | None = None,
        *,
        llm_backend: str | None = None,
        device: str | None = None,
        config: str | Path | None = None,
        **settings: Any,
    ) -> Captioner:
        """Open the bundle at `path` (default: VLMCAP_HOME/engines/default). `llm_backend` is `auto`,
        `vllm` or `transformers`; `device` e.g. `cuda:0` or `cpu`; any other `batch:` config key
        (`segments="fixed:30"`, `prompt=...`, `generation={"max_new_tokens": 48}`) as a keyword, over the
        YAML `config`."""
        engine = str(path) if path is not None else None
        return cls(batch_settings(config, engine=engine, llm_backend=llm_backend, device=device, **settings))

    @property
    def engines(self) -> Mapping[str, str]:
        """The engines as started, e.g. {"vision": "onnxruntime (cpu, fp32)", "llm": "vllm (bfloat16)"}."""
        engines = self._open_engines()
        return {"vision": engines.vision.name, "llm": engines.llm.name}

    def caption(self, videos: Iterable[str | Path]) -> list[dict[str, Any]]:
        """One record per distinct video (a failure is a record with `status: error`), in the order found.

        `videos` are what `vlmcap batch` takes as INPUTS, found the same way (vlmcap/video/discovery.py):
        files, folders (walked), globs, list files, URLs; one file reached by several spellings or
        symlinks is one video, named as it was first reached. A bare string is refused: it is not a list.
        """
        from vlmcap.engines.batch.in_memory import records_in_memory
        from vlmcap.engines.batch.progress import Progress
        from vlmcap.video.discovery import InputProblem, iter_video_paths

        found = list(iter_video_paths(input_list(videos), remote=self.settings.remote_options))
        order = {item.path if isinstance(item, InputProblem) else item: i for i, item in enumerate(found)}
        by_video = records_in_memory(
            self.bundle,
            self.settings,
            self._open_engines(),
            found,
            self._provenance,
            progress=Progress(self.settings.progress or False, self.settings.log_every_s),
        )
        return sorted(by_video.values(), key=lambda r: order[r["video"]])

    def _open_engines(self) -> Engines:
        if self._engines is None:
            raise RuntimeError("this Captioner is closed")
        return self._engines

    def close(self) -> None:
        """Stop the engines (vLLM's processes included); idempotent."""
        if self._engines is not None:
            engines, self._engines = self._engines, None
            engines.close()

    def __enter__(self) -> Captioner:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def caption_videos(
    inputs: Iterable[str | Path] | None = None,
    out: str | Path | None = None,
    *,
    config: str | Path | None = None,
    settings: BatchConfig | None = None,
    stdin: TextIO | None = None,
    **options: Any,
) -> RunStats:
    """`vlmcap batch INPUTS --out OUT`: caption into the JSONL `out`, resumable (videos already there are
    skipped), locked against a second run on the same output, crash-safe; returns the run's stats
    (`stats.exit_code` is the CLI's exit code). Keywords are `batch:` config keys over the YAML
    `config`; `settings` (already built, as the CLI does) replaces all three."""
    from vlmcap.engines.batch.run_batch import run_batch

    return run_batch(_run_settings(inputs, out, config, settings, options), stdin)


def selected_videos(
    inputs: Iterable[str | Path] | None = None,
    out: str | Path | None = None,
    *,
    config: str | Path | None = None,
    settings: BatchConfig | None = None,
    stdin: TextIO | None = None,
    **options: Any,
) -> tuple[list[str], Selection]:
    """`vlmcap batch --dry-run`: the videos `caption_videos` with the same arguments would caption now
    (after resume, shard, limit and, with dedup, known copies), and the counts of what it would skip.
    No engine opens and nothing is written."""
    from vlmcap.engines.batch.run_batch import list_selected

    videos, selection = list_selected(_run_settings(inputs, out, config, settings, options), stdin)
    return list(videos), selection.counts


def _run_settings(
    inputs: Iterable[str | Path] | None,
    out: str | Path | None,
    config: str | Path | None,
    settings: BatchConfig | None,
    options: dict[str, Any],
) -> BatchConfig:
    if settings is not None:
        return settings
    listed = input_list(inputs) if inputs is not None else None
    return batch_settings(config, inputs=listed, out=str(out) if out is not None else None, **options)
