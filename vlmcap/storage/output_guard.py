"""What a command may write: never what it reads, and nothing it did not write itself.

Every command that writes a file or a folder checks its outputs here before any work (docs/BATCH.md,
"Outputs never eat inputs"), so one wrong path in a nightly cron line costs one error line, exit 2,
and nothing else:

- `check_apart`: an output is not, does not contain and does not lie inside anything the command
  reads (real paths: symlinks resolved); a file output may lie inside a run's input folders, where
  nothing reads it (`vlmcap batch . --out captions.jsonl`).
- `check_file_output`: a file output is never named like a video or a list file, whatever path or
  list leads to it, and an existing one is replaced or extended only when it is what the flag
  writes (a ledger, a stats file, a PNG, ...): `--stats clip.mp4`, or `--out train.jsonl` naming a
  manifest, is refused.
- `check_replaceable` / `write_marker`: a folder a command writes whole (a report, an evaluation
  page) carries a marker naming the command and every file it wrote, with its size and time;
  `--overwrite` replaces only a folder that holds nothing else and nothing changed since. A folder
  of videos, a home directory, a report someone typed notes into, a marker copied elsewhere: refused.
- `claim_folder`: a folder a command writes into file by file (`vlmcap synth`, `vlmcap demo`) must
  be new, empty, or hold only what the same command wrote there (its marker, again).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from vlmcap.errors import ConfigError
from vlmcap.storage.files import open_regular
from vlmcap.video.discovery import LIST_EXTENSIONS, is_video_name
from vlmcap.video.remote_urls import url_scheme

MARKER = ".vlmcap-output.json"

# What a command reads, as the user named it: ("CAPTIONS", path), ("--stats", path), ...
Reads = Iterable[tuple[str, str | os.PathLike[str] | None]]


def real(path: str | os.PathLike[str]) -> Path:
    """`path` with every symlink resolved, also when its last parts do not exist yet."""
    return Path(os.path.realpath(path))


def _local(reads: Reads) -> Iterable[tuple[str, str | os.PathLike[str], Path]]:
    for name, path in reads:
        if path is None or str(path) in ("", "-") or url_scheme(str(path)) is not None:
            continue  # stdin and URLs are nothing an output can overwrite
        yield name, path, real(path)


def read_by_discovery(path: Path) -> bool:
    """Whether a run given the folder `path` is in would read it as an input (a video or a list file)."""
    return is_video_name(path.name) or path.suffix.lower() in LIST_EXTENSIONS


def check_apart(flag: str, output: str | os.PathLike[str], reads: Reads, *, folder: bool, may_hold: Reads = ()) -> None:
    """Before any work: the output `flag OUTPUT` is not, does not contain and does not lie inside what the
    command reads (`folder`: the output is a folder). A file output may lie inside the `may_hold`
    folders (a run's INPUTS) unless discovery would read it there. ConfigError (exit 2) naming both
    otherwise."""
    out = real(output)
    holders = {path for _, _, path in _local(may_hold)}
    for name, given, path in _local([*reads, *may_hold]):
        if out == path:
            relation = "is"
        elif folder and path.is_relative_to(out):
            relation = "contains"
        elif out.is_relative_to(path) and (folder or path not in holders or read_by_discovery(out)):
            relation = "lies inside"
        else:
            continue
        raise ConfigError(
            f"{flag} {output}: {relation} {name} {given}, which this command also uses; write the output apart"
        )


def check_file_output(
    flag: str,
    output: str | os.PathLike[str],
    reads: Reads = (),
    *,
    may_hold: Reads = (),
    recognise: Callable[[BinaryIO], bool] | None = None,
    kind: str = "",
) -> Path:
    """Before any work: the file `flag OUTPUT` may be written; its real path (a symlink is written where
    it points). It is refused (ConfigError, exit 2) when

    - its name is a video's or a list file's (a later run would read it as an input);
    - it is, or lies inside, anything in `reads`; inside one of the `may_hold` folders (the folders of
      a run's INPUTS) it may lie, since nothing reads it there;
    - its folder cannot be made or written (a dangling symlink's target's included);
    - it exists and `recognise` (given the open file) does not take it for what this flag writes:
      never replace or append to something else named by mistake (`kind` names what it should be).
    """
    real_out = real(output)
    for name in {Path(output).name, real_out.name}:
        if read_by_discovery(Path(name)):
            raise ConfigError(f"{flag} {output}: a video's or list file's name; name the output apart from inputs")
    check_apart(flag, output, reads, folder=False, may_hold=may_hold)
    if real_out.exists() and not real_out.is_file():
        raise ConfigError(f"{flag} {output}: exists and is not a file")
    try:
        real_out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {output}: cannot create its folder {real_out.parent} ({e.strerror})") from None
    if not os.access(real_out.parent, os.W_OK) or (real_out.exists() and not os.access(real_out, os.W_OK)):
        raise ConfigError(f"{flag} {output}: not writable")
    if recognise is not None and real_out.exists() and real_out.stat().st_size:
        with open_regular(real_out) as f:
            ours = recognise(f)
        if not ours:
            raise ConfigError(f"{flag} {output}: exists and is not {kind}; refusing to replace or extend it")
    return real_out


def check_output_folder_path(flag: str, output: Path) -> Path:
    """The real folder an output folder names: a symlink is followed, a dangling one or a file refused."""
    if output.is_symlink() and not output.exists():
        raise ConfigError(f"{flag} {output}: a symlink to {os.path.realpath(output)}, which does not exist")
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{flag} {output}: exists and is not a folder")
    return real(output)


def _marker(folder: Path) -> dict | None:
    try:
        data = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _files(folder: Path) -> dict[str, list[int]]:
    """Every file (and link) under `folder` but its own marker: relative path -> [size, mtime_ns]."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]  # os.walk does not enter them
        for name in filenames + links:
            path = Path(dirpath, name)
            relative = path.relative_to(folder).as_posix()
            if relative != MARKER:
                st = path.lstat()
                found[relative] = [st.st_size, st.st_mtime_ns]
    return found


def _not_written_by(folder: Path, flag: str, output: Path, command: str) -> ConfigError | None:
    """Why `folder` is not wholly what `vlmcap COMMAND` wrote there, or None. Its marker names every file
    the command wrote with its size and time: a file it does not name, or one changed since (a
    note typed into a page, a marker copied into a folder of videos), is someone else's."""
    marker = _marker(folder)
    if marker is None or marker.get("command") != command:
        return ConfigError(
            f"{flag} {output}: not a folder `vlmcap {command}` wrote (no {MARKER} of it): choose a new or empty "
            "folder, or remove this one yourself"
        )
    written = marker.get("files") if isinstance(marker.get("files"), dict) else {}
    for relative, identity in sorted(_files(folder).items()):
        if written.get(relative) != identity:
            change = "changed since" if relative in written else "not written by"
            return ConfigError(
                f"{flag} {output}: holds {relative}, {change} `vlmcap {command}`; it would be overwritten or "
                "deleted: move it out, or choose another folder (a run stopped midway leaves such files too)"
            )
    return None


def check_replaceable(flag: str, output: Path, command: str, overwrite: bool) -> Path:
    """Before any work: the folder `output` may be written whole by `vlmcap COMMAND`; its real path.

    A missing or empty folder always may; an existing one only with `overwrite`, and only when it holds
    nothing but what `command` wrote there (its marker)."""
    folder = check_output_folder_path(flag, output)
    if not folder.exists() or not any(folder.iterdir()):
        return folder
    if not overwrite:
        raise ConfigError(f"{flag} {output}: already exists; pass --overwrite to replace it")
    refusal = _not_written_by(folder, flag, output, command)
    if refusal is not None:
        raise refusal
    return folder


def write_marker(folder: Path, command: str) -> None:
    """Name `command` and every file now under `folder`, with its size and time, in its marker: what a
    later run may replace. The last file a command writes there."""
    text = json.dumps({"command": command, "files": _files(folder)}, ensure_ascii=True, indent=1)
    (folder / MARKER).write_text(text + "\n", encoding="utf-8")


def claim_folder(flag: str, output: Path, command: str) -> Path:
    """Before any work: the real folder `output`, made if missing, which `vlmcap COMMAND` writes into file
    by file: new, empty, or holding only what the same command wrote there (`write_marker`, which
    the command calls when it is done)."""
    folder = check_output_folder_path(flag, output)
    if folder.exists() and any(folder.iterdir()):
        refusal = _not_written_by(folder, flag, output, command)
        if refusal is not None:
            raise refusal
    folder.mkdir(parents=True, exist_ok=True)
    return folder
