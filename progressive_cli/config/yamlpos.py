"""YAML loading that remembers where every value came from.

``load_yaml`` returns plain Python data plus a :class:`PositionMap` from a path
(``("steps", 0, "agent")``) to the line and column of that value and of its key.
It never raises anything but :class:`ConfigError`: unreadable, binary, empty or
malformed files, duplicate keys and alias bombs all become one ``file:line:col``
diagnostic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from progressive_cli.errors import ConfigError, Diagnostic, Location

try:  # the C loader is ~10x faster and keeps marks
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader

Path_ = tuple[str | int, ...]

_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_][\w.-]*$")
_MAPPING_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:set"})
_SEQUENCE_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"})
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STR_TAG = "tag:yaml.org,2002:str"
_VALUE_TAG = "tag:yaml.org,2002:value"
MAX_NODES = 200_000  # expanded values per file: stops alias bombs ("billion laughs")
MAX_DEPTH = 200  # nesting levels; libyaml stops at 1000, Python's stack sooner
MAX_BYTES = 5 * 1024 * 1024


@dataclass
class PositionMap:
    file: str
    values: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path_, tuple[int, int]] = field(default_factory=dict)
    problems: list[Diagnostic] = field(default_factory=list)  # recoverable: duplicate keys
    inline: dict[Path_, int] = field(default_factory=dict)
    """Single-line plain (0) or quoted (1) scalars: characters between the mark and the text."""

    def locate_in(self, path: Path_, offset: int) -> Location:
        """The place of character ``offset`` inside a one-line scalar; else the scalar's start."""
        where = self.locate(path)
        lead = self.inline.get(tuple(path))
        if lead is None or where.line == 0:
            return where
        return Location(self.file, where.line, where.col + lead + offset)

    def locate(self, path: Path_, *, key: bool = False) -> Location:
        """The closest known place for ``path``: the path itself, else its nearest parent."""
        table = self.keys if key else self.values
        probe = tuple(path)
        while True:
            if probe in table:
                line, col = table[probe]
                return Location(self.file, line, col)
            if key and probe in self.values:
                line, col = self.values[probe]
                return Location(self.file, line, col)
            if not probe:
                return Location(self.file, 1, 1)
            probe = probe[:-1]


def field_name(path: Path_) -> str:
    """``("steps", 0, "params", "x")`` -> ``steps[0].params.x``, for messages."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not _PLAIN_KEY.match(str(part)):
            out += f"[{json.dumps(str(part))}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _error(file: str, line: int, col: int, message: str) -> ConfigError:
    return ConfigError([Diagnostic(Location(file, line, col), message)])


def read_text(path: Path, display: str) -> str:
    """Read a config file as UTF-8 text, refusing binary and oversized files."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise _error(display, 0, 0, "file not found") from None
    except IsADirectoryError:
        raise _error(display, 0, 0, "is a directory, expected a YAML file") from None
    except OSError as exc:
        raise _error(display, 0, 0, f"cannot read file: {exc.strerror or exc}") from None
    return decode(raw, display)


def decode(raw: bytes, display: str) -> str:
    if len(raw) > MAX_BYTES:
        raise _error(display, 1, 1, f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise _error(display, line, 1, "binary file (NUL byte); expected UTF-8 YAML text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise _error(display, line, 1, "not UTF-8 text; expected a UTF-8 YAML file") from None
    return text


def load_yaml(text: str, display: str, *, allow_empty: bool = False) -> tuple[Any, PositionMap]:
    """Parse one YAML document into data and a position map."""
    positions = PositionMap(display)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and "duplicate anchor" in exc.context and exc.context_mark:
            # PyYAML's problem text is just "second occurrence"
            anchor = exc.context.split(";")[0].removeprefix("found ")
            problem = f"{anchor} (first at line {exc.context_mark.line + 1})"
        raise _error(display, line, col, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:  # reader errors: control characters and the like
        raise _error(display, 1, 1, f"invalid YAML: {_first_line(exc)}") from None
    except RecursionError:  # the pure-Python composer on very deep nesting
        raise _error(display, 1, 1, "invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()
    if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
        if allow_empty:
            return None, positions
        raise _error(display, 1, 1, "file is empty; expected a YAML mapping")
    builder = _Builder(loader, positions)
    try:
        data = builder.build(node, ())
    except RecursionError:  # pragma: no cover - MAX_DEPTH keeps the builder well inside the stack
        raise _error(display, 1, 1, "document nests too deeply") from None
    return data, positions


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else exc.__class__.__name__


class _Builder:
    def __init__(self, loader: Any, positions: PositionMap) -> None:
        self.loader = loader
        self.positions = positions
        self.count = 0
        self.depth = 0
        self.active: set[int] = set()  # collections being built: an alias back into one is recursive
        self.merging: set[int] = set()
        self.merged: dict[int, list[tuple[yaml.Node, yaml.Node]]] = {}

    def _mark(self, node: yaml.Node) -> tuple[int, int]:
        return node.start_mark.line + 1, node.start_mark.column + 1

    def _fail(self, node: yaml.Node, message: str) -> ConfigError:
        return _error(self.positions.file, *self._mark(node), message)

    def _tally(self, node: yaml.Node, n: int = 1) -> None:
        self.count += n
        if self.count > MAX_NODES:
            raise self._fail(node, "document expands to too many values (alias bomb?)")

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self._tally(node)
        self.positions.values.setdefault(path, self._mark(node))
        if isinstance(node, yaml.ScalarNode):
            if node.start_mark.line == node.end_mark.line and node.style in (None, "", "'", '"'):
                self.positions.inline[path] = 1 if node.style in ("'", '"') else 0
            return self._scalar(node)
        if node.tag not in (_MAPPING_TAGS if isinstance(node, yaml.MappingNode) else _SEQUENCE_TAGS):
            raise self._fail(node, f"unsupported YAML tag '{node.tag}' on a {node.id}")
        if id(node) in self.active:
            raise self._fail(node, "recursive YAML alias")
        if self.depth >= MAX_DEPTH:
            raise self._fail(node, f"nested more than {MAX_DEPTH} levels deep")
        self.active.add(id(node))
        self.depth += 1
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        finally:
            self.depth -= 1
            self.active.discard(id(node))

    def _scalar(self, node: yaml.Node) -> Any:
        if node.tag == _STR_TAG:  # what the constructor returns for it, without its per-node bookkeeping
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            raise self._fail(node, f"invalid value: {_problem(exc)}") from None
        except (ValueError, OverflowError, LookupError, AttributeError, TypeError) as exc:
            # PyYAML's scalar constructors fail this way on e.g. `!!bool maybe`, `!!int ''`, `!!timestamp x`
            raise self._fail(node, f"invalid value {node.value!r} for tag '{node.tag}'"
                             + (f": {exc}" if isinstance(exc, ValueError) else "")) from None

    def _key(self, key_node: yaml.Node) -> Any:
        if not isinstance(key_node, yaml.ScalarNode):
            raise self._fail(key_node, "mapping keys must be plain scalars")
        if key_node.tag == _VALUE_TAG:  # a `=` key, as PyYAML reads it
            return key_node.value
        key = self._scalar(key_node)
        if not isinstance(key, str | int | float | bool) and key is not None:
            key = str(key)
        if isinstance(key, bool) or key is None:
            # YAML 1.1 reads `on`/`yes`/`null` keys as booleans/None: keep the text the user wrote
            key = key_node.value
        return key

    def _split(self, node: yaml.MappingNode) -> tuple[list[tuple[yaml.Node, yaml.Node]],
                                                      list[tuple[yaml.Node, yaml.Node]]]:
        """The pairs written in ``node``, and those its ``<<`` merge keys bring in, in the order
        that decides which wins: written keys first, then each merged mapping in the order listed."""
        own: list[tuple[yaml.Node, yaml.Node]] = []
        sources: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag != _MERGE_TAG:
                own.append((key_node, value_node))
            elif isinstance(value_node, yaml.MappingNode):
                sources.append(value_node)
            elif isinstance(value_node, yaml.SequenceNode):
                for item in value_node.value:
                    if not isinstance(item, yaml.MappingNode):
                        raise self._fail(item, f"invalid merge key: expected a mapping to merge, found {item.id}")
                    sources.append(item)
            else:
                raise self._fail(value_node, "invalid merge key: expected a mapping or list of mappings to "
                                 f"merge, found {value_node.id}")
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        seen: set[int] = set()
        for source in sources:
            if source.tag not in _MAPPING_TAGS:
                raise self._fail(source, f"unsupported YAML tag '{source.tag}'")
            for pair in self._merged_pairs(source):
                if id(pair[0]) not in seen:  # the same anchor merged twice brings its keys once
                    seen.add(id(pair[0]))
                    merged.append(pair)
        return own, merged

    def _merged_pairs(self, node: yaml.MappingNode) -> list[tuple[yaml.Node, yaml.Node]]:
        cached = self.merged.get(id(node))
        if cached is not None:
            return cached
        if id(node) in self.merging or len(self.merging) >= MAX_DEPTH:
            raise self._fail(node, "recursive YAML merge" if id(node) in self.merging
                             else f"merges nested more than {MAX_DEPTH} levels deep")
        self.merging.add(id(node))
        try:
            own, merged = self._split(node)
        finally:
            self.merging.discard(id(node))
        pairs = own + merged
        self._tally(node, len(pairs))
        self.merged[id(node)] = pairs
        return pairs

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[Any, Any]:
        own_pairs, merged_pairs = self._split(node)
        own: dict[Any, Any] = {}
        for key_node, value_node in own_pairs:
            key = self._key(key_node)
            if key in own:
                first = self.positions.keys.get((*path, key), (0, 0))[0]
                line, col = self._mark(key_node)
                self.positions.problems.append(
                    Diagnostic(Location(self.positions.file, line, col),
                               f"duplicate key '{key}' (first at line {first})")
                )
                continue
            self.positions.keys[(*path, key)] = self._mark(key_node)
            own[key] = self.build(value_node, (*path, key))
        inherited: dict[Any, Any] = {}
        for key_node, value_node in merged_pairs:
            key = self._key(key_node)
            if key in own or key in inherited:  # written keys override merged ones; the first merge wins
                continue
            self.positions.keys[(*path, key)] = self._mark(key_node)
            inherited[key] = self.build(value_node, (*path, key))
        return {**inherited, **own}


def _problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None)
    return str(problem) if problem else _first_line(exc)
