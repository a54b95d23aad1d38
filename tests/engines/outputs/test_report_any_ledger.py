"""The captions report and the eval page build and render for any ledger `captions convert` reads
(docs/BATCH.md, "Looking at a night"): hypothesis makes up ledgers whose fields hold any JSON type,
whose names hold undecodable bytes and lone surrogates, and whose error types and flags are named
`__proto__` or `constructor`; the report counts what convert counts, and a hostile night is looked
at in headless Chromium."""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlmcap.engines.eval.eval_report import write_eval_page
from vlmcap.engines.outputs import report
from vlmcap.engines.outputs.convert import STATUSES, convert_captions
from vlmcap.engines.outputs.ledger_scan import latest_records, scan_ledger
from vlmcap.errors import ConfigError
from vlmcap.storage.files import json_line, open_regular

# Every object key the page data may hold: the pages' own names. A name from the data (an error type,
# a flag) as a key would be lost in a JavaScript object literal when it is `__proto__`.
PAGE_KEYS = {
    "page_size", "pages", "statuses", "status", "flags", "page", "records", "video", "url", "caption",
    "error", "type", "message", "duration_s", "decoder", "thumbnail", "thumbnail_missing", "segments",
    "start_s", "end_s", "more", "srt", "vtt", "title", "input", "built_at", "ledger", "videos", "lines",
    "duplicates", "torn_at", "foreign_lines", "foreign_at", "run_stats", "errors", "segment_flags",
    "engines", "bundles", "prompts", "decoders", "video_seconds", "first_finished", "last_finished",
    "videos_per_hour", "manifest", "metrics", "reference", "scores", "predicted_start_s", "predicted_end_s",
    "n", "failed", "vision", "llm",
}  # fmt: skip
JS_NAMES = ["__proto__", "constructor", "toString", "hasOwnProperty"]

# Names: a few shared ones (so videos get several lines), undecodable bytes as a file system gives
# them (surrogate escapes, NULs), and pieces no file name has (a lone high surrogate).
pieces = st.sampled_from(["a", "가", "/", ".mp4", "\udce9", "\udcff", "\ud800", "\x00", "\\", "<b>", " ", *JS_NAMES])
names = st.one_of(
    st.sampled_from(["/v/a.mp4", "/v/가.mp4", "/v/__proto__", "rel/b.mp4", os.fsdecode(b"/v/caf\xe9.mp4")]),
    st.binary(min_size=1, max_size=6).map(lambda b: "/v/" + os.fsdecode(b)),
    st.lists(pieces, min_size=1, max_size=5).map("".join),
)
texts = st.one_of(st.text(max_size=6), names)
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.just(10**400), st.floats(allow_nan=False, allow_infinity=False), texts
)
keys = st.sampled_from(["type", *JS_NAMES]) | texts
any_json = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=3), max_leaves=5
)
flag_lists = st.lists(st.sampled_from(["repetition", "truncated", *JS_NAMES]) | any_json, max_size=3)
quality = st.fixed_dictionaries({"flags": flag_lists}, optional={"retried": any_json})
segment = st.fixed_dictionaries(
    {},
    optional={
        "start_s": st.floats(0, 100) | any_json,
        "end_s": st.floats(0, 100) | any_json,
        "caption": texts | any_json,
        "quality": quality | any_json,
        "thumbnail": names | any_json,
    },
)
# Each field as vlmcap writes it, or any other JSON value.
FIELDS = {
    "caption": texts,
    "error": st.fixed_dictionaries(
        {"type": st.sampled_from(["NotAVideo", "", *JS_NAMES]) | any_json, "message": any_json}
    ),
    "quality": quality,
    "segments": st.lists(segment, max_size=3),
    "duration_s": st.floats(0, 1e4),
    "decoder": st.sampled_from(["pyav", "decord"]),
    "thumbnail": names,
    "finished_at": st.sampled_from(
        ["2026-12-05T01:00:00Z", "2026-12-05T03:30:00.5Z", "2026-12-05T02:00:00", "0001-01-01T00:00:00+01:00", "x"]
    ),
    "provenance": st.fixed_dictionaries({"vision": st.fixed_dictionaries({"engine": texts | any_json})}),
    "file": st.fixed_dictionaries({"path": names, "size": st.integers(0, 9), "mtime_ns": st.integers(0, 9)}),
    "bundle": texts,
    "prompt": texts,
}
records = st.fixed_dictionaries(
    # A `video` that is no string or a status other than ok/error makes a foreign line, for both readers.
    {"video": names | st.sampled_from([None, 3]), "status": st.sampled_from(["ok", "error"]) | any_json},
    optional={key: strategy | any_json for key, strategy in FIELDS.items()},
)
# Lines json_line cannot write, foreign to every reader: numbers past a float's range, not JSON.
RAW_LINES = [
    b'{"video": "/v/inf.mp4", "status": "ok", "duration_s": 1e400, "timings_ms": {"decode": -1e400}}',
    b'{"video": "/v/nul.mp4", "status": "error", "error": {"type": "\\u0000", "message": "\\ud800"}}',
    b"not json",
]
lines = records.map(lambda r: json_line(r).encode()) | st.sampled_from([r + b"\n" for r in RAW_LINES])
ledgers = st.lists(lines, max_size=10)


def _escaped(text: str) -> str:
    """As the pages show a name (docs/BATCH.md): an undecodable byte as `\\xff`, another lone surrogate as `\\ud800`."""
    return "".join(
        (f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}")
        if 0xD800 <= ord(c) <= 0xDFFF
        else c
        for c in text
    )


def _data(path: Path) -> Any:
    text = path.read_bytes().decode("utf-8")  # UTF-8 throughout: lone surrogates shown escaped
    return json.loads(text[text.index("(") + 1 : text.rindex(")")])


def _keys(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in _keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in _keys(v)}
    assert not isinstance(value, str) or _escaped(value) == value  # no lone surrogate left
    return set()


def _converted(src: Path, work: Path) -> dict[str, int]:
    """Rows `captions convert` writes for each --status (0 where it finds no record at all)."""
    counts = {}
    for status in STATUSES:
        try:
            counts[status] = convert_captions(src, "csv", work / f"{status}.csv", status=status).records
        except ConfigError as e:
            assert "no caption record" in str(e) or "none of its" in str(e) or "is empty" in str(e)
            counts[status] = 0
    return counts


def _string_fields(record: dict[str, Any]) -> tuple[str | None, list[str]]:
    """(the error type, the flags) of a record where they are non-empty strings, as the page shows them."""
    error = record.get("error")
    kind = error.get("type") if isinstance(error, dict) else None
    quality = record.get("quality")
    flags = quality.get("flags") if isinstance(quality, dict) else None
    shown_flags = [_escaped(f) for f in flags if isinstance(f, str) and f] if isinstance(flags, list) else []
    return (_escaped(kind) if isinstance(kind, str) and kind else None), shown_flags


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(lines=ledgers)
def test_any_ledger_convert_reads_makes_both_pages_with_convert_s_counts(lines: list[bytes], tmp_path: Path) -> None:
    work = Path(tempfile.mkdtemp(dir=tmp_path))
    src = work / "captions.jsonl"
    src.write_bytes(b"".join(lines))
    converted = _converted(src, work)
    with mock.patch.object(report, "PAGE_SIZE", 3):  # several pages
        built = report.build_report(src, work / "site", srt_dir=work / "subs")

    site = work / "site" / "data"
    summary, index = _data(site / "summary.js"), _data(site / "index.js")
    pages = [_data(site / f"page-{n:05d}.js") for n in range(1, built.pages + 1)]
    assert not (_keys(summary) | _keys(index) | {k for p in pages for k in _keys(p)}) - PAGE_KEYS
    shown = [record for page in pages for record in page["records"]]

    assert built.videos == len(shown) == len(index["status"]) == converted["all"]
    statuses = dict(summary["statuses"])
    by_index = Counter(index["statuses"][i] for i in index["status"])
    for status in ("ok", "error"):
        assert statuses.get(status, 0) == by_index[status] == converted[status]
    assert [r["status"] for r in shown] == [index["statuses"][i] for i in index["status"]]
    assert sum(count for _, count, _ in summary["errors"]) == converted["error"]
    assert all(len(examples) <= report.EXAMPLES_PER_ERROR for _, _, examples in summary["errors"])

    # Error types and flags that are strings are shown as they are, `__proto__` included.
    errors, flags = dict((kind, count) for kind, count, _ in summary["errors"]), dict(summary["flags"])
    flagged = {name: set(videos) for name, videos in index["flags"]}
    with open_regular(src) as f:
        latest = [record for record, _ in latest_records(f, scan_ledger(f))]
    kinds = Counter()
    for video, record in enumerate(latest):
        kind, names_ = _string_fields(record)
        if record["status"] == "error" and kind is not None:
            kinds[kind] += 1
        assert all(video in flagged[flag] and flags[flag] > 0 for flag in names_)
        assert shown[video]["video"] == _escaped(record["video"])
    assert all(errors[kind] >= count for kind, count in kinds.items())

    # The eval page shows records of the same make (video, status, caption, error, sheet) as text.
    eval_site = work / "eval"
    (eval_site / "data").mkdir(parents=True)
    evaluated = [
        {key: record[key] for key in ("video", "status", "caption", "error", "thumbnail") if key in record}
        | {"reference": record.get("prompt"), "start_s": record.get("duration_s")}
        for record in latest
    ]
    metrics = {"n": len(evaluated), "failed": 0, "engines": {"vision": "onnx", "llm": "vllm"}}
    write_eval_page(eval_site, {"metrics": metrics, "records": evaluated}, work / "manifest.jsonl")
    evaluation = _data(eval_site / "data" / "eval.js")
    assert not _keys(evaluation) - PAGE_KEYS and len(evaluation["records"]) == len(latest)


# --- a hostile night in a real browser ---------------------------------------------------------------

LATIN1_NAME = os.fsdecode(b"/v/caf\xe9.mp4")  # a Latin-1 name on a UTF-8 system: shown as /v/caf\xe9.mp4
HOSTILE_NIGHT = [
    {"video": LATIN1_NAME, "status": "ok", "caption": "빨간 원", "quality": {"flags": ["__proto__", "constructor"]}},
    {"video": "/v/proto1.mp4", "status": "error", "error": {"type": "__proto__", "message": "a type named so"}},
    {"video": "/v/proto2.mp4", "status": "error", "error": {"type": "__proto__", "message": "again"}},
    {"video": "/v/text-error.mp4", "status": "error", "error": "decoder fell over"},
    {"video": "/v/odd.mp4", "status": "ok", "caption": 42, "decoder": ["pyav"], "duration_s": "long"},
    {"video": "/v/odd2.mp4", "status": "ok", "caption": "ok", "segments": [1, 2], "quality": "ok", "thumbnail": 7},
]


# A number past a float's range, which only a hand-written line holds: no strict JSON, a foreign line.
INFINITE = (
    b'{"video": "/v/inf.mp4", "status": "ok", "duration_s": 1e400, "segments": [{"start_s": -1e400, "end_s": 1}]}'
)


def _open_report(tmp_path: Path, open_page):
    src = tmp_path / "hostile.jsonl"
    src.write_bytes("".join(json_line(r) for r in HOSTILE_NIGHT).encode("ascii") + INFINITE + b"\n")  # \udcXX escapes
    built = report.build_report(src, tmp_path / "site")
    assert (built.videos, built.foreign_lines, built.foreign_at) == (6, 1, [7])
    page = open_page((tmp_path / "site" / "index.html").as_uri())
    page.wait_for_selector("#records tbody tr")
    return page


def _row(page, video: str):
    return page.locator("#records tbody tr").filter(has=page.get_by_text(video, exact=True))


def test_a_hostile_night_is_shown_whole_in_the_browser(tmp_path, open_page) -> None:
    page = _open_report(tmp_path, open_page)
    cards = {c.get_attribute("data-count"): c.locator("b").inner_text() for c in page.locator(".card").all()}
    assert (cards["videos"], cards["ok"], cards["error"], cards["flagged"]) == ("6", "3", "3", "1")
    assert page.locator('#errors details[data-error="__proto__"] summary').inner_text() == "__proto__: 2"
    assert page.locator('#errors details[data-error="unknown"] summary').inner_text() == "unknown: 1"
    assert {"__proto__: 1", "constructor: 1"} <= set(page.locator("#flags li").all_inner_texts())

    escaped = "/v/caf\\xe9.mp4"
    latin = _row(page, escaped)
    assert latin.count() == 1 and latin.get_attribute("data-video") == escaped
    assert latin.locator("a").first.get_attribute("href") == "file:///v/caf%E9.mp4"  # the file's own bytes
    assert latin.locator(".flag").all_inner_texts() == ["__proto__", "constructor"]
    assert _row(page, "/v/text-error.mp4").locator("td.caption .text").inner_text() == "unknown: decoder fell over"
    odd = _row(page, "/v/odd.mp4")
    assert odd.locator("td.caption .text").inner_text() == "42"
    assert [c.strip() for c in odd.locator("td").all_inner_texts()[3:]] == ["long", '["pyav"]']
    details = _row(page, "/v/odd2.mp4").locator("details.provenance")
    details.locator("summary").click()
    shown = json.loads(details.locator("pre").inner_text())
    assert shown == {"quality": "ok", "thumbnail": 7, "segments": [1, 2]}
    assert _row(page, "/v/inf.mp4").count() == 0  # its line is foreign, counted in the ledger's numbers

    page.select_option("#flag-filter", label="__proto__")
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('1 of 6')")
    page.select_option("#flag-filter", label="any")
    page.fill("#search", "a type named")  # an error message
    page.wait_for_function("document.querySelector('#shown').textContent.startsWith('1 of 6')")
    assert not page.problems, page.problems


def test_the_eval_page_shows_hostile_records_as_text(tmp_path, open_page) -> None:
    site = tmp_path / "eval"
    (site / "data").mkdir(parents=True)
    evaluated = [
        {"video": LATIN1_NAME, "status": "ok", "caption": 42, "reference": "빨간 원", "scores": {"chrf++": 12.5}},
        {"video": "/v/b.mp4", "status": "error", "error": "decoder fell over", "reference": None, "start_s": "x"},
    ]
    metrics = {"n": 1, "failed": 1, "attribute_accuracy": {"colour": 0.5}, "engines": {"vision": "onnx"}}
    write_eval_page(site, {"metrics": metrics, "records": evaluated}, tmp_path / "manifest.jsonl")
    page = open_page((site / "index.html").as_uri())
    page.wait_for_selector("#records tbody tr")
    rows = page.locator("#records tbody tr")
    assert rows.nth(0).get_attribute("data-video") == "/v/caf\\xe9.mp4"
    assert rows.nth(0).locator("td.prediction").inner_text() == "42"
    assert rows.nth(1).locator("td.prediction").inner_text() == "unknown: decoder fell over"
    assert "x" in rows.nth(1).locator("td").nth(1).inner_text()
    assert page.locator("#attributes li").inner_text() == "colour: 50.0%"
    assert not page.problems, page.problems
