"""Bar charts of `vlmcap bench` reports: `--plot FILE.png` on a run, `vlmcap bench plot` on saved JSON.

Each kind of report is read into panels, one per measured quantity (videos/s, peak MB, ...), each
a bar per row of the report. Several reports of one kind (a baseline and a candidate, two
machines) share the panels, each bar named by its report, so a change is seen at a glance. The
kind is recognised by the report's own fields, so the JSON files under docs/bench/ plot as they are.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmcap.errors import ConfigError
from vlmcap.storage.files import atomic_write_bytes

PALETTE = ("#0969da", "#bf8700", "#1a7f37", "#8250df", "#cf222e")  # one colour per report compared


@dataclass
class Panel:
    """One quantity: its bars as (label, value)."""

    title: str
    bars: list[tuple[str, float]] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)  # which report each bar comes from (its colour)


def _rows(report: dict[str, Any], quantities: dict[str, str], label: Callable[[dict[str, Any]], str]) -> list[Panel]:
    """A panel per quantity (row key -> title), a bar per row. Every row has the first quantity;
    the others are drawn where measured (the first render: only with a browser)."""
    first = next(iter(quantities))
    panels = []
    for key, title in quantities.items():
        bars = [(label(row), float(row[key])) for row in report["rows"] if key == first or row.get(key) is not None]
        if bars:
            panels.append(Panel(title, bars))
    return panels


def _decode(report: dict[str, Any]) -> list[Panel]:
    def label(row: dict[str, Any]) -> str:
        return f"{row['decoder']} x{row['workers']}" + (" + sheets" if row.get("thumbnails") else "")

    return _rows(report, {"videos_per_s": "decode: videos/s"}, label)


def _batch(report: dict[str, Any]) -> list[Panel]:
    runs = {"naive": report["naive"], **report.get("schedules", {"pipeline": report["pipeline"]})}
    return [Panel("end to end: videos/s", [(name, float(run["videos_per_s"])) for name, run in runs.items()])]


def _stages(report: dict[str, Any]) -> list[Panel]:
    return [
        Panel(f"{name}: {row['unit']}", [(report["device"], float(row["rate"]))])
        for name, row in report["stages"].items()
    ]


def _llm(report: dict[str, Any]) -> list[Panel]:
    name = f"{report['engine']} ({report['quantization']})"
    return [
        Panel("LLM decode: tokens/s", [(name, float(report["decode_tokens_per_s"]))]),
        Panel("LLM first token: s", [(name, float(report["first_token_s"]))]),
    ]


def _night(report: dict[str, Any]) -> list[Panel]:
    engines = report["engines"]
    name = " + ".join(str(engines[k]) for k in ("vision", "llm") if k in engines) or "night"
    stages = report["stages"]
    return [
        Panel("night: videos/hour", [(name, float(report["night"]["videos_per_hour"]))]),
        Panel("each stage alone: s/video", [(stage, float(s)) for stage, s in report["alone_s_per_video"].items()]),
        Panel(
            "share of the GEMM peak",
            [
                (stage, float(row["of_gemm_peak"]))
                for stage, row in stages.items()
                if row.get("of_gemm_peak") is not None
            ],
        ),
    ]


def _rows_have(key: str) -> Callable[[dict[str, Any]], bool]:
    """Recognises a report whose rows carry `key`."""
    return lambda report: key in (report.get("rows") or [{}])[0]


# What each kind of report holds, as (recogniser, panels); the first that recognises a report wins.
KINDS: dict[str, tuple[Callable[[dict[str, Any]], bool], Callable[[dict[str, Any]], list[Panel]]]] = {
    "decode": (_rows_have("decoder"), _decode),
    "train": (
        _rows_have("samples_per_s"),
        lambda r: _rows(r, {"samples_per_s": "training: samples/s"}, lambda row: f"{row['mode']} b{row['batch_size']}"),
    ),
    "vision": (
        _rows_have("frames_per_s"),
        lambda r: _rows(
            r,
            {"frames_per_s": "vision: frames/s"},
            lambda row: f"{row['backend']} {row['precision']} {row['provider']}",
        ),
    ),
    "long": (
        _rows_have("video_minutes"),
        lambda r: _rows(
            r,
            {"wall_s_per_video_minute": "wall s per video minute", "peak_rss_mb": "peak memory: MB"},
            lambda row: row["name"],
        ),
    ),
    "report": (
        _rows_have("build_s"),
        lambda r: _rows(
            r,
            {
                "build_s": "report build: s",
                "build_peak_python_mb": "build peak: MB",
                "first_render_s": "first render: s",
            },
            lambda row: f"{row['lines']:,} lines",
        ),
    ),
    "batch": (lambda r: "naive" in r, _batch),
    "night": (lambda r: "alone_s_per_video" in r, _night),  # before "stages": a night has stages too
    "stages": (lambda r: "stages" in r, _stages),
    "llm": (lambda r: "decode_tokens_per_s" in r, _llm),
}


def report_panels(report: dict[str, Any], source: str = "report") -> list[Panel]:
    """The panels of one bench report; a ConfigError naming `source` when it is none vlmcap writes."""
    for recognises, panels in KINDS.values():
        try:
            if recognises(report):
                return panels(report)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise ConfigError(f"{source}: a bench report without its field {e}") from None
    raise ConfigError(f"{source}: not a vlmcap bench report (none of: {', '.join(KINDS)})")


def merged_panels(reports: Sequence[tuple[str, dict[str, Any]]]) -> list[Panel]:
    """The panels of several reports, a quantity's bars side by side, each named by its report."""
    merged: dict[str, Panel] = {}
    for number, (name, report) in enumerate(reports):
        for panel in report_panels(report, name):
            into = merged.setdefault(panel.title, Panel(panel.title))
            prefix = f"{name}: " if len(reports) > 1 else ""
            into.bars += [(prefix + label, value) for label, value in panel.bars]
            into.reports += [number] * len(panel.bars)
    return list(merged.values())


def plot_png(panels: Sequence[Panel], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit on a server
    from matplotlib.figure import Figure

    heights = [0.6 + 0.35 * len(p.bars) for p in panels]
    figure = Figure(figsize=(8, 0.6 + sum(heights)), dpi=100, layout="constrained")
    figure.suptitle(title)
    grid = figure.add_gridspec(len(panels), 1, height_ratios=heights)
    for i, panel in enumerate(panels):
        axes = figure.add_subplot(grid[i])
        labels = [label for label, _ in panel.bars]
        values = [value for _, value in panel.bars]
        colours = [PALETTE[n % len(PALETTE)] for n in panel.reports] if panel.reports else PALETTE[0]
        bars = axes.barh(range(len(values)), values, color=colours)
        axes.set_yticks(range(len(values)), labels)
        axes.invert_yaxis()  # the report's order, top to bottom
        axes.bar_label(bars, labels=[f"{v:,.4g}" for v in values], padding=3, fontsize=8)
        axes.set_title(panel.title, loc="left", fontsize=10)
        axes.margins(x=0.15)
        axes.grid(axis="x", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_plot(path: Path, reports: Sequence[tuple[str, dict[str, Any]]], title: str) -> list[Panel]:
    """Plot `reports` (name, report) into the PNG `path`, written whole; the panels drawn."""
    panels = merged_panels(reports)
    if not panels:
        raise ConfigError(f"{path}: the report has no rows to plot")
    atomic_write_bytes(path, plot_png(panels, title))
    return panels
