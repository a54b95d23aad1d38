"""vlmcap/video/sources.py: the kind of an input is chosen once, from how it is written; each kind
answers its key, identity and readable file (the remote kind end to end: tests/engines/batch/test_remote_inputs.py)."""

from __future__ import annotations

import os
from pathlib import Path

from vlmcap.video.remote_urls import RemoteOptions
from vlmcap.video.sources import LocalFile, RemoteObject, source_of


def test_the_scheme_picks_the_kind_and_a_local_path_is_known_by_its_real_path(tmp_path: Path) -> None:
    real = tmp_path / "a.mp4"
    real.write_bytes(b"x" * 10)
    link = tmp_path / "link.mp4"
    link.symlink_to(real)
    local = source_of(str(link))
    assert isinstance(local, LocalFile) and local.key(str(link)) == os.path.realpath(real)
    video, identity = local.look(str(link))
    assert video == str(link) and identity is not None and identity.size == 10  # the path as given
    assert local.look(str(tmp_path / "gone.mp4"))[1] is None
    with local.readable(str(link)) as path:
        assert path == str(link)  # read where it is, no copy


def test_urls_are_remote_objects_known_by_their_normalized_spelling() -> None:
    options = RemoteOptions(timeout_s=3.0)
    remote = source_of("HTTPS://Example.COM:443/v/A.mp4#t=3", options)
    assert isinstance(remote, RemoteObject) and remote.options is options
    assert remote.key("HTTPS://Example.COM:443/v/A.mp4#t=3") == "https://example.com/v/A.mp4"
    assert isinstance(source_of("ftp://host/a.mp4"), LocalFile)  # not a scheme vlmcap reads: discovery says so


def test_one_http_resource_is_one_key_however_it_is_escaped() -> None:
    spellings = [
        "https://example.com/a%20b/C.mp4",
        "https://example.com/a b/C.mp4",
        "https://EXAMPLE.com/a%20b/%43.mp4",
    ]
    assert {source_of(url).key(url) for url in spellings} == {"https://example.com/a%20b/C.mp4"}
    assert source_of("s3://bucket/a%20b.mp4").key("s3://bucket/a%20b.mp4") == "s3://bucket/a%20b.mp4"  # a literal key
    escaped_slash = "https://example.com/a%2Fb.mp4"  # one segment named `a/b.mp4`, not a folder `a`
    assert source_of(escaped_slash).key(escaped_slash) == escaped_slash
