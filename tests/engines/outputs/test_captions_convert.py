"""`vlmcap captions convert`: the captions JSONL as Parquet, CSV and WebDataset, each read back by its
own reader (pyarrow, pandas, csv, tarfile) and compared with the JSONL; the ledger's rules (latest
line wins, torn and foreign lines skipped and counted); bad input is one line and exit 2, and a
failed conversion leaves nothing behind."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from repo_paths import REPO

from vlmcap.cli import captions as captions_cli
from vlmcap.cli import cli
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.records import Outcome, SegmentCaption, to_record
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.engines.outputs import convert, schema, webdataset_writer
from vlmcap.engines.outputs.convert import convert_captions
from vlmcap.engines.outputs.schema import SCHEMA, SCHEMA_VERSION, format_timestamp, to_row
from vlmcap.engines.outputs.webdataset_writer import sample_key
from vlmcap.storage.files import file_identity

BUNDLE, PROMPT = "5224677c50feed5c", "이 영상을 한 문장으로 설명하세요."
# What Provenance.of_run writes for a bundle and a run (engines/batch/provenance.py), engines started.
PROVENANCE = Provenance(
    BUNDLE,
    PROMPT,
    {
        "vlmcap": "0.1.0",
        "vision": {"precision": "fp16", "engine": "onnx (CPUExecutionProvider)"},
        "llm": {"dtype": "bfloat16", "quantization": "w8a8", "engine": "vllm (bfloat16, w8a8)"},
        "generation": {
            "max_new_tokens": 96,
            "stop_token_ids": [151645],
            "temperature": 0.0,
            "top_p": 1.0,
            "repetition_penalty": 1.0,
            "seed": None,
        },
    },
)
SEGMENTED = ['빨간 원이 "천천히" 오른쪽으로, 움직인다.', "파란 사각형이 나타난다.\n그리고 사라진다."]


def _task(path: Path) -> VideoTask:
    return VideoTask(str(path), file_identity(path))


def _ok(path: Path, caption: str, segments: list[str] | None = None, duplicate_of: str | None = None) -> dict:
    task = _task(path)
    if duplicate_of is not None:  # a --dedup line: the file's hash, the caption copied from another video
        task.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    outcome = Outcome(
        task,
        decode_ms=43.0,
        frames_s=[0.125, 0.375, 0.625],
        duration_s=2.0,
        decoder="pyav",
        caption=caption,
        num_tokens=17,
        finish_reason="stop",
        vision_ms=4.8,
        llm_ms=21.6,
        duplicate_of=duplicate_of,
    )
    if segments is not None:
        outcome.duration_s = 65.0
        outcome.set_segments(
            [
                SegmentCaption(30.0 * i, 30.0 * (i + 1), text, [30.0 * i + 1.875, 30.0 * i + 5.625], 12 + i, "stop")
                for i, text in enumerate(segments)
            ]
        )
    return to_record(outcome, PROVENANCE)


def _error(path: Path) -> dict:
    outcome = Outcome(_task(path), 0.7, "NotAVideo", f"{path}: not a media file FFmpeg recognises")
    return to_record(outcome, PROVENANCE)


def _line(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False) + "\n"


@pytest.fixture
def ledger(tmp_path: Path) -> tuple[Path, dict[str, list[dict]]]:
    """A ledger as runs leave it, and the records each --status keeps (latest line per video, file order).

    d.mp4 failed, then a --retry-errors run captioned it (its later line wins); a hand-edited line and
    a torn last line (a crash mid-write) sit between the records.
    """
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("a.mp4", "b.mp4", "c.mp4", "d.mp4"):
        (videos / name).write_bytes(name.encode() * 100)
    a = _ok(videos / "a.mp4", "", segments=SEGMENTED)
    b = _ok(videos / "b.mp4", '초록색 공이 튄다, "높이".', duplicate_of=str(videos / "e.mp4"))
    c = _error(videos / "c.mp4")
    d_old, d = _error(videos / "d.mp4"), _ok(videos / "d.mp4", "노란 삼각형이 회전한다.")
    path = tmp_path / "captions.jsonl"
    torn = _line(_ok(videos / "b.mp4", "잘린 줄"))[:57].encode()
    text = "".join([_line(d_old), _line(a), "# hand-written note, not a record\n", _line(b), _line(c), _line(d)])
    path.write_bytes(text.encode() + torn)
    return path, {"ok": [a, b, d], "error": [c], "all": [a, b, c, d]}


def run(*args: str):
    return CliRunner().invoke(cli, ["captions", "convert", *map(str, args)], catch_exceptions=False)


def _no_temporaries(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".vlmcap-tmp-" in p.name]


# --- the ledger's rules ---


def test_latest_line_per_video_torn_and_foreign_lines_counted(ledger) -> None:
    path, expected = ledger
    result = run(path, "--to", "parquet", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats == {
        "input": str(path),
        "format": "parquet",
        "status": "ok",
        "outputs": [str(path.with_suffix(".parquet"))],
        "records": 3,
        "lines": 7,
        "torn_lines": 1,
        "foreign_lines": 1,
        "duplicates": 1,
        "left_out": 1,
        "videos_unavailable": 0,
    }
    summary = run(path, "--to", "csv").stdout.strip()
    assert summary.startswith(f"3 records -> {path.with_suffix('.csv')}")
    assert "skipped 1 torn and 1 foreign lines" in summary and "1 superseded line" in summary
    assert "1 not ok left out" in summary and "\n" not in summary
    assert pq.read_table(path.with_suffix(".parquet")).column("video").to_pylist() == [
        r["video"] for r in expected["ok"]
    ]


# --- Parquet ---


def _expected_row(record: dict) -> dict:
    """A record's row, written out by hand from docs/BATCH.md's table (not through to_row)."""
    error, file, timings = record.get("error") or {}, record.get("file") or {}, record["timings_ms"]
    provenance, quality = record["provenance"], record.get("quality") or {}
    generation = provenance["generation"]
    return {
        "video": record["video"],
        "status": record["status"],
        "caption": record.get("caption"),
        "duration_s": record.get("duration_s"),
        "num_tokens": record.get("num_tokens"),
        "finish_reason": record.get("finish_reason"),
        "frames_s": record.get("frames_s"),
        "segments": record.get("segments"),
        "decoder": record.get("decoder"),
        "quality_flags": quality.get("flags"),
        "quality_retried": quality.get("retried"),
        "bundle": record["bundle"],
        "prompt": record["prompt"],
        "vlmcap_version": provenance["vlmcap"],
        "vision_precision": provenance["vision"]["precision"],
        "vision_engine": provenance["vision"]["engine"],
        "llm_dtype": provenance["llm"]["dtype"],
        "llm_quantization": provenance["llm"]["quantization"],
        "llm_engine": provenance["llm"]["engine"],
        **{k: generation[k] for k in ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "seed")},
        "stop_token_ids": generation["stop_token_ids"],
        "error_type": error.get("type"),
        "error_message": error.get("message"),
        "file_path": file.get("path"),
        "file_size": file.get("size"),
        "file_mtime_ns": file.get("mtime_ns"),
        "sha256": record.get("sha256"),
        "duplicate_of": record.get("duplicate_of"),
        "decode_ms": timings.get("decode"),
        "vision_ms": timings.get("vision"),
        "llm_ms": timings.get("llm"),
        "finished_at": record["finished_at"],
        "extra": None,
    }


def test_parquet_reads_back_with_pyarrow_and_pandas_typed_and_equal(ledger, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    path, expected = ledger
    out = tmp_path / "out" / "captions.parquet"
    assert run(path, "--to", "parquet", "--status", "all", "--out", out).exit_code == 0

    table = pq.read_table(out)
    assert table.schema.equals(SCHEMA)
    assert table.schema.metadata[b"vlmcap.schema"] == SCHEMA_VERSION.encode()
    types = dict(zip(table.schema.names, table.schema.types, strict=True))
    assert types["caption"] == pa.string() and types["num_tokens"] == pa.int64()
    assert types["frames_s"] == pa.list_(pa.float64())
    assert pa.types.is_list(types["segments"]) and pa.types.is_struct(types["segments"].value_type)
    assert [f.name for f in types["segments"].value_type] == [
        "start_s",
        "end_s",
        "caption",
        "frames_s",
        "num_tokens",
        "finish_reason",
        "quality",
    ]
    assert types["quality_retried"] == pa.bool_() and types["seed"] == pa.int64()
    assert types["finished_at"] == pa.timestamp("us", tz="UTC")
    rows = table.to_pylist()
    for row in rows:
        row["finished_at"] = format_timestamp(row["finished_at"])
    assert rows == [_expected_row(r) for r in expected["all"]]
    assert rows[0]["caption"] == "\n".join(SEGMENTED)

    df = pd.read_parquet(out)
    assert list(df.columns) == SCHEMA.names
    assert pd.api.types.is_string_dtype(df["caption"])
    assert df["video"].tolist() == [r["video"] for r in expected["all"]]
    assert df.loc[0, "caption"] == "\n".join(SEGMENTED)
    assert pd.isna(df.loc[2, "caption"]) and df.loc[2, "error_type"] == "NotAVideo"
    assert list(df.loc[1, "frames_s"]) == expected["all"][1]["frames_s"]
    segments = [
        {**s, "frames_s": list(s["frames_s"]), "quality": {**s["quality"], "flags": list(s["quality"]["flags"])}}
        for s in df.loc[0, "segments"]
    ]
    assert segments == expected["all"][0]["segments"]
    assert df.loc[0, "file_mtime_ns"] == expected["all"][0]["file"]["mtime_ns"]  # int64, not float


def test_an_all_error_ledger_keeps_every_column_typed(tmp_path: Path) -> None:
    video = tmp_path / "broken.mp4"
    video.write_bytes(b"not a video")
    path = tmp_path / "errors.jsonl"
    path.write_text(_line(_error(video)), encoding="utf-8")
    assert run(path, "--to", "parquet", "--status", "all").exit_code == 0
    table = pq.read_table(path.with_suffix(".parquet"))
    assert table.schema.equals(SCHEMA) and table.num_rows == 1
    assert table.column("caption").to_pylist() == [None] and table.column("frames_s").to_pylist() == [None]
    # nothing with the default --status ok: a valid, empty file with the schema
    assert run(path, "--to", "parquet", "--overwrite").exit_code == 0
    empty = pq.read_table(path.with_suffix(".parquet"))
    assert empty.num_rows == 0 and empty.schema.equals(SCHEMA)


def test_fields_no_column_holds_go_to_extra_not_lost(ledger, tmp_path: Path) -> None:
    _, expected = ledger
    record = json.loads(json.dumps(expected["ok"][0]))
    record["seed"] = 7  # a provenance field a later vlmcap adds
    record["timings_ms"]["queue"] = 1.5
    record["segments"][1]["speaker"] = "A"
    record["num_tokens"] = "31"  # hand-edited into the wrong type
    row = to_row(record)
    assert row["num_tokens"] is None and row["caption"] == record["caption"] and row["decode_ms"] == 43.0
    assert row["segments"][1] == {k: v for k, v in record["segments"][1].items() if k != "speaker"}
    assert json.loads(row["extra"]) == {
        "seed": 7,
        "timings_ms": {"queue": 1.5},
        "segments": [{}, {"speaker": "A"}],
        "num_tokens": "31",
    }
    hand = tmp_path / "hand.jsonl"
    hand.write_text(_line(record), encoding="utf-8")
    assert run(hand, "--to", "parquet").exit_code == 0
    assert pq.read_table(hand.with_suffix(".parquet")).column("extra").to_pylist() == [row["extra"]]


# --- CSV ---


def test_csv_is_utf8_with_quoted_newlines_and_json_lists(ledger, tmp_path: Path) -> None:
    path, expected = ledger
    out = tmp_path / "report.csv"
    assert run(path, "--to", "csv", "--status", "all", "--out", out).exit_code == 0
    raw = out.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf") and "빨간 원이".encode() in raw
    with open(out, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == SCHEMA.names
    assert [r["video"] for r in rows] == [r["video"] for r in expected["all"]]
    a, b, c, d = rows
    assert a["caption"] == "\n".join(SEGMENTED) and b["caption"] == expected["all"][1]["caption"]
    assert json.loads(a["segments"]) == expected["all"][0]["segments"]
    assert json.loads(b["frames_s"]) == expected["all"][1]["frames_s"] and b["segments"] == ""
    assert c["caption"] == "" and c["error_type"] == "NotAVideo" and c["error_message"].endswith("recognises")
    assert int(d["file_mtime_ns"]) == expected["all"][3]["file"]["mtime_ns"] and float(d["llm_ms"]) == 21.6
    assert [r["finished_at"] for r in rows] == [r["finished_at"] for r in expected["all"]]
    assert {r["extra"] for r in rows} == {""}


# --- WebDataset ---


def _samples(tar_path: Path) -> dict[str, dict[str, bytes]]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            key, extension = member.name.split(".", 1)  # WebDataset: the key ends at the first dot
            samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def test_webdataset_samples_hold_the_record_and_caption_under_stable_keys(ledger) -> None:
    path, expected = ledger
    assert run(path, "--to", "webdataset", "--status", "all").exit_code == 0
    out = path.with_suffix(".tar")
    samples = _samples(out)
    assert list(samples) == [sample_key(r) for r in expected["all"]]
    for key, record in zip(samples, expected["all"], strict=True):
        assert re.fullmatch(r"[A-Za-z0-9_-]+", key)
        assert json.loads(samples[key]["json"]) == record
        if record["status"] == "ok":
            assert samples[key]["txt"].decode("utf-8") == record["caption"]
        else:
            assert set(samples[key]) == {"json"}  # an error has no caption
    first = out.read_bytes()
    assert run(path, "--to", "webdataset", "--status", "all", "--overwrite").exit_code == 0
    assert out.read_bytes() == first  # the same ledger, the same bytes


def test_sample_keys_are_ascii_and_unique_for_same_named_files() -> None:
    def record(path: str) -> dict:
        return {"video": path, "status": "ok", "file": {"path": path, "size": 1, "mtime_ns": 1}}

    one, two = sample_key(record("/data/1일차/회의 녹화.mp4")), sample_key(record("/data/2일차/회의 녹화.mp4"))
    assert one != two and re.fullmatch(r"[0-9a-f]{16}", one)
    assert sample_key(record("/data/cam.01/clip 7.final.MP4")).startswith("clip_7_final-")


def test_webdataset_shards_and_overwrite_removes_stale_shards(ledger, tmp_path: Path) -> None:
    path, expected = ledger
    pattern = tmp_path / "shards" / "train-%06d.tar"
    result = run(path, "--to", "webdataset", "--shard-size", "2", "--out", pattern, "--json")
    assert result.exit_code == 0, result.output
    shards = [tmp_path / "shards" / f"train-{i:06d}.tar" for i in range(2)]
    assert json.loads(result.stdout)["outputs"] == [str(s) for s in shards]
    assert [len(_samples(s)) for s in shards] == [2, 1]
    assert [k for s in shards for k in _samples(s)] == [sample_key(r) for r in expected["ok"]]

    refused = run(path, "--to", "webdataset", "--shard-size", "1", "--out", pattern)
    assert refused.exit_code == 2 and "train-000000.tar: exists; pass --overwrite" in refused.stderr
    assert run(path, "--to", "webdataset", "--shard-size", "1", "--out", pattern, "--overwrite").exit_code == 0
    assert len(list((tmp_path / "shards").glob("train-*.tar"))) == 3
    assert run(path, "--to", "webdataset", "--shard-size", "5", "--out", pattern, "--overwrite").exit_code == 0
    assert [p.name for p in (tmp_path / "shards").iterdir()] == ["train-000000.tar"]  # stale shards gone

    # no %d in the name: one is added
    assert run(path, "--to", "webdataset", "--shard-size", "2").exit_code == 0
    assert (path.parent / "captions-000001.tar").exists()


def test_webdataset_with_videos_leaves_out_a_video_changed_or_made_a_pipe_since_captioned(ledger) -> None:
    path, expected = ledger
    b = Path(expected["ok"][1]["file"]["path"])
    b.write_bytes(b"re-encoded since")  # the caption no longer describes these bytes
    c = Path(expected["ok"][2]["file"]["path"])
    c.unlink()
    os.mkfifo(c)  # a plain open would wait for a writer forever
    result = run(path, "--to", "webdataset", "--with-videos", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["records"] == 1 and stats["videos_unavailable"] == 2
    samples = _samples(path.with_suffix(".tar"))
    assert list(samples) == [sample_key(expected["ok"][0])]
    assert samples[sample_key(expected["ok"][0])]["mp4"] == Path(expected["ok"][0]["file"]["path"]).read_bytes()


# --- bad input, atomicity ---


def _one_line_error(result, *parts: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlmcap: error: "), result.stderr
    for part in parts:
        assert part in lines[0]


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(ledger, tmp_path: Path) -> None:
    path, _ = ledger
    before = set(tmp_path.rglob("*"))
    _one_line_error(run(tmp_path / "missing.jsonl", "--to", "csv"), "missing.jsonl: no such file")
    text = tmp_path / "notes.txt"
    text.write_text("hello\nworld\n")
    _one_line_error(run(text, "--to", "parquet"), "notes.txt: not a captions JSONL", "2 lines")
    video = tmp_path / "videos" / "a.mp4"
    video.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(100))
    _one_line_error(run(video, "--to", "csv", "--out", tmp_path / "x.csv"), "a.mp4: not a captions JSONL")
    _one_line_error(run(tmp_path, "--to", "csv"), "is a directory")
    _one_line_error(run(path, "--to", "csv", "--out", path), "is CAPTIONS")
    _one_line_error(run(path, "--to", "parquet", "--shard-size", "2"), "--shard-size and --with-videos")
    _one_line_error(run(path, "--to", "webdataset", "--shard-size", "2", "--out", tmp_path / "t-%s.tar"), "%d")
    unknown = run(path, "--to", "xml")
    assert unknown.exit_code == 2 and "'xml' is not one of 'parquet', 'csv', 'webdataset'" in unknown.stderr
    assert set(tmp_path.rglob("*")) == before | {text}


def test_a_ledger_ending_in_nul_bytes_converts_as_batch_reads_it(ledger, tmp_path: Path) -> None:
    """What a power cut leaves (blocks allocated, never written) is a torn tail, not a binary file."""
    path, expected = ledger
    cut = tmp_path / "power-cut.jsonl"
    cut.write_bytes(path.read_bytes().rsplit(b"\n", 1)[0] + b"\n" + b"\0" * 4096)
    result = run(cut, "--to", "csv", "--status", "all", "--json")
    assert result.exit_code == 0, result.output
    stats = json.loads(result.stdout)
    assert stats["records"] == len(expected["all"]) and stats["torn_lines"] == 1


def test_an_empty_ledger_and_a_pipe_are_refused_without_waiting(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    _one_line_error(run(empty, "--to", "parquet"), "empty.jsonl: no caption record to convert: the file is empty")
    blank = tmp_path / "blank.jsonl"
    blank.write_text("\n\n")
    _one_line_error(run(blank, "--to", "parquet"), "blank.jsonl: not a captions JSONL: none of its 2 lines")
    fifo = tmp_path / "pipe.jsonl"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    command = [sys.executable, "-m", "vlmcap", "captions", "convert", str(fifo), "--to", "csv"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pipe.jsonl: not a regular file" in done.stderr
    assert not list(tmp_path.glob("*.csv")) and not list(tmp_path.glob("*.parquet"))


def test_an_existing_output_is_kept_without_overwrite_and_on_failure(ledger, monkeypatch) -> None:
    path, _ = ledger
    out = path.with_suffix(".csv")
    yesterday = ",".join(schema.SCHEMA.names) + "\nyesterday's export\n"  # an earlier convert's CSV
    out.write_text(yesterday)
    _one_line_error(run(path, "--to", "csv"), f"{out}: exists; pass --overwrite")
    assert out.read_text() == yesterday

    calls = 0

    def fails_on_the_second_record(record: dict) -> dict:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise OSError(28, "No space left on device", str(out))
        return to_row(record)

    monkeypatch.setattr(schema, "to_row", fails_on_the_second_record)
    result = run(path, "--to", "csv", "--overwrite")
    assert result.exit_code == 74 and "No space left on device" in result.stderr
    assert out.read_text() == yesterday and _no_temporaries(path.parent)


def test_a_failed_sharded_conversion_leaves_no_shard(ledger, tmp_path: Path, monkeypatch) -> None:
    path, _ = ledger
    calls = 0

    def fails_on_the_third_sample(record: dict) -> str:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(5, "Input/output error", record["video"])
        return sample_key(record)

    monkeypatch.setattr(webdataset_writer, "sample_key", fails_on_the_third_sample)
    with pytest.raises(OSError, match="Input/output error"):
        convert_captions(path, "webdataset", tmp_path / "s" / "x-%03d.tar", shard_size=1)
    assert list((tmp_path / "s").iterdir()) == []  # two shards were complete: neither was renamed into place


# --- one source of truth ---


def test_cli_choices_and_docs_table_match_the_library() -> None:
    assert captions_cli.FORMATS == convert.FORMATS and captions_cli.STATUSES == convert.STATUSES
    docs = (REPO / "docs" / "BATCH.md").read_text(encoding="utf-8")
    section = docs.split("## Dataset formats", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `(\w+)` \|", section, flags=re.MULTILINE)
    assert documented == SCHEMA.names


def test_summary_is_readable_without_a_terminal(ledger) -> None:
    path, _ = ledger
    text = run(path, "--to", "csv", "--status", "all").stdout
    assert text.startswith("4 records -> ") and "left out" not in text and text.count("\n") == 1


def test_webdataset_takes_names_no_file_system_holds(tmp_path) -> None:
    """A hand-edited line's lone surrogate or NUL in a name: a sample (no video to put in it), never exit 70."""
    src = tmp_path / "odd.jsonl"
    src.write_text(
        '{"video": "lone\\ud800.mp4", "status": "ok", "caption": "c"}\n'
        '{"video": "nul\\u0000.mp4", "status": "ok", "caption": "d"}\n'
    )
    result = run(src, "--to", "webdataset", "--out", tmp_path / "w.tar")
    assert result.exit_code == 0 and "2 records" in result.output
    with_videos = run(src, "--to", "webdataset", "--out", tmp_path / "v.tar", "--with-videos")
    assert with_videos.exit_code == 0 and "2 left out" in with_videos.output
