"""`vlmcap eval --report DIR`: predictions beside their references, with the contact sheet of the
frames the model saw and each caption's own scores (docs/TRAINING.md, "Evaluation").

The evaluation's decode workers write the sheets into the site being built (`thumbs/`), so the
folder is whole on its own: the page links them by relative paths and can be copied anywhere.
The page is one file of data (`data/eval.js`): an evaluation set is small next to a night's ledger.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from vlmcap.bundle import Bundle
from vlmcap.config.schema import BatchConfig
from vlmcap.engines.eval.evaluate import evaluate_bundle
from vlmcap.engines.outputs.page_fields import field_text, shown_error, shown_number
from vlmcap.engines.outputs.static_site import building_site, copy_assets, data_script, file_url, sheet_link

THUMBNAILS = "thumbs"  # the sheets' folder inside the site
EVAL_COMMAND = "eval --report"  # what the page's marker names (vlmcap/storage/output_guard.py)


def evaluate_with_page(
    bundle: Bundle, manifest: Path, settings: BatchConfig, out: Path, title: str | None = None
) -> dict[str, Any]:
    """`evaluate_bundle` whose decode workers write their sheets into the page being built at `out`
    (renamed into place whole once written); the records name the sheets where the page put them.
    `out` is checked by the caller before any work (`check_site_folder` with EVAL_COMMAND)."""
    with building_site(out, EVAL_COMMAND) as site:
        with_sheets = settings.model_copy(update={"thumbnails": str(site / THUMBNAILS)})
        evaluation = evaluate_bundle(bundle, manifest, with_sheets)
        write_eval_page(site, evaluation, manifest, title)
    return {**evaluation, "records": _moved_thumbnails(evaluation["records"], site, out)}


def write_eval_page(site: Path, evaluation: dict[str, Any], manifest: Path, title: str | None = None) -> None:
    """The page of `evaluate_bundle`'s result into `site`, whose `THUMBNAILS` folder holds the sheets."""
    shown = [_shown(record, site) for record in evaluation["records"]]
    data = {
        "title": title or manifest.name,
        "manifest": str(manifest.resolve()),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "metrics": evaluation["metrics"],
        "records": shown,
    }
    (site / "data" / "eval.js").write_text(data_script("vlmcapEval", data), encoding="utf-8")
    copy_assets(site, "eval.html", ("eval.js",))


def _moved_thumbnails(records: list[dict[str, Any]], built: Path, final: Path) -> list[dict[str, Any]]:
    """The records with their sheets' paths where the finished site put them (`built` renamed to `final`)."""
    moved = []
    for record in records:
        path = record.get("thumbnail")
        if isinstance(path, str) and Path(path).is_relative_to(built):
            record = {**record, "thumbnail": str(final.resolve() / Path(path).relative_to(built))}
        moved.append(record)
    return moved


def _shown(record: dict[str, Any], site: Path) -> dict[str, Any]:
    """What the page shows of one video (or reference segment): each field as text where its type is
    another, as the captions report shows it (engines/outputs/page_fields.py)."""
    video, status, error, scores = (record.get(key) for key in ("video", "status", "error", "scores"))
    video = field_text(video) or ""
    shown = {
        "video": video,
        "url": file_url(video) if video else None,
        "status": field_text(status),
        "reference": field_text(record.get("reference")),
        "caption": field_text(record.get("caption")),
        "error": shown_error(error) if error is not None or status == "error" else None,
        "scores": scores if isinstance(scores, dict) else None,  # vlmcap.metrics.captions' own, not a line's
    }
    for key in ("start_s", "end_s", "predicted_start_s", "predicted_end_s"):
        if key in record:
            shown[key] = shown_number(record[key])
    return shown | sheet_link(record.get("thumbnail"), site)
