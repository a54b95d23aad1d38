"""s3://, http:// inputs end to end, against real servers on 127.0.0.1: moto's S3 server (with IAM
enforced, so a denied object is a real 403) and a small HTTP server that can drop a connection
mid-body or stall. Each per-object failure is a typed error line; usage errors exit 2 before work."""

from __future__ import annotations

import http.server
import json
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from click.testing import CliRunner
from hostile_http import hostile_server
from repo_paths import TESTS

from vlmcap.cli import cli
from vlmcap.engines.batch.ledger import ResumeState
from vlmcap.engines.batch.selection import TaskFilter
from vlmcap.errors import RemoteTimeout
from vlmcap.video import remote_urls
from vlmcap.video.discovery import InputProblem, iter_video_paths
from vlmcap.video.spool import spooled_copy

BUCKET = "vids"
# moto lets this many requests through unsigned (the IAM setup below), then enforces IAM.
NO_AUTH_ACTIONS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(scope="module")
def s3(six_videos) -> Iterator[dict]:
    """moto's server in its own process, IAM enforced: a user allowed everything on S3 except
    GetObject (and HEAD) under secret/; the bucket holds two videos under clips/, one under listed/, one
    denied, and a 2 MB object named like a video."""
    import boto3

    port = _free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": str(NO_AUTH_ACTIONS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for(f"{endpoint}/moto-api/")
        admin = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        iam = boto3.client("iam", aws_access_key_id="admin", aws_secret_access_key="admin", **admin)
        iam.create_user(UserName="captioner")
        key = iam.create_access_key(UserName="captioner")["AccessKey"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Action": "s3:*", "Resource": "*"},
                # AWS checks s3:GetObject for HEAD too; moto 5.2 checks a HeadObject action of its own.
                {
                    "Effect": "Deny",
                    "Action": ["s3:GetObject", "s3:HeadObject"],
                    "Resource": f"arn:aws:s3:::{BUCKET}/secret/*",
                },
            ],
        }
        iam.put_user_policy(UserName="captioner", PolicyName="captions", PolicyDocument=json.dumps(policy))
        creds = {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}
        client = boto3.client("s3", **creds, **admin)
        client.create_bucket(Bucket=BUCKET)
        videos = sorted(six_videos.glob("*.mp4"))
        for name, video in (("clips/a.mp4", 0), ("clips/b.mp4", 1), ("listed/c.mp4", 2), ("secret/d.mp4", 3)):
            client.upload_file(str(videos[video]), BUCKET, name)
        client.put_object(Bucket=BUCKET, Key="big/e.mp4", Body=os.urandom(2 << 20))
        client.put_object(Bucket=BUCKET, Key="clips/notes.txt", Body=b"not a video")  # listed, then skipped
        env = {
            "AWS_ACCESS_KEY_ID": key["AccessKeyId"],
            "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"],
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        yield {"env": env, "client": client, "videos": videos}
    finally:
        server.terminate()
        server.wait(10)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/good.mp4 whole; /drop.mp4 half its body, then the connection closes; /stall.mp4 headers and
    a few bytes, then nothing for 3 s. `heads` and `gets` count the requests per path."""

    body: bytes = b""
    heads: ClassVar[dict[str, int]] = {}
    gets: ClassVar[dict[str, int]] = {}

    def _head(self) -> bool:
        if self.path not in ("/good.mp4", "/drop.mp4", "/stall.mp4"):
            self.send_error(404)
            return False
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(len(self.body)))
        self.send_header("Last-Modified", "Tue, 01 Dec 2026 10:00:00 GMT")
        self.end_headers()
        return True

    def do_HEAD(self) -> None:
        self.heads[self.path] = self.heads.get(self.path, 0) + 1
        self._head()

    def do_GET(self) -> None:
        self.gets[self.path] = self.gets.get(self.path, 0) + 1
        if not self._head():
            return
        if self.path == "/good.mp4":
            self.wfile.write(self.body)
        elif self.path == "/drop.mp4":
            self.wfile.write(self.body[: len(self.body) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        else:
            self.wfile.write(self.body[:100])
            self.wfile.flush()
            time.sleep(3)
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def web(s3) -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {"body": s3["videos"][4].read_bytes(), "heads": {}, "gets": {}})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_batch(env: dict, *args: str) -> subprocess.CompletedProcess:
    # A fresh process: decode workers come from a forkserver, which keeps the environment it started
    # with, so the credentials must be there from the start (as they are for a cron job).
    full_env = {**os.environ, "PYTHONPATH": str(TESTS), **env}
    command = [sys.executable, "-m", "vlmcap.cli", "batch", *args]
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=600)


def test_s3_prefix_list_of_urls_and_http_captioned_each_failure_typed_and_resumed(
    s3, web, tiny_bundle, tmp_path
) -> None:
    base, handler = web
    listing = tmp_path / "urls.txt"
    listing.write_bytes(
        (
            f"s3://{BUCKET}/listed/c.mp4\n"
            f"s3://{BUCKET}/missing.mp4\n"
            f"s3://{BUCKET}/secret/d.mp4\n"
            f"s3://{BUCKET}/big/e.mp4\n"
            f"{base}/good.mp4\n"
            f"{base}/drop.mp4\n"
            f"{base}/stall.mp4\n"
            "ftp://example.com/x.mp4\n"
            "::::\n"
        ).encode()
        + b"\x00\x01\xff garbage\n"
    )
    out, spool = tmp_path / "captions.jsonl", tmp_path / "spool"
    args = [f"s3://{BUCKET}/clips/", str(listing), "--out", str(out), "--engine", str(tiny_bundle)]
    args += ["--llm-backend", "transformers", "--max-new-tokens", "8", "--workers", "2", "--spool-dir", str(spool)]
    args += ["--remote-max-mb", "1", "--remote-retries", "1", "--remote-backoff", "0.05", "--remote-timeout", "1"]
    args += ["--srt", str(tmp_path / "subs")]
    first = run_batch(s3["env"], *args)
    assert first.returncode == 1, first.stderr
    records = {r["video"]: r for r in lines(out)}
    ok = {f"s3://{BUCKET}/clips/a.mp4", f"s3://{BUCKET}/clips/b.mp4", f"s3://{BUCKET}/listed/c.mp4", f"{base}/good.mp4"}
    assert {v for v, r in records.items() if r["status"] == "ok"} == ok
    for video in ok:
        assert records[video]["caption"] and records[video]["file"]["path"] == video
        assert records[video]["file"]["size"] > 0 and records[video]["file"]["mtime_ns"] > 0
    errors = {v: (r["error"]["type"], r["error"]["message"]) for v, r in records.items() if r["status"] == "error"}
    expected = {
        f"s3://{BUCKET}/missing.mp4": "RemoteNotFound",
        f"s3://{BUCKET}/secret/d.mp4": "RemoteAccessDenied",
        f"s3://{BUCKET}/big/e.mp4": "RemoteTooLarge",
        f"{base}/drop.mp4": "RemoteConnectionError",
        f"{base}/stall.mp4": "RemoteTimeout",
        f"{listing}:8": "BadInputLine",
        f"{listing}:9": "BadInputLine",
        f"{listing}:10": "BadInputLine",
    }
    assert {v: kind for v, (kind, _) in errors.items()} == expected, errors
    for video, (_, message) in errors.items():
        assert message.startswith(video), message  # names the URL (not a spool file) or list:line
    assert "after 2 tries" in errors[f"{base}/drop.mp4"][1] and handler.gets["/drop.mp4"] == 2  # --remote-retries 1
    # One metadata request per URL, by selection: the decode worker got the size with the URL, so
    # neither its download nor that download's retry asked again.
    assert handler.heads == {"/good.mp4": 1, "/drop.mp4": 1, "/stall.mp4": 1}
    assert "ftp://" in errors[f"{listing}:8"][1] and "'::::'" in errors[f"{listing}:9"][1]
    assert list(spool.rglob("*")) == []  # every download deleted, and the workers' folders with them
    subs = {p.relative_to(tmp_path / "subs").as_posix() for p in (tmp_path / "subs").rglob("*.srt")}
    s3_subs = {f"s3:/{BUCKET}/{key}.srt" for key in ("clips/a.mp4", "clips/b.mp4", "listed/c.mp4")}
    http_subs = {"http:/" + base.split("://", 1)[1] + "/good.mp4.srt"}
    assert subs == s3_subs | http_subs  # a URL's sidecar mirrors scheme:/host/path under DIR

    # Resume by URL identity: done objects are skipped; an object replaced since is captioned again.
    s3["client"].upload_file(str(s3["videos"][5]), BUCKET, "clips/a.mp4")
    second = run_batch(s3["env"], *args)
    assert second.returncode == 1, second.stderr
    # a.mp4 again; the missing and the denied object (no identity to skip them by) and the bad lines
    # are reported again, as a missing local file would be; the failures with an identity are skipped.
    assert "captioned 1, failed 5, skipped 3 already done + 3 failed before" in second.stderr, second.stderr
    after = {r["video"]: r for r in lines(out)}
    assert after[f"s3://{BUCKET}/clips/a.mp4"]["finished_at"] != records[f"s3://{BUCKET}/clips/a.mp4"]["finished_at"]
    assert after[f"s3://{BUCKET}/clips/a.mp4"]["file"]["size"] == s3["videos"][5].stat().st_size
    for video in ok - {f"s3://{BUCKET}/clips/a.mp4"}:
        assert after[video] == records[video]
    assert list(spool.rglob("*")) == []


def _selected(url: str, options: remote_urls.RemoteOptions) -> str:
    """`url` as selection hands it on and the decode pool delivers it to a worker (pickled)."""
    [task] = TaskFilter(ResumeState(), remote=options)([url])
    return pickle.loads(pickle.dumps(task.video))


def test_a_urls_metadata_is_asked_once_and_travels_to_the_decode_worker(tmp_path) -> None:
    options = remote_urls.RemoteOptions(retries=0, timeout_s=5.0, spool_dir=str(tmp_path))
    with hostile_server(b"the bytes of a video") as (base, handler):
        video = _selected(f"{base}/video.mp4", options)
        with spooled_copy(video, options) as local:
            assert Path(local).read_bytes() == b"the bytes of a video"
    assert handler.requests == [("HEAD", "/video.mp4"), ("GET", "/video.mp4")]  # selection's HEAD, the download


def test_trickled_headers_cost_one_metadata_deadline_per_input_not_two(tmp_path) -> None:
    options = remote_urls.RemoteOptions(retries=0, timeout_s=2.0, spool_dir=str(tmp_path))
    with hostile_server() as (base, handler):
        t0 = time.monotonic()
        video = _selected(f"{base}/slow-headers.mp4", options)
        with pytest.raises(RemoteTimeout, match=r"no answer within 2 s after 1 try"), spooled_copy(video, options):
            pass  # the worker reports selection's timeout, without asking again
        elapsed_s = time.monotonic() - t0
    assert handler.requests == [("HEAD", "/slow-headers.mp4")]
    assert elapsed_s < 2 * options.timeout_s  # one deadline, not one in selection and another in the worker


def batch(*args: str):
    return CliRunner().invoke(cli, ["batch", *args])


def test_usage_errors_before_any_work(s3, monkeypatch, tmp_path) -> None:
    for name, value in s3["env"].items():
        monkeypatch.setenv(name, value)
    remote_urls.filesystem.cache_clear()
    out = tmp_path / "captions.jsonl"

    result = batch("s3://no-such-bucket/videos/", "--out", str(out))
    assert result.exit_code == 2 and "the bucket 'no-such-bucket' does not exist" in result.output, result.output

    result = batch("ftp://example.com/videos/", "--out", str(out))
    assert result.exit_code == 2 and "cannot read ftp:// URLs" in result.output

    monkeypatch.setitem(sys.modules, "gcsfs", None)  # as if the remote extra were not installed
    result = batch("gs://bucket/videos/", "--out", str(out))
    assert result.exit_code == 2 and "need the gcsfs package: pip install 'vlmcap[remote]'" in result.output

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIANOTAREALKEY")  # moto enforces IAM: an unknown key
    remote_urls.filesystem.cache_clear()
    result = batch(f"s3://{BUCKET}/clips/", "--out", str(out))
    assert result.exit_code == 2 and "cannot list it" in result.output and "Access Key Id" in result.output

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    result = batch(f"s3://{BUCKET}/clips/", "--out", str(out))
    assert result.exit_code == 2 and "no AWS credentials found" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not out.exists() or out.read_text() == ""  # nothing captioned, nothing written
    remote_urls.filesystem.cache_clear()


def test_list_file_garbage_lines_are_problems_not_silence(tmp_path) -> None:
    (tmp_path / "a.mp4").write_bytes(b"")
    listing = tmp_path / "videos.lst"
    listing.write_bytes(b"a.mp4\nmissing.mp4\nftp://host/x.mp4\n::::\n\x00\x1b junk \xfe\n# comment\n\nhttps://h/v\n")
    found = list(iter_video_paths([str(listing)]))
    assert found[:2] == [str(tmp_path / "a.mp4"), str(tmp_path / "missing.mp4")]  # missing: VideoNotFound later
    problems = [p for p in found if isinstance(p, InputProblem)]
    assert [(p.path, p.error_type) for p in problems] == [(f"{listing}:{n}", "BadInputLine") for n in (3, 4, 5)]
    assert found[-1] == "https://h/v"  # an http(s) URL is one video, extension or not


def test_urls_are_normalized_for_resume() -> None:
    assert remote_urls.normalize_url("HTTPS://Example.COM:443/a/B.mp4#t=3") == "https://example.com/a/B.mp4"
    assert remote_urls.normalize_url("S3://Bucket/Key.MP4") == "s3://Bucket/Key.MP4"
    assert remote_urls.url_scheme("/local/path.mp4") is None and remote_urls.url_scheme("C://x") == "c"
