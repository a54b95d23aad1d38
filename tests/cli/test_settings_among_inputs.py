"""`section.key=value` among the INPUTS of a command that takes videos is a setting (README,
"Configuration"), never a video named after it; a file that is really called so is written ./NAME."""

from __future__ import annotations

import json
import shutil

from click.testing import CliRunner

from vlmcap.cli import cli


def run(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_setting_among_batch_inputs_is_applied(tiny_bundle, six_videos, tmp_path) -> None:
    args = [str(six_videos), "--out", str(tmp_path / "c.jsonl"), "--engine", str(tiny_bundle), "--dry-run"]
    listed = run("batch", *args, "batch.limit=2")
    assert listed.exit_code == 0, listed.output
    assert len([line for line in listed.stdout.splitlines() if line.endswith(".mp4")]) == 2
    assert "would caption 2 (stopped at --limit)" in listed.output
    assert not (tmp_path / "c.jsonl").exists()
    flag_wins = run("batch", *args, "batch.limit=2", "--limit", "3")  # flags win over settings, as over --config
    assert "would caption 3" in flag_wins.output


def test_settings_and_files_named_like_them(clips, tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    probed = run("probe", str(clips["h264_mp4"]), "video.num_frames=3")
    assert probed.exit_code == 0, probed.output
    (record,) = [json.loads(line) for line in probed.stdout.splitlines()]
    assert record["status"] == "ok" and len(record["frames_s"]) == 3

    no_section = run("probe", "clip.v2=final.mp4")
    assert no_section.exit_code == 2 and len(no_section.output.strip().splitlines()) == 1
    assert "'clip' is no config section" in no_section.output and "write ./clip.v2=final.mp4" in no_section.output

    # A file named like a setting (one a shell glob would pick up in a cron line) sets nothing.
    for name in ("clip.v2=final.mp4", "batch.overwrite=true"):
        shutil.copy(clips["h264_mp4"], tmp_path / name)
        refused = run("probe", str(clips["h264_mp4"]), name)
        assert refused.exit_code == 2 and len(refused.output.strip().splitlines()) == 1
        assert "but a file is named so" in refused.output and f"write ./{name}" in refused.output
    as_file = run("probe", "./clip.v2=final.mp4")
    assert as_file.exit_code == 0 and json.loads(as_file.stdout)["status"] == "ok"
    alone = run("probe", "video.num_frames=3")  # settings alone: nothing to probe
    assert alone.exit_code == 2 and "no INPUTS" in alone.output

    typo = run("probe", str(clips["h264_mp4"]), "video.num_frame=3")
    assert typo.exit_code == 2 and len(typo.output.strip().splitlines()) == 1
    assert "video.num_frame: unknown key" in typo.output and "write ./NAME for a file so named" in typo.output
