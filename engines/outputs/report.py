"""`vlmcap captions report`: a captions JSONL as a static site to look at (docs/BATCH.md, "Looking at a night").

The site opens from `file://` on an offline machine: `index.html` with its script and styles
beside it, and the records as JavaScript files (`data/page-NNNNN.js`, PAGE_SIZE records each) that
the page loads by `<script>` tags, which browsers allow from `file://` where `fetch` is refused.
`data/index.js` holds each video's status and, per flag, the videos that carry it, so filters and
pagination never load more than the pages they show; a text search reads the pages one after another.

The ledger is read as `captions convert` reads it (engines/outputs/ledger_scan.py: the latest
line per video, torn and foreign lines counted), streaming: memory grows with the number of
videos (a few bytes each), not with the file. Any field of a record can hold any JSON type: the
page shows it as text (engines/outputs/page_fields.py). Page data never uses a value from the
ledger as an object key: counters are [name, count] pairs. The site is built beside `--out` and
renamed into place whole, so a failure leaves no half site and an existing one untouched.

One module past 300 lines: the summary, the index and the pages are built in one pass over the
ledger and must agree with each other.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmcap.engines.batch.ledger import real_path
from vlmcap.engines.outputs.convert import check_captions_file
from vlmcap.engines.outputs.ledger_scan import latest_records, scan_ledger
from vlmcap.engines.outputs.page_fields import (
    field_text,
    finite_number,
    json_text,
    segment_list,
    shown_error,
    shown_flags,
    shown_number,
)
from vlmcap.engines.outputs.schema import format_timestamp, parse_timestamp
from vlmcap.engines.outputs.static_site import (
    building_site,
    check_site_folder,
    copy_assets,
    data_script,
    file_url,
    sheet_link,
)
from vlmcap.errors import ConfigError
from vlmcap.storage.files import open_regular
from vlmcap.storage.output_names import per_video_path

REPORT_COMMAND = "captions report"  # what the site's marker names (vlmcap/storage/output_guard.py)
PAGE_SIZE = 500
EXAMPLES_PER_ERROR = 5
STATS_MAX_BYTES = 1 << 20  # a run's --stats JSON is a few kB
# The fields a row shows in cells of their own; every other one is in the row's details (`more`).
_CELLS = ("video", "status", "caption", "error", "duration_s", "decoder", "thumbnail", "segments")


@dataclass
class ReportStats:
    """What a report read and wrote (the CLI's summary, `--json`)."""

    input: str
    out: str
    videos: int = 0
    pages: int = 0
    lines: int = 0
    duplicates: int = 0
    torn_at: int | None = None
    foreign_lines: int = 0
    foreign_at: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"{self.videos} video{'s' * (self.videos != 1)} -> {self.out}/index.html"]
        if self.foreign_lines:
            parts.append(f"{self.foreign_lines} foreign line{'s' * (self.foreign_lines != 1)} skipped")
        if self.torn_at is not None:
            parts.append(f"a torn last line ({self.torn_at}) skipped")
        return "; ".join(parts)


def _pairs(counter: Counter) -> list[list[Any]]:
    """[name, count], most first: names from the ledger are never object keys in the page's data (a
    JavaScript object literal takes `__proto__` as its prototype, not as a key)."""
    return [[name, count] for name, count in counter.most_common()]


@dataclass
class _Summary:
    """Counts over every video, bounded: one counter entry per distinct value, a few examples."""

    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    error_examples: dict[str, list[str]] = field(default_factory=dict)
    flags: Counter = field(default_factory=Counter)
    segment_flags: Counter = field(default_factory=Counter)
    engines: Counter = field(default_factory=Counter)
    bundles: Counter = field(default_factory=Counter)
    prompts: Counter = field(default_factory=Counter)
    decoders: Counter = field(default_factory=Counter)
    segments: int = 0
    video_seconds: float = 0.0
    first_finished: datetime.datetime | None = None
    last_finished: datetime.datetime | None = None

    def add(self, record: dict[str, Any], shown: dict[str, Any]) -> None:
        """One video, counted as its row shows it (`shown`: its error type, flags and segments)."""
        self.statuses[shown["status"]] += 1
        if shown["status"] == "error":
            kind = shown["error"]["type"]
            self.errors[kind] += 1
            examples = self.error_examples.setdefault(kind, [])
            if len(examples) < EXAMPLES_PER_ERROR:
                examples.append(shown["video"])
        self.flags.update(shown["flags"])
        self.segments += len(shown["segments"])
        for segment in shown["segments"]:
            self.segment_flags.update(segment["flags"])
        provenance = record.get("provenance")
        for side in ("vision", "llm"):
            stage = provenance.get(side) if isinstance(provenance, dict) else None
            engine = field_text(stage.get("engine")) if isinstance(stage, dict) else None
            if engine:
                self.engines[f"{side}: {engine}"] += 1
        for counter, key in ((self.bundles, "bundle"), (self.prompts, "prompt"), (self.decoders, "decoder")):
            if (text := field_text(record.get(key))) is not None:
                counter[text] += 1
        seconds = finite_number(record.get("duration_s"))
        if seconds is not None and seconds >= 0:
            self.video_seconds += seconds
        finished = record.get("finished_at")
        if isinstance(finished, str) and (at := parse_timestamp(finished)) is not None:  # convert's reading
            self.first_finished = min(self.first_finished or at, at)
            self.last_finished = max(self.last_finished or at, at)

    def to_dict(self) -> dict[str, Any]:
        first, last = self.first_finished, self.last_finished
        return {
            "statuses": _pairs(self.statuses),
            "errors": [[kind, count, self.error_examples[kind]] for kind, count in self.errors.most_common()],
            **{
                name: _pairs(getattr(self, name))
                for name in ("flags", "segment_flags", "engines", "bundles", "prompts", "decoders")
            },
            "segments": self.segments,
            "video_seconds": self.video_seconds,
            "first_finished": format_timestamp(first) if first else None,
            "last_finished": format_timestamp(last) if last else None,
            "videos_per_hour": _per_hour(sum(self.statuses.values()), first, last),
        }


def _per_hour(count: int, first: datetime.datetime | None, last: datetime.datetime | None) -> float | None:
    """Videos per hour between the first and the last line written (None for one instant)."""
    if not (first and last):
        return None
    seconds = (last - first).total_seconds()
    return round(count / seconds * 3600, 1) if seconds > 0 else None


@dataclass
class _Index:
    """What the page's filters read without loading a page (data/index.js): each video's status (an
    index into `statuses`) and, per flag, the videos that carry it on themselves or on a segment."""

    statuses: list[str] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    flags: dict[str, list[int]] = field(default_factory=dict)

    def add(self, shown: dict[str, Any]) -> None:
        video = len(self.status)
        if shown["status"] not in self.statuses:
            self.statuses.append(shown["status"])
        self.status.append(self.statuses.index(shown["status"]))
        for flag in dict.fromkeys(shown["flags"] + [f for s in shown["segments"] for f in s["flags"]]):
            self.flags.setdefault(flag, []).append(video)

    def to_dict(self, pages: int) -> dict[str, Any]:
        flags = [[name, videos] for name, videos in self.flags.items()]
        return {
            "page_size": PAGE_SIZE,
            "pages": pages,
            "statuses": self.statuses,
            "status": self.status,
            "flags": flags,
        }


def _sidecar_url(directory: Path, key: str, suffix: str) -> str | None:
    try:
        return file_url(str(per_video_path(directory, key, suffix)))
    except (ValueError, IndexError):  # a key no file is named after ("", "/", a lone surrogate): no link
        return None


def _page_record(record: dict[str, Any], srt_dir: Path | None, vtt_dir: Path | None) -> dict[str, Any]:
    """What the page shows of one record: each field in its cell, as text where its type is another
    (engines/outputs/page_fields.py), and every other field of the line under `more` (JSON text)."""
    status = record["status"]  # "ok" or "error": any other line is foreign (engines/batch/ledger.py)
    segments, thumbnail, error = segment_list(record.get("segments")), record.get("thumbnail"), record.get("error")
    more = {key: value for key, value in record.items() if key not in _CELLS}
    if thumbnail is not None and not isinstance(thumbnail, str):  # no sheet to show: shown as it is
        more["thumbnail"] = thumbnail
    if segments is None:  # no list of segments: no timeline, shown as it is
        more["segments"], segments = record["segments"], []
    shown = {
        "video": record["video"],
        "url": file_url(record["video"]),
        "status": status,
        "caption": field_text(record.get("caption")),
        "flags": shown_flags(record),
        "error": shown_error(error) if error is not None or status == "error" else None,
        "duration_s": shown_number(record.get("duration_s")),
        "decoder": field_text(record.get("decoder")),
        **sheet_link(thumbnail),
        "segments": [
            {
                "start_s": shown_number(s.get("start_s")),
                "end_s": shown_number(s.get("end_s")),
                "caption": field_text(s.get("caption")),
                "flags": shown_flags(s),
                **sheet_link(s.get("thumbnail")),
            }
            for s in segments
        ],
        "more": json_text(more),
    }
    for directory, suffix in ((srt_dir, ".srt"), (vtt_dir, ".vtt")):
        if directory is not None and status == "ok":
            shown[suffix[1:]] = _sidecar_url(directory, real_path(record) or record["video"], suffix)
    return shown


def _write_page(site: Path, number: int, records: list[dict[str, Any]]) -> None:
    path = site / "data" / f"page-{number:05d}.js"
    path.write_text(data_script("vlmcapPage", {"page": number, "records": records}), encoding="utf-8")


def read_run_stats(path: Path) -> dict[str, Any]:
    """The run's `--stats` JSON (a JSON object), read without blocking and bounded in size; anything
    else is a ConfigError naming the file."""
    try:
        with open_regular(path) as f:  # a FIFO named like the stats file must not hang the report
            data = f.read(STATS_MAX_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"--stats {path}: {e.strerror}; give the file `vlmcap batch --stats` wrote") from None
    if len(data) > STATS_MAX_BYTES:
        raise ConfigError(f"--stats {path}: over {STATS_MAX_BYTES:,} bytes; not what `vlmcap batch --stats` writes")
    try:
        stats = json.loads(data)
    except (ValueError, RecursionError) as e:  # not UTF-8, not JSON, nested past Python's stack
        raise ConfigError(f"--stats {path}: cannot read it as JSON ({e})") from None
    if not isinstance(stats, dict):
        raise ConfigError(f"--stats {path}: not a JSON object; give the file `vlmcap batch --stats` wrote")
    return stats


def build_report(
    src: Path,
    out: Path,
    *,
    stats_file: Path | None = None,
    srt_dir: Path | None = None,
    vtt_dir: Path | None = None,
    overwrite: bool = False,
    title: str | None = None,
) -> ReportStats:
    """Write the site for the captions JSONL `src` into the folder `out` (whole, or not at all)."""
    src, out = Path(src), Path(out)
    check_captions_file(src)
    check_site_folder(
        out,
        overwrite,
        REPORT_COMMAND,
        [("CAPTIONS", src), ("--stats", stats_file), ("--srt-dir", srt_dir), ("--vtt-dir", vtt_dir)],
    )
    run_stats = read_run_stats(Path(stats_file)) if stats_file is not None else None

    stats = ReportStats(str(src), str(out))
    with building_site(out, REPORT_COMMAND) as tmp:
        summary, index = _Summary(), _Index()
        with open_regular(src) as f:
            scan = scan_ledger(f)
            page: list[dict[str, Any]] = []
            for record, _ in latest_records(f, scan):
                shown = _page_record(record, srt_dir, vtt_dir)
                summary.add(record, shown)
                index.add(shown)
                page.append(shown)
                if len(page) == PAGE_SIZE:
                    stats.pages += 1
                    _write_page(tmp, stats.pages, page)
                    page = []
            if page:
                stats.pages += 1
                _write_page(tmp, stats.pages, page)
        seen = scan.seen
        stats.videos = len(index.status)
        stats.lines, stats.duplicates = seen.lines, scan.duplicates
        stats.torn_at, stats.foreign_lines, stats.foreign_at = seen.torn_at, seen.foreign_lines, list(seen.foreign_at)
        (tmp / "data" / "index.js").write_text(data_script("vlmcapIndex", index.to_dict(stats.pages)), encoding="utf-8")
        report_summary = {
            "title": title or src.name,
            "input": str(src.resolve()),
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ledger": {k: v for k, v in stats.to_dict().items() if k not in ("input", "out", "pages")},
            "run_stats": None if run_stats is None else json_text(run_stats),  # text: its keys are the file's
            **summary.to_dict(),
        }
        (tmp / "data" / "summary.js").write_text(data_script("vlmcapSummary", report_summary), encoding="utf-8")
        copy_assets(tmp, "index.html", ("report.js",))
    return stats
