"""The one YAML reader for what a user hands vlmcap: config files, `a.b=c` override values, presets.

A config is read before anything else runs, so every corner of YAML that can hang the process,
exhaust its memory or crash it is closed here, each with a one-line ConfigError naming the source
(and the line). What is refused, and why:

- anchors and aliases (`&name`, `*name`) and merge keys (`<<`): a few hundred bytes of nested
  aliases stand for gigabytes once validated or printed ("billion laughs"); a config never needs
  to repeat a value by reference, and merge keys exist only to be used with aliases.
- more than MAX_CONFIG_BYTES, checked before parsing: a full config is about 3 KiB, and the worst
  256 KiB (a flow list of 130,000 numbers) takes PyYAML about 2 s and 90 MB; 1 MiB would be 350 MB.
- nesting deeper than MAX_DEPTH levels, counted while composing: PyYAML's composer recurses once per
  level, so a 100,000-deep `[[[...` would end in a RecursionError; here it stops at level 65.
- integers longer than MAX_INT_CHARS characters: Python refuses to convert decimals of more than
  4,300 digits (its CVE-2020-10735 limit, a ValueError deep inside PyYAML), and YAML 1.1's base-60
  integers (`1:30:00`) cost time quadratic in their length. 128 characters hold any 64-bit value.
- a key repeated in one mapping: PyYAML keeps the last one silently.
- a file that is not a regular file (FIFO, socket, device, directory): opened with `open_regular`,
  refused at once instead of waiting for a writer that never comes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vlmcap.errors import ConfigError
from vlmcap.storage.files import open_regular

MAX_CONFIG_BYTES = 256 * 1024
MAX_DEPTH = 64
MAX_INT_CHARS = 128


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader with the limits above, checked as nodes are composed and constructed."""

    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source = source
        self.place: list[str] = []  # the key or index of each node being composed, root first

    def refuse(self, mark: yaml.Mark, cause: str) -> ConfigError:
        return ConfigError(f"{self.source}: line {mark.line + 1}: {cause}")

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if event.anchor is not None:  # an alias event's anchor is the name it refers to
            raise self.refuse(
                event.start_mark, "YAML anchors and aliases (&name, *name) are not allowed; write the value out"
            )
        if len(self.place) >= MAX_DEPTH:
            raise self.refuse(event.start_mark, f"nested deeper than {MAX_DEPTH} levels")
        self.place.append(_name_in_parent(index))
        try:
            return super().compose_node(parent, index)
        finally:
            self.place.pop()

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first_line: dict[Any, int] = {}
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise self.refuse(key.start_mark, "merge keys (<<) are not allowed; write the keys out")
            if not isinstance(key, yaml.ScalarNode):
                continue  # an unhashable key: construction refuses it
            value = self.construct_object(key)  # what the dict would compare: `1` and `0x1` are one key
            line = key.start_mark.line + 1
            if value in first_line:
                where = ".".join(p for p in [*self.place, key.value] if p)
                raise ConfigError(
                    f"{self.source}: {where}: repeated at line {line} (first at line {first_line[value]})"
                )
            first_line[value] = line
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:  # a timestamp like 2024-13-01: datetime's ValueError
            raise self.refuse(node.start_mark, f"cannot read this value ({e})") from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        if len(node.value) > MAX_INT_CHARS:
            raise self.refuse(node.start_mark, f"integer of {len(node.value)} characters; at most {MAX_INT_CHARS}")
        return super().construct_yaml_int(node)


def _name_in_parent(index: Any) -> str:
    """A node's part of a dotted key: its key (a scalar node), its list index, or "" (the root, a key)."""
    if isinstance(index, yaml.ScalarNode):
        return index.value
    return "" if index is None else str(index)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)


def _too_large(source: str) -> ConfigError:
    return ConfigError(f"{source}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a config is a few KiB")


def load_yaml(text: str, source: str) -> Any:
    """The one YAML document in `text`, within the limits above; `source` names it in every error."""
    if len(text) > MAX_CONFIG_BYTES:
        raise _too_large(source)
    try:
        loader = _BoundedLoader(text, source)  # its reader refuses control characters already here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as e:
        raise ConfigError(f"{source}: not valid YAML: {_control_character(e)}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None)
        raise ConfigError(f"{source}: not valid YAML{where}" + (f": {problem}" if problem else "")) from None


def _control_character(e: yaml.reader.ReaderError) -> str:
    """PyYAML's ReaderError as one line: which character, where (its own text spans lines)."""
    character = chr(e.character) if isinstance(e.character, int) else e.character
    return f"a control character {character!r} at position {e.position} (YAML text is printable)"


def read_yaml_file(path: Path) -> Any:
    """`load_yaml` of a UTF-8 file, read without ever blocking and never more than the size limit."""
    try:
        with open_regular(path) as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the config: {e.strerror or e}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _too_large(str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    return load_yaml(text, str(path))
