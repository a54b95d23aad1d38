"""Progress of a batch run: a bar on a terminal, a plain log line every N seconds otherwise (cron)."""

from __future__ import annotations

import sys
import time
from typing import Any


class Progress:
    def __init__(self, bar: bool | None, log_every_s: float = 30.0) -> None:
        self.use_bar = sys.stderr.isatty() if bar is None else bar
        self.log_every_s = log_every_s
        self._bar: Any = None
        self._start = time.monotonic()
        self._last_log = self._start

    def start(self, stats) -> None:
        self._start = self._last_log = time.monotonic()
        if self.use_bar:
            from tqdm import tqdm

            self._bar = tqdm(desc="captioning", unit="video", dynamic_ncols=True, file=sys.stderr)
        elif stats.engines:
            print(f"vlmcap batch: engines ready: {stats.engines['vision']}, {stats.engines['llm']}", file=sys.stderr)

    def update(self, stats) -> None:
        done = stats.captioned + stats.copied + stats.failed
        if self._bar is not None:
            self._bar.n = done
            copied = {"copied": stats.copied} if stats.copied else {}  # --dedup
            self._bar.set_postfix(ok=stats.captioned, **copied, failed=stats.failed, refresh=False)
            self._bar.refresh()
            return
        now = time.monotonic()
        if now - self._last_log >= self.log_every_s:
            self._last_log = now
            rate = done / max(now - self._start, 1e-9)
            copied = f", {stats.copied} copied" if stats.copied else ""  # --dedup
            print(
                f"vlmcap batch: {done} done ({stats.captioned} ok{copied}, {stats.failed} failed), {rate:.2f} videos/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def summary_lines(report: dict[str, Any]) -> list[str]:
    """The end-of-run summary (stderr), from RunStats.to_dict()."""
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report["stage_s"].items())
    lines = [
        f"captioned {report['captioned']}, failed {report['failed']}, skipped {report['skipped_ok']} already done"
        + (f" ({report['skipped_stale']} by another bundle or prompt)" if report.get("skipped_stale") else "")
        + (f" + {report['skipped_failed']} failed before (--retry-errors)" if report["skipped_failed"] else "")
        + (f"; {report['recaptioned_stale']} stale re-captioned" if report.get("recaptioned_stale") else "")
        + (f", {report['other_shard']} in other shards" if report["other_shard"] else "")
        + (f"; {report['segments']} segment captions" if report.get("segments") else "")
        + (
            f"; --dedup: copied {report['copied']}, {report['duplicates']} lines duplicate_of another video"
            if report.get("copied") or report.get("duplicates")
            else ""
        ),
        f"{report['wall_s']:.1f} s wall, {report['videos_per_s']:.2f} videos/s, "
        f"{report['tokens_per_s']:.0f} generated tokens/s in the LLM",
        f"stage time: {stages} (decode summed over workers)",
    ]
    quality = report.get("quality") or {}
    if quality.get("flagged"):
        found = ", ".join(f"{flag} {n}" for flag, n in quality["flagged"].items())
        left = sum(quality["still_flagged"].values()) if quality.get("still_flagged") else 0
        lines.append(
            f"caption guards flagged: {found}; retried {quality['retried']}, recovered {quality['recovered']}"
            + (f", written flagged {left}" if left else "")
            + (f", rejected {quality['rejected']} (--strict-quality)" if quality.get("rejected") else "")
        )
    if report.get("engines"):
        engines = report["engines"]
        schedule = f", {engines['llm_schedule']}" if engines.get("llm_schedule") else ""
        lines.append(f"engines: vision {engines.get('vision')}, llm {engines.get('llm')}{schedule}")
    if report.get("interrupted_by"):
        lines.append(f"interrupted by {report['interrupted_by']}: re-run the same command to continue")
    return lines
