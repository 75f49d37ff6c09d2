"""Runtime settings from four layers, each value remembering where it came from.

Precedence: ``--set key=value`` flags > ``PROGRESSIVE_SECTION__KEY`` environment
variables > ``progressive.yaml`` > built-in defaults.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from progressive_cli.config.common import error_message
from progressive_cli.config.secrets import ENV_REF
from progressive_cli.config.settings import Settings
from progressive_cli.config.yamlpos import PositionMap, field_name
from progressive_cli.errors import Diagnostic, Location

ENV_PREFIX = "PROGRESSIVE_"
NOT_SETTINGS = frozenset({"PROGRESSIVE_PROJECT", "PROGRESSIVE_DEBUG"})  # read directly, not settings
Key = tuple[str, ...]


@dataclass(frozen=True)
class Source:
    kind: str  # default | file | env | flag
    detail: str = ""

    def __str__(self) -> str:
        return self.detail or self.kind

    def location(self) -> Location:
        if self.kind == "file":
            file, _, rest = self.detail.partition(":")
            line, _, col = rest.partition(":")
            return Location(file, int(line or 0), int(col or 0))
        return Location(self.detail or self.kind)


@dataclass
class SettingsLayers:
    """The merged leaves of the settings tree and the source of each."""

    values: dict[Key, Any] = field(default_factory=dict)
    sources: dict[Key, Source] = field(default_factory=dict)

    def rows(self) -> list[tuple[str, Any, str]]:
        return [(".".join(k), self.values[k], str(self.sources[k])) for k in sorted(self.values)]

    def env_refs_missing(self, environ: Mapping[str, str]) -> list[tuple[str, Location]]:
        out = []
        for key, value in self.values.items():
            text = yaml.safe_dump(value) if not isinstance(value, str) else value
            for name in ENV_REF.findall(text):
                if name not in environ:
                    out.append((name, self.sources[key].location()))
        return out


def env_name(key: Key) -> str:
    return ENV_PREFIX + "__".join(part.upper() for part in key)


def _flatten(data: Mapping[str, Any], prefix: Key = ()) -> dict[Key, Any]:
    out: dict[Key, Any] = {}
    for k, v in data.items():
        key = (*prefix, str(k))
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _nest(flat: Mapping[Key, Any]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in flat.items():
        node = root
        for part in key[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            node[key[-1]] = value
    return root


def _parse_scalar(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return text if value is None and text.strip() not in ("null", "~") else value


def _known_keys() -> tuple[set[Key], set[Key]]:
    leaves = set(_flatten(Settings().dump()))
    prefixes = {leaf[:i] for leaf in leaves for i in range(1, len(leaf))}
    return leaves, prefixes


def build_settings(
    file_data: Any,
    positions: PositionMap | None,
    environ: Mapping[str, str],
    overrides: Mapping[str, str],
) -> tuple[Settings | None, SettingsLayers, list[Diagnostic]]:
    problems: list[Diagnostic] = []
    layers = SettingsLayers()
    for key, value in _flatten(Settings().dump()).items():
        layers.values[key] = value
        layers.sources[key] = Source("default")
    leaves, prefixes = _known_keys()

    user: dict[Key, tuple[Any, Source]] = {}
    if file_data is not None and positions is not None:
        if not isinstance(file_data, Mapping):
            problems.append(Diagnostic(positions.locate(()), "expected a mapping at the top level"))
        else:
            for key, value in _flatten(file_data).items():
                line, col = positions.keys.get(key, positions.values.get(key, (0, 0)))
                user[key] = (value, Source("file", f"{positions.file}:{line}:{col}"))

    def known(key: Key, where: Location, spelled: str, severity: str = "error") -> bool:
        if key in leaves or key in prefixes or (len(key) > 1 and key[:-1] in leaves):
            return True
        options = [".".join(k) for k in leaves]
        close = difflib.get_close_matches(".".join(key), options, n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        problems.append(Diagnostic(where, f"unknown setting '{spelled}'{hint}", severity))
        return False

    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in NOT_SETTINGS:
            continue
        if "__" not in name:
            problems.append(Diagnostic(Location(name), "not a setting and ignored; settings are named "
                                       "PROGRESSIVE_SECTION__KEY, e.g. PROGRESSIVE_HEALTH__INTERVAL", "warning"))
            continue
        key = tuple(p.lower() for p in name[len(ENV_PREFIX):].split("__"))
        if known(key, Location(name), ".".join(key), "warning"):  # a stray variable must not stop every command
            user[key] = (_parse_scalar(environ[name]), Source("env", name))
    for spelled, raw in overrides.items():
        key = tuple(spelled.split("."))
        if known(key, Location("--set"), spelled):
            user[key] = (_parse_scalar(raw), Source("flag", "--set"))

    for key, (value, origin) in user.items():
        for old in [k for k in layers.values if k[: len(key)] == key or key[: len(k)] == k]:
            del layers.values[old], layers.sources[old]  # a whole sub-tree replaced by one layer
        layers.values[key] = value
        layers.sources[key] = origin

    layers_sources = dict(layers.sources)
    nested = _nest({k: v for k, (v, _) in user.items()})
    try:
        settings = Settings.model_validate(nested)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = tuple(str(p) for p in err["loc"] if not isinstance(p, int))
            source: Source | None = next(
                (user[loc[:i]][1] for i in range(len(loc), 0, -1) if loc[:i] in user), None
            )
            if source is None:  # the error is on a mapping whose leaves were set: blame the first of them
                source = next((src for key, (_, src) in user.items() if key[: len(loc)] == loc), None)
            if source is not None:
                where = source.location()
            else:
                where = positions.locate(loc, key=True) if positions else Location("progressive.yaml")
            message = error_message(err)
            problems.append(Diagnostic(where, f"{field_name(tuple(err['loc']))}: {message}"))
        return None, layers, problems
    # show validated values (a duration in seconds, wherever it was written), each with its source
    validated = _flatten(settings.model_dump(mode="json", by_alias=True))
    layers.values = validated
    layers.sources = {key: _source_of(key, layers_sources) for key in validated}
    return settings, layers, problems


def _source_of(key: Key, sources: Mapping[Key, Source]) -> Source:
    for i in range(len(key), 0, -1):
        if key[:i] in sources:
            return sources[key[:i]]
    return Source("default")
