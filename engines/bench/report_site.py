"""`vlmcap bench report`: building and opening the captions report of a large night (docs/PERFORMANCE.md).

A synthetic ledger of `lines` records (statuses, errors, guard flags and segments mixed as a night
has them) is built into a site twice: once timed, once under `tracemalloc` for the peak of Python
memory the build holds. Then headless Chromium (the OS package) opens it from file:// and the time
to the first rendered table row is taken, the way a person waits for it.
"""

from __future__ import annotations

import json
import random
import shutil
import time
import tracemalloc
from pathlib import Path
from typing import Any

from vlmcap.engines.outputs.report import build_report
from vlmcap.storage.output_guard import claim_folder, write_marker

CAPTIONS = [
    "빨간 원이 왼쪽에서 오른쪽으로 천천히 움직입니다.",
    "노란 삼각형이 화면 가운데에서 회전합니다.",
    "파란 사각형이 위로 사라집니다.",
]
ERRORS = ["NotAVideo", "DecodeTimeout", "VideoNotFound", "RemoteFetchError"]
FLAGS = ["repetition", "wrong_script", "truncated"]


def synthetic_ledger(path: Path, lines: int, seed: int = 0) -> None:
    """`lines` caption records as `vlmcap batch` writes them: ~92% ok, ~5% flagged, ~3% with scenes."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            record: dict[str, Any] = {"video": f"/data/night/{i // 1000:03d}/clip-{i:07d}.mp4", "duration_s": 20.0}
            if rng.random() < 0.08:
                kind = rng.choice(ERRORS)
                record |= {"status": "error", "error": {"type": kind, "message": f"clip-{i:07d}.mp4: {kind}"}}
            else:
                flags = [rng.choice(FLAGS)] if rng.random() < 0.05 else []
                record |= {"status": "ok", "caption": rng.choice(CAPTIONS), "decoder": "decord"}
                record |= {"quality": {"flags": flags, "retried": bool(flags)}, "bundle": "5224677c50feed5c"}
                if rng.random() < 0.03:
                    record["segments"] = [
                        {"start_s": 5.0 * s, "end_s": 5.0 * (s + 1), "caption": rng.choice(CAPTIONS)} for s in range(4)
                    ]
            record["finished_at"] = f"2026-12-05T01:{(i // 3000) % 60:02d}:00Z"
            f.write(json.dumps(record, ensure_ascii=False) + "\n")


def first_render_s(index: Path) -> float:
    """Seconds from navigation to the first table row in headless Chromium."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise RuntimeError("no chromium on PATH (scripts/setup-env installs Debian's chromium package)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            start = time.perf_counter()
            page.goto(index.as_uri())
            page.wait_for_selector("#records tbody tr")
            return time.perf_counter() - start
        finally:
            browser.close()


def bench_report(lines_list: list[int], workdir: Path, browser: bool = True) -> dict[str, Any]:
    workdir = claim_folder("--workdir", workdir, "bench report")  # it writes ledgers and replaces sites there
    rows = []
    for lines in lines_list:
        ledger = workdir / f"captions-{lines}.jsonl"
        synthetic_ledger(ledger, lines)
        site = workdir / f"site-{lines}"
        start = time.perf_counter()
        stats = build_report(ledger, site, overwrite=True)
        build_s = time.perf_counter() - start
        tracemalloc.start()
        build_report(ledger, site, overwrite=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        row = {
            "lines": lines,
            "ledger_mb": round(ledger.stat().st_size / 1e6, 1),
            "site_mb": round(sum(p.stat().st_size for p in site.rglob("*") if p.is_file()) / 1e6, 1),
            "pages": stats.pages,
            "build_s": round(build_s, 2),
            "build_peak_python_mb": round(peak / 1e6, 1),
        }
        if browser:
            row["first_render_s"] = round(first_render_s(site / "index.html"), 2)
        rows.append(row)
    write_marker(workdir, "bench report")
    return {"rows": rows}
