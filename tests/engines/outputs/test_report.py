"""`vlmcap captions report`: the static site of a captions JSONL, built from the ledger's own rules and
looked at in a real headless Chromium from file://: counts, filters, search, a segment timeline,
no console errors, no network, and captions that try to be HTML shown as text."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from vlmcap.cli import cli
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.records import Outcome, SegmentCaption, to_record
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.outputs import report
from vlmcap.errors import ConfigError
from vlmcap.storage.files import file_identity
from vlmcap.video.thumbnails import thumbnail_path, write_contact_sheet

PROVENANCE = Provenance(
    "5224677c50feed5c",
    "이 영상을 한 문장으로 설명하세요.",
    {"vlmcap": "0.1.0", "vision": {"engine": "onnxruntime (CPU, fp32)"}, "llm": {"engine": "vllm (float32)"}},
)
HOSTILE = ["<script>window.pwned = 1</script>", '<img src=x onerror="window.pwned = 2">']
SCENES = ["빨간 원이 오른쪽으로 움직인다.", "노란색 " * 22, "파란 사각형이 사라진다."]


def _record(path: Path, caption: str | None, *, flags=(), scenes=None, error: str | None = None) -> dict:
    path.write_bytes(path.name.encode() * 50)
    task = VideoTask(str(path), file_identity(path))
    if error is not None:
        return to_record(Outcome(task, 0.5, error, f"{path}: {error.lower()} on purpose"), PROVENANCE)
    outcome = Outcome(task, decode_ms=40.0, frames_s=[0.5, 1.5], duration_s=2.0, decoder="pyav", caption=caption,
                      num_tokens=12, finish_reason="stop", vision_ms=4.0, llm_ms=20.0)  # fmt: skip
    if scenes:
        outcome.duration_s = 15.0
        outcome.set_segments(
            [SegmentCaption(5.0 * i, 5.0 * (i + 1), text, [5.0 * i + 2.5], 10, "stop") for i, text in enumerate(scenes)]
        )
    record = to_record(outcome, PROVENANCE)
    record["quality"]["flags"] = list(flags)
    if scenes:
        record["segments"][1]["quality"] = {"flags": ["repetition"], "retried": True}
    return record


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A night's ledger: captions (Korean, hostile, flagged), three error types, a multi-scene video, a
    superseded line, a foreign line and a torn last line; and the counts it must show."""
    root = tmp_path_factory.mktemp("night")
    videos = root / "videos"
    videos.mkdir()
    records = [_record(videos / f"ok{i:02d}.mp4", f"초록색 공이 {i}번 튄다.") for i in range(60)]
    records += [_record(videos / "hostile1.mp4", HOSTILE[0]), _record(videos / "hostile2.mp4", HOSTILE[1])]
    records += [_record(videos / "loop.mp4", "노란색 노란색 노란색", flags=["repetition"])]
    records += [_record(videos / "latin.mp4", "a red circle", flags=["wrong_script", "truncated"])]
    records += [_record(videos / "scenes.mp4", "", scenes=SCENES)]
    records += [_record(videos / f"bad{i}.mp4", None, error="NotAVideo") for i in range(7)]
    records += [_record(videos / "gone.mp4", None, error="VideoNotFound")]
    records += [_record(videos / "slow.mp4", None, error="DecodeTimeout")]
    records[-1]["thumbnail"] = str(root / "thumbs" / "never-written.jpg")  # a thumbnail that is gone
    scenes = next(r for r in records if r.get("segments"))  # a sheet per segment; the last one deleted since
    for i, segment in enumerate(scenes["segments"]):
        segment["thumbnail"] = str(thumbnail_path(root / "thumbs", scenes["file"]["path"], i))
        write_contact_sheet(Path(segment["thumbnail"]), np.full((8, 32, 32, 3), 60 * i, np.uint8))
    scenes["thumbnail"] = scenes["segments"][0]["thumbnail"]
    Path(scenes["segments"][2]["thumbnail"]).unlink()
    superseded = _record(videos / "ok00.mp4", None, error="DecodeTimeout")  # failed first, captioned later
    lines = [json.dumps(superseded, ensure_ascii=False)] + [json.dumps(r, ensure_ascii=False) for r in records]
    lines.insert(5, "# a hand-written note, not a record")
    path = root / "captions.jsonl"
    path.write_bytes(("\n".join(lines) + "\n").encode() + b'{"video": "torn')
    stats = root / "stats.json"
    stats.write_text(json.dumps({"captioned": 65, "failed": 9, "wall_s": 123.4}))
    site = root / "site"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(report, "PAGE_SIZE", 16)  # several pages: the page loads pages on demand
        built = report.build_report(path, site, stats_file=stats, srt_dir=root / "subs")
    return {"path": path, "site": site, "built": built, "records": records, "root": root}


def _data(site: Path, name: str) -> dict:
    text = (site / "data" / f"{name}.js").read_text(encoding="utf-8")
    return json.loads(text[text.index("(") + 1 : text.rindex(")")])


def test_the_site_counts_what_the_ledger_holds(night) -> None:
    built, site = night["built"], night["site"]
    assert (built.videos, built.duplicates, built.foreign_lines, built.foreign_at) == (74, 1, 1, [6])
    assert built.torn_at == len(night["records"]) + 3 and built.pages == 5  # 74 videos, 16 a page
    summary = _data(site, "summary")  # counters as [name, count] pairs: no name is an object key
    assert summary["statuses"] == [["ok", 65], ["error", 9]]
    errors = {kind: (count, examples) for kind, count, examples in summary["errors"]}
    assert {kind: n for kind, (n, _) in errors.items()} == {"NotAVideo": 7, "VideoNotFound": 1, "DecodeTimeout": 1}
    assert len(errors["NotAVideo"][1]) == report.EXAMPLES_PER_ERROR
    assert dict(summary["flags"]) == {"repetition": 1, "wrong_script": 1, "truncated": 1}
    assert summary["segment_flags"] == [["repetition", 1]] and summary["segments"] == 3
    assert json.loads(summary["run_stats"]) == {"captioned": 65, "failed": 9, "wall_s": 123.4}
    assert dict(summary["engines"]) == {"vision: onnxruntime (CPU, fp32)": 74, "llm: vllm (float32)": 74}  # errors too
    index = _data(site, "index")
    assert len(index["status"]) == 74 and index["pages"] == 5
    ok = index["statuses"].index("ok")
    assert index["status"].count(ok) == 65
    flagged = {video for _, videos in index["flags"] for video in videos}
    assert len(flagged) == 3  # loop, latin, and scenes (a segment's flag)
    first = _data(site, "page-00001")["records"][0]
    assert first["video"].endswith("ok00.mp4") and first["status"] == "ok"  # its latest line, not the failure
    assert first["srt"].startswith("file://") and first["srt"].endswith(".srt")


def test_an_existing_site_is_kept_unless_overwrite_and_a_failed_build_leaves_it_whole(night, monkeypatch) -> None:
    site = night["root"] / "kept"
    shutil.copytree(night["site"], site)
    before = sorted(p.relative_to(site) for p in site.rglob("*"))
    with pytest.raises(ConfigError, match=r"--out .*kept: already exists; pass --overwrite"):
        report.build_report(night["path"], site)

    def disk_full(*args) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "_write_page", disk_full)
    with pytest.raises(OSError):
        report.build_report(night["path"], site, overwrite=True)
    assert sorted(p.relative_to(site) for p in site.rglob("*")) == before
    assert not [p for p in site.parent.iterdir() if ".tmp" in p.name]


def test_bad_input_is_one_line_and_exit_2(night, tmp_path) -> None:
    runner = CliRunner()
    cases = [
        ([str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "a")], "missing.jsonl: no such file"),
        ([str(night["path"]), "--out", str(night["site"])], "already exists; pass --overwrite"),
        ([str(night["path"]), "--out", str(tmp_path / "b"), "--stats", str(night["path"])], "cannot read it as JSON"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["captions", "report", *args])
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    done = runner.invoke(cli, ["captions", "report", str(night["path"]), "--out", str(tmp_path / "c")])
    assert done.exit_code == 0 and "74 videos ->" in done.output and "1 foreign line skipped" in done.output


def test_a_stats_file_is_read_bounded_and_never_waits(night, tmp_path) -> None:
    """--stats: a FIFO is refused at once (a plain open waits for a writer), and anything but the JSON
    object `vlmcap batch --stats` writes is one line naming the file, exit 2."""
    fifo = tmp_path / "stats.fifo"
    os.mkfifo(fifo)
    files = {"list.json": b"[1, 2]", "latin1.json": b'{"a": "\xff"}', "big.json": b" " * (2 << 20) + b"{}"}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    cases = [
        (fifo, "not a regular file"),
        (tmp_path / "list.json", "not a JSON object"),
        (tmp_path / "latin1.json", "cannot read it as JSON"),
        (tmp_path / "big.json", "over 1,048,576 bytes"),  # read no further than that
        (tmp_path / "missing.json", "No such file"),
    ]
    for i, (stats, message) in enumerate(cases):
        args = ["captions", "report", str(night["path"]), "--out", str(tmp_path / f"site{i}"), "--stats", str(stats)]
        ran: dict = {}

        def report_in_thread(args: list[str] = args, ran: dict = ran) -> None:
            ran["result"] = CliRunner().invoke(cli, args)

        thread = threading.Thread(target=report_in_thread, daemon=True)
        thread.start()
        thread.join(15)
        if thread.is_alive():  # blocked in open(): be the writer it waits for, so the run ends
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            thread.join()
            pytest.fail(f"--stats {stats}: the report waited for a writer")
        result = ran["result"]
        assert result.exit_code == 2 and f"--stats {stats}: {message}" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert not (tmp_path / f"site{i}").exists()


# --- in a real browser ---------------------------------------------------------------------------


@pytest.fixture
def page(open_page, night):
    opened = open_page((night["site"] / "index.html").as_uri())
    opened.wait_for_selector("#records tbody tr")
    return opened


def _cards(page) -> dict[str, str]:
    return {c.get_attribute("data-count"): c.locator("b").inner_text() for c in page.locator(".card").all()}


def _shown_videos(page) -> list[str]:
    return [
        Path(v).name for v in page.locator("#records tbody tr").evaluate_all("rows => rows.map(r => r.dataset.video)")
    ]


def test_the_page_shows_the_counts_filters_and_searches(page) -> None:
    assert page.locator("html").get_attribute("lang") == "ko"
    cards = _cards(page)
    assert (cards["videos"], cards["ok"], cards["error"], cards["flagged"], cards["segments"]) == (
        "74",
        "65",
        "9",
        "3",
        "3",
    )
    assert page.locator("#errors details").count() == 3
    assert "NotAVideo: 7" in page.locator("#errors").inner_text()
    assert page.locator("#records tbody tr").count() == 50  # the first 50 of 74, from 4 pages
    assert "74 of 74 videos" in page.inner_text("#shown")

    page.select_option("#status-filter", label="error")
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('9 of')")
    assert len(_shown_videos(page)) == 9 and all(v.startswith(("bad", "gone", "slow")) for v in _shown_videos(page))
    assert page.locator("tr.error .placeholder").last.inner_text() == "thumbnail missing"  # slow.mp4's is gone
    assert page.locator("tr.error .placeholder").first.inner_text() == "no thumbnail"

    page.select_option("#status-filter", label="all")
    page.select_option("#flag-filter", label="repetition")
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('2 of')")
    assert sorted(_shown_videos(page)) == ["loop.mp4", "scenes.mp4"]

    page.select_option("#flag-filter", label="any")
    page.fill("#search", "파란 사각형")  # a segment's caption, on the last page
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('1 of')")
    assert _shown_videos(page) == ["scenes.mp4"]

    assert not page.problems, page.problems
    assert all(url.startswith("file://") for url in page.requests), page.requests


def test_a_segment_timeline_opens_each_segment(page) -> None:
    page.fill("#search", "scenes.mp4")
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('1 of')")
    segments = page.locator(".timeline button")
    assert segments.count() == 3 and "flagged" in (segments.nth(1).get_attribute("class") or "")
    sheet = page.locator("td.sheet img.thumb")
    loaded = "image => image.complete && image.naturalWidth > 0"
    assert sheet.get_attribute("src").endswith(".seg0000.jpg") and sheet.evaluate(loaded)  # the first segment's
    segments.nth(1).click()
    assert sheet.get_attribute("src").endswith(".seg0001.jpg") and sheet.evaluate(loaded)
    segments.nth(2).click()
    current = page.locator(".segments li.current")
    assert current.count() == 1 and SCENES[2] in current.inner_text() and "0:10-0:15" in current.inner_text()
    assert page.locator("td.sheet .placeholder").inner_text() == "thumbnail missing"  # deleted since the run
    assert "repetition" in page.locator(".segments li").nth(1).inner_text()
    assert page.locator("a.sidecar").first.get_attribute("href").endswith(".srt")
    assert not page.problems, page.problems


def test_captions_that_look_like_html_are_shown_as_text_and_never_run(page) -> None:
    page.fill("#search", "hostile")
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('2 of')")
    texts = page.locator("#records td.caption .text").all_inner_texts()
    assert sorted(texts) == sorted(HOSTILE)
    assert page.evaluate("window.pwned") is None
    policy = page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content")
    assert "script-src 'self' file:" in policy and "unsafe" not in policy  # and a second line of defence
    assert page.locator("#records img:not(.thumb)").count() == 0 and page.locator("#records script").count() == 0
    assert not page.problems, page.problems
