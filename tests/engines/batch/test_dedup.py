"""`--dedup sha256`: identical bytes captioned once, the copies pointing at the original (docs/BATCH.md)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from click.testing import CliRunner

from vlmcap.cli import cli
from vlmcap.engines.batch.dedup import ContentIndex, DedupDriver, MadeBy, hash_file
from vlmcap.engines.batch.ledger import CaptionWriter
from vlmcap.engines.batch.progress import Progress
from vlmcap.engines.batch.provenance import Provenance
from vlmcap.engines.batch.records import Outcome, to_record
from vlmcap.engines.batch.run import BatchRun, Interrupt, RunStats
from vlmcap.engines.batch.selection import VideoTask
from vlmcap.storage.files import file_identity
from vlmcap.storage.output_names import per_video_path

PROVENANCE = Provenance("bundle-1", "describe")
MADE_BY = MadeBy("bundle-1", "describe", segmented=False)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task(path: Path | str) -> VideoTask:
    return VideoTask(str(path), file_identity(path))


class FakeDriver:
    """Captions a task as its file's first bytes, fails files starting with b"bad"; two tasks a batch."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def outcomes(
        self, tasks: Iterable[VideoTask], interrupt: Interrupt, ready: Callable[[dict[str, str]], None]
    ) -> Iterator[list[Outcome]]:
        batch = []
        for t in tasks:
            self.seen.append(t.video)
            head = Path(t.video).read_bytes()[:8] if t.identity else b""
            if head.startswith(b"bad"):
                batch.append(Outcome(t, 5.0, "NotAVideo", f"{t.video}: not a video"))
            else:
                batch.append(Outcome(t, 5.0, caption=head.decode(), num_tokens=3, finish_reason="stop", llm_ms=9.0))
            if len(batch) == 2:
                yield batch
                batch = []
        if batch:
            yield batch


def files(root: Path, contents: dict[str, bytes]) -> dict[str, Path]:
    made = {}
    for name, data in contents.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
        made[name] = root / name
    return made


def test_hash_file_is_hashlibs_and_unreadable_files_are_left_to_the_decoder(tmp_path: Path) -> None:
    video = tmp_path / "a.mp4"
    video.write_bytes(os.urandom(3 << 20))  # bigger than one read
    hashed = hash_file(str(video))
    assert hashed is not None and hashed.digest == sha256(video) and hashed.identity == file_identity(video)
    assert hash_file(str(tmp_path / "missing.mp4")) is None


def test_copies_wait_for_their_original_and_copy_its_caption_or_its_error(tmp_path: Path) -> None:
    v = files(
        tmp_path,
        {
            "a.mp4": b"alpha" * 100,
            "b.mp4": b"alpha" * 100,
            "c.mp4": b"gamma" * 100,
            "sub/a-again.mp4": b"alpha" * 100,
            "bad1.mp4": b"bad!" * 100,
            "bad2.mp4": b"bad!" * 100,
        },
    )
    fake = FakeDriver()
    out = tmp_path / "captions.jsonl"
    writer = CaptionWriter(out)
    dedup = DedupDriver.open(fake, out, MADE_BY)
    order = ["a.mp4", "b.mp4", "c.mp4", "bad1.mp4", "bad2.mp4", "sub/a-again.mp4"]
    tasks = [task(v[n]) for n in order] + [VideoTask("s3://bucket/a.mp4", None)]
    records = []
    for outcomes in dedup.outcomes(tasks, Interrupt(), lambda engines: None):
        batch = [to_record(o, PROVENANCE) for o in outcomes]
        dedup.written(batch, writer.append(batch))
        records += batch
    writer.close()
    dedup.index.close()

    assert fake.seen == [str(v["a.mp4"]), str(v["c.mp4"]), str(v["bad1.mp4"]), "s3://bucket/a.mp4"]
    by_name = {r["video"]: r for r in records}
    assert len(records) == 7 and len(by_name) == 7
    a = by_name[str(v["a.mp4"])]
    assert "duplicate_of" not in a and a["sha256"] == sha256(v["a.mp4"])
    for name in ("b.mp4", "sub/a-again.mp4"):  # b waited for a's outcome; a-again came after a's line was written
        copy = by_name[str(v[name])]
        assert copy["duplicate_of"] == str(v["a.mp4"]) and copy["caption"] == a["caption"]
        assert copy["sha256"] == a["sha256"] and copy["file"]["path"] == str(v[name])
        assert copy["timings_ms"] == {"decode": 0.0, "vision": 0.0, "llm": 0.0}
    bad2 = by_name[str(v["bad2.mp4"])]
    assert bad2["status"] == "error" and bad2["duplicate_of"] == str(v["bad1.mp4"])
    assert bad2["error"]["type"] == "NotAVideo" and bad2["sha256"] == sha256(v["bad2.mp4"])
    remote = by_name["s3://bucket/a.mp4"]
    assert "sha256" not in remote and "duplicate_of" not in remote  # URLs are not hashed
    assert dedup.hasher.bytes == sum(p.stat().st_size for p in v.values())

    # Each line reads back at the offset the writer reported: a later run finds a's caption by content.
    index = ContentIndex.read(out)
    assert len(index) == 4  # ok lines with a hash: a, c and the copies of a (errors are not indexed)
    found = [r["video"] for r in index.records(a["sha256"])]
    assert found == [str(v["sub/a-again.mp4"]), str(v["b.mp4"]), str(v["a.mp4"])]  # the latest line first
    assert list(index.records("0" * 64)) == []
    index.close()


def test_earlier_lines_lend_their_caption_only_when_made_alike(tmp_path: Path) -> None:
    v = files(tmp_path, {"a.mp4": b"alpha" * 100, "renamed.mp4": b"alpha" * 100})
    out = tmp_path / "captions.jsonl"
    first = task(v["a.mp4"])
    first.sha256 = sha256(v["a.mp4"])
    line = to_record(Outcome(first, 5.0, caption="alpha", num_tokens=3, finish_reason="stop"), PROVENANCE)
    out.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")

    for made_by, copied in (
        (MADE_BY, True),
        (MadeBy("bundle-2", "describe", segmented=False), False),  # another bundle: caption anew
        (MadeBy("bundle-1", "describe", segmented=True), False),  # --segments now, whole files before
    ):
        fake = FakeDriver()
        dedup = DedupDriver.open(fake, out, made_by)
        outcomes = [o for batch in dedup.outcomes([task(v["renamed.mp4"])], Interrupt(), lambda e: None) for o in batch]
        dedup.index.close()
        assert len(outcomes) == 1
        assert (outcomes[0].duplicate_of == str(v["a.mp4"])) is copied
        assert fake.seen == ([] if copied else [str(v["renamed.mp4"])])


def test_a_touched_or_redownloaded_file_stays_the_original_of_its_content(tmp_path: Path) -> None:
    v = files(tmp_path, {"a.mp4": b"alpha" * 100})
    out = tmp_path / "captions.jsonl"
    first = task(v["a.mp4"])
    first.sha256 = sha256(v["a.mp4"])
    line = to_record(Outcome(first, 5.0, caption="alpha", num_tokens=3, finish_reason="stop"), PROVENANCE)
    out.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    before = v["a.mp4"].stat().st_mtime_ns
    os.utime(v["a.mp4"], ns=(before + 10**9, before + 10**9))  # the same bytes, another identity

    fake = FakeDriver()
    dedup = DedupDriver.open(fake, out, MADE_BY)
    outcomes = [o for batch in dedup.outcomes([task(v["a.mp4"])], Interrupt(), lambda e: None) for o in batch]
    dedup.index.close()
    assert len(outcomes) == 1 and outcomes[0].caption == "alpha" and fake.seen == []  # its caption, not decoded
    assert outcomes[0].duplicate_of is None  # never a duplicate of itself
    assert to_record(outcomes[0], PROVENANCE)["file"]["mtime_ns"] == before + 10**9


def test_index_checks_the_whole_hash_behind_its_8_byte_keys(tmp_path: Path) -> None:
    out = tmp_path / "captions.jsonl"
    same_key = ["f" * 16 + "1" * 48, "f" * 16 + "2" * 48]  # one 64-bit key (above 2**63), two contents
    near = "7" + "f" * 15 + "3" * 48  # 2**63 - 1: as a float it would equal the keys above
    records = [{"video": f"v{i}.mp4", "status": "ok", "caption": str(i), "sha256": d} for i, d in enumerate(same_key)]
    records += [{"video": "near.mp4", "status": "ok", "caption": "near", "sha256": near}]
    records += [{"video": "bad.mp4", "status": "error", "sha256": "e" * 64}]
    out.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    index = ContentIndex.read(out)
    assert len(index) == 3
    assert [r["caption"] for r in index.records(same_key[0])] == ["0"]
    assert [r["caption"] for r in index.records(same_key[1])] == ["1"]
    assert [r["caption"] for r in index.records(near)] == ["near"]
    assert list(index.records("e" * 64)) == []  # error lines lend nothing
    index.close()


def test_default_records_carry_no_dedup_fields(tmp_path: Path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"alpha")
    record = to_record(Outcome(task(tmp_path / "a.mp4"), 1.0, caption="x"), PROVENANCE)
    assert "sha256" not in record and "duplicate_of" not in record


# --- end to end: the real pipeline on the tiny bundle (two runs) ---


def batch(*args: str):
    return CliRunner().invoke(cli, ["batch", *args], catch_exceptions=False)


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_batch_captions_each_content_once_and_a_renamed_file_is_not_captioned_again(
    tiny_bundle, six_videos, tmp_path
) -> None:
    src = sorted(six_videos.glob("*.mp4"))
    root = tmp_path / "videos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(src[0], root / "a.mp4")
    shutil.copy(src[0], root / "b.mp4")
    os.link(root / "a.mp4", root / "sub" / "a-link.mp4")  # a hard link: another real path, the same bytes
    shutil.copy(src[1], root / "c.mp4")
    good = src[2].read_bytes()
    (root / "broken1.mp4").write_bytes(good[: len(good) // 2])  # truncated: the index at the end is gone
    shutil.copy(root / "broken1.mp4", root / "broken2.mp4")
    out, stats = tmp_path / "captions.jsonl", tmp_path / "stats.json"
    args = ["--out", str(out), "--engine", str(tiny_bundle), "--llm-backend", "transformers", "--max-new-tokens", "8"]
    args += ["--dedup", "sha256", "--stats", str(stats), "--batch-size", "4"]

    first = batch(str(root), *args)
    assert first.exit_code == 1, first.output  # the broken pair failed
    report = json.loads(stats.read_text())
    assert (report["captioned"], report["copied"], report["failed"], report["duplicates"]) == (2, 2, 2, 3)
    assert report["hashed_bytes"] == sum(p.stat().st_size for p in root.rglob("*.mp4"))
    records = lines(out)
    assert len(records) == 6
    by_name = {Path(r["video"]).name: r for r in records}
    for r in records:
        assert r["sha256"] == sha256(Path(r["video"]))
    a = by_name["a.mp4"]
    assert a["status"] == "ok" and "duplicate_of" not in a
    for name in ("b.mp4", "a-link.mp4"):
        assert by_name[name]["duplicate_of"] == str(root / "a.mp4") and by_name[name]["caption"] == a["caption"]
    assert "duplicate_of" not in by_name["c.mp4"] and "duplicate_of" not in by_name["broken1.mp4"]
    broken = by_name["broken2.mp4"]
    assert broken["status"] == "error" and broken["duplicate_of"] == str(root / "broken1.mp4")
    assert broken["error"]["type"] == by_name["broken1.mp4"]["error"]["type"]

    os.rename(root / "c.mp4", root / "renamed.mp4")
    dry = batch(str(root), *args, "--dry-run")
    assert dry.exit_code == 0 and dry.stdout == ""  # nothing to caption ...
    assert "would caption 0" in dry.output and "copy 1 duplicates" in dry.output  # ... one line to copy

    second = batch(str(root), *args)
    assert second.exit_code == 0, second.output
    report = json.loads(stats.read_text())
    assert (report["captioned"], report["copied"], report["skipped_ok"], report["skipped_failed"]) == (0, 1, 3, 2)
    assert report["duplicates"] == 1
    assert report["engines"] == {}  # nothing decoded: the engines were never started
    after = lines(out)
    assert after[:6] == records  # one line per real path: the old name's line stays, the new name gets one
    renamed = after[6]
    assert renamed["video"] == str(root / "renamed.mp4") and renamed["duplicate_of"] == str(root / "c.mp4")
    assert renamed["caption"] == by_name["c.mp4"]["caption"] and renamed["sha256"] == by_name["c.mp4"]["sha256"]
    assert len(after) == 7

    # Touched (the same bytes, a new mtime; a-link too, a hard link of a): selected again, answered
    # from the earlier lines and counted as copied, not captioned; b's sidecar cannot be written,
    # so its line is an error line.
    for name in ("a.mp4", "b.mp4"):
        os.utime(root / name, ns=(10**18, 10**18))
    subs = tmp_path / "subs"
    per_video_path(subs, str(root / "b.mp4"), ".srt").mkdir(parents=True)
    third = batch(str(root), *args, "--srt", str(subs))
    assert third.exit_code == 1, third.output
    report = json.loads(stats.read_text())
    assert (report["captioned"], report["copied"], report["failed"], report["duplicates"]) == (0, 2, 1, 1)
    assert report["engines"] == {} and report["generated_tokens"] == 0
    assert "captioned 0, failed 1" in third.output and "--dedup: copied 2, 1 lines duplicate_of" in third.output
    touched = {Path(r["video"]).name: r for r in lines(out)}
    assert touched["a.mp4"]["file"]["mtime_ns"] == 10**18 and "duplicate_of" not in touched["a.mp4"]
    assert touched["a-link.mp4"]["duplicate_of"] == str(root / "a.mp4")
    assert touched["b.mp4"]["error"]["type"] == "SidecarWriteError"


def _run(out: Path, paths: list[Path], compact: bool = True) -> RunStats:
    """One run over `paths` (as selection would hand them over), written to `out`, compacted at the end
    unless it was interrupted before; its stats."""
    dedup = DedupDriver.open(FakeDriver(), out, MADE_BY)
    writer = CaptionWriter(out)
    stats = RunStats()
    with BatchRun(dedup, [task(p) for p in paths], PROVENANCE, stats, Progress(False)) as run:
        for records in run:
            dedup.written(records, writer.append(records))
    dedup.index.close()
    if compact:
        writer.compact()
    writer.close()
    return stats


def test_stats_count_what_the_engines_captioned_apart_from_what_was_copied(tmp_path: Path) -> None:
    v = files(tmp_path, {"a.mp4": b"alpha" * 100, "b.mp4": b"alpha" * 100})
    out = tmp_path / "captions.jsonl"
    fresh = _run(out, [v["a.mp4"], v["b.mp4"]])
    assert (fresh.captioned, fresh.copied, fresh.duplicates, fresh.failed, fresh.exit_code) == (1, 1, 1, 0, 0)
    assert fresh.generated_tokens == 3  # the original's only

    os.utime(v["a.mp4"], ns=(10**18, 10**18))  # touched: the same bytes, selected again
    touched = _run(out, [v["a.mp4"]])
    assert (touched.captioned, touched.copied, touched.duplicates, touched.exit_code) == (0, 1, 0, 0)
    report = touched.to_dict()
    assert report["generated_tokens"] == 0 and report["captioned_per_s"] == 0.0
    assert report["videos_per_s"] > 0  # a line was written: it is done, just not by the engines


def _one_original_per_content(out: Path) -> dict[str, str]:
    """content -> its original's file name, checking that each content has exactly one and that no
    line is a copy of itself."""
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    originals: dict[str, list[str]] = {}
    for r in records:
        assert r.get("duplicate_of") != r["video"], r
        if "duplicate_of" not in r:
            originals.setdefault(r["sha256"], []).append(Path(r["video"]).name)
    assert {r["sha256"] for r in records} == set(originals)
    assert all(len(names) == 1 for names in originals.values()), originals
    names = {sha: names[0] for sha, names in originals.items()}
    for r in records:  # a copy names the one original of its content
        if "duplicate_of" in r:
            assert Path(r["duplicate_of"]).name == names[r["sha256"]], r
    return {Path(r["video"]).name: names[r["sha256"]] for r in records}


def test_each_content_keeps_one_original_across_touch_hard_link_change_and_interrupted_runs(tmp_path: Path) -> None:
    v = files(tmp_path, {"a.mp4": b"alpha" * 100, "b.mp4": b"alpha" * 100, "c.mp4": b"gamma" * 100})
    os.link(v["c.mp4"], tmp_path / "h.mp4")
    out = tmp_path / "captions.jsonl"
    _run(out, [v["a.mp4"], v["b.mp4"], v["c.mp4"], tmp_path / "h.mp4"])
    assert _one_original_per_content(out) == {"a.mp4": "a.mp4", "b.mp4": "a.mp4", "c.mp4": "c.mp4", "h.mp4": "c.mp4"}

    for name in ("b.mp4", "a.mp4"):  # touched (a re-download of the same bytes): the copy first
        os.utime(tmp_path / name, ns=(10**18, 10**18))
    _run(out, [v["b.mp4"], v["a.mp4"]])
    assert _one_original_per_content(out)["a.mp4"] == "a.mp4"  # neither became a copy of itself

    v["a.mp4"].write_bytes(b"zeta" * 100)  # the original changed: captioned anew, its old line goes
    _run(out, [v["a.mp4"]], compact=False)  # killed before its compaction ...
    _run(out, [])  # ... which the next run makes first
    assert _one_original_per_content(out)["b.mp4"] == "b.mp4"  # the copy left is the original now

    v["d.mp4"] = files(tmp_path, {"d.mp4": b"alpha" * 100})["d.mp4"]
    _run(out, [v["d.mp4"]])
    assert _one_original_per_content(out)["d.mp4"] == "b.mp4"
