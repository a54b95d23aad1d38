"""What a command may write: never what it reads, and a folder it replaces only when it wrote it.

Every command that writes a file or a folder checks its outputs here before any work (docs/BATCH.md,
"Outputs never eat inputs"), so one wrong path in a nightly cron line costs one error line, exit 2,
and nothing else:

- `check_apart`: an output is not, does not contain and does not lie inside anything the command
  reads (real paths: symlinks resolved). A file output may lie inside an input folder when nothing
  would read it there as an input: its name is no video's and no list file's (discovery's rule), so
  `vlmcap batch . --out captions.jsonl` stays fine while `--stats clip.mp4` does not.
- `check_replaceable` / `write_marker`: a folder a command writes whole (a report, an evaluation
  page) carries a marker naming the command and every file it wrote; `--overwrite` replaces only a
  folder with the same command's marker and nothing else in it. Anything else (a folder of videos,
  a home directory, a report someone saved notes into) is refused, whatever the flags say.
- `claim_folder`: a folder a command writes into file by file (`vlmcap synth`, `vlmcap demo`) must
  be new, empty, or claimed by the same command before.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from vlmcap.errors import ConfigError
from vlmcap.video.discovery import LIST_EXTENSIONS, is_video_name
from vlmcap.video.remote import url_scheme

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


def check_apart(flag: str, output: str | os.PathLike[str], reads: Reads, *, folder: bool) -> None:
    """Before any work: the output `flag OUTPUT` is not, does not contain and does not lie inside what the
    command reads (`folder`: the output is a folder; a file output may lie inside a folder it reads
    when discovery would not read it there). ConfigError (exit 2) naming both otherwise."""
    out = real(output)
    for name, given, path in _local(reads):
        if out == path:
            relation = "is"
        elif folder and path.is_relative_to(out):
            relation = "contains"
        elif out.is_relative_to(path) and (folder or read_by_discovery(out)):
            relation = "lies inside"
        else:
            continue
        raise ConfigError(
            f"{flag} {output}: {relation} {name} {given}, which this command also uses; write the output apart"
        )


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


def _foreign_file(folder: Path, written: set[str]) -> str | None:
    """The first entry under `folder` that is not one of the `written` files (relative paths), or None."""
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            relative = Path(dirpath, name).relative_to(folder).as_posix()
            if relative != MARKER and relative not in written:
                return relative
    return None


def check_replaceable(flag: str, output: Path, command: str, overwrite: bool) -> Path:
    """Before any work: the folder `output` may be written whole by `vlmcap COMMAND`; its real path.

    A missing or empty folder always may; an existing one only with `overwrite`, and only when its
    marker says `command` wrote it and it holds nothing else."""
    folder = check_output_folder_path(flag, output)
    if not folder.exists() or not any(folder.iterdir()):
        return folder
    if not overwrite:
        raise ConfigError(f"{flag} {output}: already exists; pass --overwrite to replace it")
    marker = _marker(folder)
    if marker is None or marker.get("command") != command:
        raise ConfigError(
            f"{flag} {output}: not a folder `vlmcap {command}` wrote (no {MARKER} of it); --overwrite replaces "
            "only such a folder: choose another, or remove it yourself"
        )
    written = marker.get("files")
    foreign = _foreign_file(folder, set(written) if isinstance(written, list) else set())
    if foreign is not None:
        raise ConfigError(
            f"{flag} {output}: holds {foreign}, which `vlmcap {command}` did not write; --overwrite would delete "
            "it: move it out, or choose another folder"
        )
    return folder


def write_marker(folder: Path, command: str) -> None:
    """Name `command` and every file now under `folder` in its marker (the last file a build writes)."""
    files = sorted(
        Path(dirpath, name).relative_to(folder).as_posix()
        for dirpath, _, filenames in os.walk(folder)
        for name in filenames
        if name != MARKER or Path(dirpath) != folder
    )
    text = json.dumps({"command": command, "files": files}, ensure_ascii=True, indent=1)
    (folder / MARKER).write_text(text + "\n", encoding="utf-8")


def claim_folder(flag: str, output: Path, command: str) -> Path:
    """Before any work: `output` is new, empty, or claimed by `vlmcap COMMAND` before; claimed now. A
    command that writes into its folder file by file (and deletes nothing) takes it this way."""
    folder = check_output_folder_path(flag, output)
    if folder.exists() and any(folder.iterdir()):
        marker = _marker(folder)
        if marker is None or marker.get("command") != command:
            raise ConfigError(
                f"{flag} {output}: exists and is not a folder `vlmcap {command}` wrote (no {MARKER} of it); "
                "give a new or empty folder"
            )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text(json.dumps({"command": command}) + "\n", encoding="utf-8")
    return folder
