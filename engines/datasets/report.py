"""`vlmcap captions report`: a captions JSONL as a static site to look at (docs/BATCH.md, "Looking at a night").

The site opens from `file://` on an offline machine: `index.html` with its script and styles
beside it, and the records as JavaScript files (`data/page-NNNNN.js`, PAGE_SIZE records each) that
the page loads by `<script>` tags, which browsers allow from `file://` where `fetch` is refused.
`data/index.js` holds one status and one flag mask per video, so filters and pagination never
load more than the pages they show; a text search reads the pages one after another.

The ledger is read as `captions convert` reads it (engines/datasets/ledger_scan.py: the latest
line per video, torn and foreign lines counted), streaming: memory grows with the number of
videos (a few bytes each), not with the file. The site is built beside `--out` and renamed into
place whole, so a failure leaves no half site and an existing one untouched.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from vlmcap.engines.datasets.convert import check_captions_file
from vlmcap.engines.datasets.ledger_scan import latest_records, scan_ledger
from vlmcap.engines.datasets.static_site import (
    building_site,
    check_site_folder,
    copy_assets,
    data_script,
    file_url,
    sheet_link,
)
from vlmcap.errors import ConfigError
from vlmcap.files import open_regular
from vlmcap.output_names import per_video_path

PAGE_SIZE = 500
EXAMPLES_PER_ERROR = 5


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
    first_finished: str | None = None
    last_finished: str | None = None

    def add(self, record: dict[str, Any]) -> None:
        status = str(record.get("status"))
        self.statuses[status] += 1
        if status == "error":
            error = record.get("error") or {}
            kind = str(error.get("type", "unknown"))
            self.errors[kind] += 1
            examples = self.error_examples.setdefault(kind, [])
            if len(examples) < EXAMPLES_PER_ERROR:
                examples.append(str(record.get("video")))
        for flag in _flags(record):
            self.flags[flag] += 1
        for segment in record.get("segments") or []:
            self.segments += 1
            for flag in _flags(segment):
                self.segment_flags[flag] += 1
        provenance = record.get("provenance") or {}
        for side in ("vision", "llm"):
            engine = (provenance.get(side) or {}).get("engine")
            if engine:
                self.engines[f"{side}: {engine}"] += 1
        for counter, key in ((self.bundles, "bundle"), (self.prompts, "prompt"), (self.decoders, "decoder")):
            if record.get(key) is not None:
                counter[str(record[key])] += 1
        if isinstance(record.get("duration_s"), int | float):
            self.video_seconds += record["duration_s"]
        finished = record.get("finished_at")
        if isinstance(finished, str):
            self.first_finished = min(self.first_finished or finished, finished)
            self.last_finished = max(self.last_finished or finished, finished)

    def to_dict(self) -> dict[str, Any]:
        data = {
            f.name: dict(value.most_common()) if isinstance(value := getattr(self, f.name), Counter) else value
            for f in fields(self)
        }
        data["videos_per_hour"] = _per_hour(sum(self.statuses.values()), self.first_finished, self.last_finished)
        return data


def _flags(record: dict[str, Any]) -> list[str]:
    return [str(f) for f in (record.get("quality") or {}).get("flags") or []]


def _per_hour(count: int, first: str | None, last: str | None) -> float | None:
    """Videos per hour between the first and the last line written (None for one instant)."""
    if not (first and last):
        return None
    try:
        start, end = (datetime.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (first, last))
    except ValueError:
        return None
    seconds = (end - start).total_seconds()
    return round(count / seconds * 3600, 1) if seconds > 0 else None


def _page_record(record: dict[str, Any], srt_dir: Path | None, vtt_dir: Path | None) -> dict[str, Any]:
    """What the page shows of one record; the rest (provenance, timings) goes under `more`."""
    video = str(record.get("video"))
    real = (record.get("file") or {}).get("path") or video
    shown = {
        "video": video,
        "url": file_url(video),
        "status": record.get("status"),
        "caption": record.get("caption"),
        "flags": _flags(record),
        "error": record.get("error"),
        "duration_s": record.get("duration_s"),
        "decoder": record.get("decoder"),
        **sheet_link(record.get("thumbnail")),
        "segments": [
            {
                "start_s": s.get("start_s"),
                "end_s": s.get("end_s"),
                "caption": s.get("caption"),
                "flags": _flags(s),
                **sheet_link(s.get("thumbnail")),
            }
            for s in record.get("segments") or []
        ],
        "more": {
            key: record[key]
            for key in ("bundle", "prompt", "num_tokens", "finish_reason", "timings_ms", "provenance", "finished_at")
            if key in record
        },
    }
    for directory, suffix in ((srt_dir, ".srt"), (vtt_dir, ".vtt")):
        if directory is not None and record.get("status") == "ok":
            shown[suffix[1:]] = file_url(str(per_video_path(directory, real, suffix)))
    return shown


def _code(shown: dict[str, Any], statuses: list[str], flag_names: list[str], src: Path) -> int:
    """One number per video for the page's filters: bit k+3 = flag k (the video's or a segment's),
    bits 0-2 = the status's index. A JavaScript number holds 53 bits: 50 flags, 8 statuses."""
    status = str(shown["status"])
    if status not in statuses:
        statuses.append(status)
    mask = 0
    for flag in shown["flags"] + [g for segment in shown["segments"] for g in segment["flags"]]:
        if flag not in flag_names:
            flag_names.append(flag)
        mask |= 1 << flag_names.index(flag)
    if len(statuses) > 8 or len(flag_names) > 50:
        raise ConfigError(f"{src}: {len(statuses)} statuses and {len(flag_names)} flags; not a vlmcap captions JSONL")
    return mask * 8 + statuses.index(status)


def _write_page(site: Path, number: int, records: list[dict[str, Any]]) -> None:
    path = site / "data" / f"page-{number:05d}.js"
    path.write_text(data_script("vlmcapPage", {"page": number, "records": records}), encoding="utf-8")


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
    check_site_folder(out, overwrite)
    run_stats = None
    if stats_file is not None:
        try:
            run_stats = json.loads(Path(stats_file).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"--stats {stats_file}: cannot read it as JSON ({e})") from None

    stats = ReportStats(str(src), str(out))
    with building_site(out) as tmp:
        summary = _Summary()
        statuses: list[str] = []
        flag_names: list[str] = []
        codes: list[int] = []  # per video: its flag mask * 8 + its status's index (index.js)
        with open_regular(src) as f:
            scan = scan_ledger(f)
            page: list[dict[str, Any]] = []
            for record, _ in latest_records(f, scan):
                summary.add(record)
                shown = _page_record(record, srt_dir, vtt_dir)
                codes.append(_code(shown, statuses, flag_names, src))
                page.append(shown)
                if len(page) == PAGE_SIZE:
                    stats.pages += 1
                    _write_page(tmp, stats.pages, page)
                    page = []
            if page:
                stats.pages += 1
                _write_page(tmp, stats.pages, page)
        seen = scan.seen
        stats.videos = len(codes)
        stats.lines, stats.duplicates = seen.lines, scan.duplicates
        stats.torn_at, stats.foreign_lines, stats.foreign_at = seen.torn_at, seen.foreign_lines, list(seen.foreign_at)
        index_data = {"page_size": PAGE_SIZE, "pages": stats.pages, "statuses": statuses, "flags": flag_names}
        index_data["codes"] = codes
        (tmp / "data" / "index.js").write_text(data_script("vlmcapIndex", index_data), encoding="utf-8")
        report_summary = {
            "title": title or src.name,
            "input": str(src.resolve()),
            "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "ledger": {k: v for k, v in stats.to_dict().items() if k not in ("input", "out", "pages")},
            "run_stats": run_stats,
            **summary.to_dict(),
        }
        (tmp / "data" / "summary.js").write_text(data_script("vlmcapSummary", report_summary), encoding="utf-8")
        copy_assets(tmp, "index.html", ("report.js",))
    return stats
