"""The position-keeping YAML loader: positions, duplicates, merges, hostile input, fuzzing."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from progressive_cli.config import yamlpos
from progressive_cli.config.yamlpos import decode, field_name, load_yaml, read_text
from progressive_cli.errors import ConfigError, Location


def load(text: str, **kw: Any) -> tuple[Any, yamlpos.PositionMap]:
    return load_yaml(textwrap.dedent(text).lstrip("\n"), "f.yaml", **kw)


def fails(text: str, **kw: Any) -> str:
    """The one diagnostic a bad document gives, as file:line:col: message."""
    with pytest.raises(ConfigError) as info:
        load(text, **kw)
    diags = info.value.diagnostics
    assert len(diags) == 1
    return str(diags[0])


# --- positions ----------------------------------------------------------------------------------------
DOC = """
name: demo
steps:
  - id: first
    params:
      x: 1
      list: [a, b]
  - id: second
    "quoted key": "v"
empty:
"""


def test_values_and_keys_have_line_and_column() -> None:
    data, pos = load(DOC)
    assert data == {
        "name": "demo",
        "steps": [{"id": "first", "params": {"x": 1, "list": ["a", "b"]}}, {"id": "second", "quoted key": "v"}],
        "empty": None,
    }
    assert pos.file == "f.yaml"
    assert pos.values[()] == (1, 1)
    assert pos.keys[("name",)] == (1, 1)
    assert pos.values[("name",)] == (1, 7)
    assert pos.values[("steps",)] == (3, 3)
    assert pos.values[("steps", 0)] == (3, 5)
    assert pos.keys[("steps", 0, "id")] == (3, 5)
    assert pos.values[("steps", 0, "id")] == (3, 9)
    assert pos.keys[("steps", 0, "params", "x")] == (5, 7)
    assert pos.values[("steps", 0, "params", "x")] == (5, 10)
    assert pos.values[("steps", 0, "params", "list")] == (6, 13)
    assert pos.values[("steps", 0, "params", "list", 1)] == (6, 17)
    assert pos.values[("steps", 1)] == (7, 5)
    assert pos.keys[("steps", 1, "quoted key")] == (8, 5)
    assert pos.values[("steps", 1, "quoted key")] == (8, 19)
    assert pos.keys[("empty",)] == (9, 1)
    assert pos.problems == []


def test_locate_falls_back_to_the_nearest_parent() -> None:
    _, pos = load(DOC)
    assert pos.locate(("steps", 0, "params", "x")) == Location("f.yaml", 5, 10)
    assert pos.locate(("steps", 0, "params", "x"), key=True) == Location("f.yaml", 5, 7)
    assert pos.locate(("steps", 0, "params", "missing")) == Location("f.yaml", 5, 7)  # where params' mapping starts
    assert pos.locate(("steps", 0, "params", "missing"), key=True) == Location("f.yaml", 4, 5)
    assert pos.locate(("steps", 0), key=True) == Location("f.yaml", 3, 5)  # list items have no key
    assert pos.locate(("nope", "deeper")) == Location("f.yaml", 1, 1)
    assert pos.locate(()) == Location("f.yaml", 1, 1)


def test_field_name() -> None:
    assert field_name(("steps", 0, "params", "x")) == "steps[0].params.x"
    assert field_name(()) == "(top level)"
    assert field_name(("a",)) == "a"


def test_positions_count_characters_after_non_ascii() -> None:
    data, pos = load("é: ü\nx: [日本, y]\n")
    assert data == {"é": "ü", "x": ["日本", "y"]}
    assert pos.values[("é",)] == (1, 4)
    assert pos.values[("x", 1)] == (2, 9)


def test_bom_is_ignored() -> None:
    text = decode("\ufeffa: 1\n".encode(), "f.yaml")
    data, pos = load_yaml(text, "f.yaml")
    assert data == {"a": 1}
    assert pos.keys[("a",)] == (1, 1)


# --- duplicates ---------------------------------------------------------------------------------------
def test_duplicate_keys_are_reported_with_both_lines() -> None:
    data, pos = load(
        """
        a: 1
        b:
          x: 1
          y: 2
          x: 3
        a: 4
        """
    )
    assert data == {"a": 1, "b": {"x": 1, "y": 2}}  # the first wins
    found = sorted((d.location.line, d.location.col, d.message) for d in pos.problems)
    assert found == [
        (5, 3, "duplicate key 'x' (first at line 3)"),
        (6, 1, "duplicate key 'a' (first at line 1)"),
    ]
    assert all(d.location.file == "f.yaml" and d.severity == "error" for d in pos.problems)


def test_keys_that_read_the_same_are_duplicates() -> None:
    _, pos = load("on: 1\n'on': 2\n1: a\n0x1: b\n")
    assert [d.message for d in pos.problems] == [
        "duplicate key 'on' (first at line 1)",
        "duplicate key '1' (first at line 3)",
    ]


# --- merge keys ---------------------------------------------------------------------------------------
def test_merge_keys() -> None:
    data, pos = load(
        """
        base: &base {a: 1, b: 2}
        other: &other {b: 20, c: 30}
        x:
          <<: *base
          b: 3
        y:
          <<: [*base, *other]
          d: 4
        z:
          <<: [*other, *base]
        """
    )
    assert data["x"] == {"a": 1, "b": 3}  # a written key overrides a merged one...
    assert data["y"] == {"a": 1, "b": 2, "c": 30, "d": 4}  # ...and the first merged mapping wins
    assert data["z"] == {"b": 20, "c": 30, "a": 1}
    assert pos.problems == []  # overriding a merged key is not a duplicate
    assert pos.keys[("x", "b")] == (5, 3)
    assert pos.keys[("x", "a")] == (1, 14)  # a merged key is found where it was written
    assert pos.values[("y", "c")] == (2, 26)


def test_merge_chains_and_repeats() -> None:
    data, pos = load(
        """
        a: &a {k: 1}
        b: &b {<<: *a, j: 2}
        c: {<<: [*b, *a, *b], i: 3}
        """
    )
    assert data["c"] == {"k": 1, "j": 2, "i": 3}
    assert pos.problems == []


def test_duplicates_next_to_a_merge_are_still_reported() -> None:
    data, pos = load("base: &b {a: 1}\nx:\n  <<: *b\n  c: 1\n  c: 2\n")
    assert data["x"] == {"a": 1, "c": 1}
    assert [str(d) for d in pos.problems] == ["f.yaml:5:3: duplicate key 'c' (first at line 4)"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<<: 1\n", "f.yaml:1:5: invalid merge key: expected a mapping or list of mappings to merge, found scalar"),
        ("a: {<<: [1]}\n", "f.yaml:1:10: invalid merge key: expected a mapping to merge, found scalar"),
        ("a: &a {<<: *a}\n", "f.yaml:1:4: recursive YAML merge"),
        ("a: &a {x: {<<: *a}}\n", "recursive YAML"),
        ("a: {<<: !!python/object:os.X {}}\n", "unsupported YAML tag"),
    ],
)
def test_bad_merges(text: str, expected: str) -> None:
    assert expected in fails(text)


def test_merge_bomb_is_cheap() -> None:
    lines = ["a0: &a0 {k: v}"] + [f"a{i}: &a{i} {{<<: [*a{i - 1}, *a{i - 1}], k{i}: {i}}}" for i in range(1, 60)]
    started = time.monotonic()
    data, _ = load("\n".join(lines))
    assert time.monotonic() - started < 2
    assert len(data["a59"]) == 60


# --- YAML 1.1 quirks ----------------------------------------------------------------------------------
def test_yaml11_boolean_and_null_keys_keep_their_text() -> None:
    data, pos = load("on: 1\nyes: 2\nno: 3\noff: 4\nY: 5\ntrue: 6\nnull: 7\n~: 8\nOn: 9\n")
    assert list(data) == ["on", "yes", "no", "off", "Y", "true", "null", "~", "On"]
    assert pos.keys[("on",)] == (1, 1)
    assert pos.problems == []


def test_yaml11_values_are_still_typed() -> None:
    data, _ = load("a: on\nb: 'on'\nc: 010\nd: 1_000\ne: 1.5\nf: ~\ng: 0x1f\n")
    assert data == {"a": True, "b": "on", "c": 8, "d": 1000, "e": 1.5, "f": None, "g": 31}


def test_other_keys() -> None:
    data, _ = load("1: a\n1.5: b\n2020-01-01: c\n=: d\n")
    assert data == {1: "a", 1.5: "b", "2020-01-01": "c", "=": "d"}
    assert "mapping keys must be plain scalars" in fails("? [a, b]\n: 1\n")
    assert "mapping keys must be plain scalars" in fails("? {a: 1}\n: 1\n")


# --- files that are not YAML ----------------------------------------------------------------------------
def test_binary_file() -> None:
    with pytest.raises(ConfigError) as info:
        decode(b"a: 1\nb: 2\n\x00\x01\x02", "f.yaml")
    assert str(info.value.diagnostics[0]) == "f.yaml:3:1: binary file (NUL byte); expected UTF-8 YAML text"


def test_utf16_is_binary() -> None:
    with pytest.raises(ConfigError, match="binary file"):
        decode("a: 1\n".encode("utf-16"), "f.yaml")


def test_not_utf8() -> None:
    with pytest.raises(ConfigError) as info:
        decode("a: 1\nb: caf\u00e9\n".encode("latin-1"), "f.yaml")
    assert str(info.value.diagnostics[0]) == "f.yaml:2:1: not UTF-8 text; expected a UTF-8 YAML file"


def test_too_big(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlpos, "MAX_BYTES", 10)
    with pytest.raises(ConfigError, match="larger than"):
        decode(b"a: 12345678901", "f.yaml")
    assert decode(b"a: 1234567", "f.yaml") == "a: 1234567"


def test_read_text(tmp_path: Path) -> None:
    good = tmp_path / "a.yaml"
    good.write_bytes(b"a: 1\n")
    assert read_text(good, "a.yaml") == "a: 1\n"
    for path, message in [
        (tmp_path / "missing.yaml", "missing.yaml: file not found"),
        (tmp_path, "x.yaml: is a directory, expected a YAML file"),
    ]:
        with pytest.raises(ConfigError) as info:
            read_text(path, path.name if path.name == "missing.yaml" else "x.yaml")
        assert str(info.value.diagnostics[0]) == message


@pytest.mark.parametrize("text", ["", "\n\n", "# just a comment\n", "---\n", "~\n", "null\n", "---\n...\n"])
def test_empty_file(text: str) -> None:
    assert fails(text) == "f.yaml:1:1: file is empty; expected a YAML mapping"
    data, pos = load(text, allow_empty=True)
    assert data is None and pos.values == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\nb: 3\n", "f.yaml:2:2: invalid YAML: did not find expected ',' or ']'"),
        ("a: b: c\n", "f.yaml:1:5: invalid YAML: mapping values are not allowed in this context"),
        ("a:\n  - 1\n - 2\n", "f.yaml:3:2: invalid YAML: did not find expected key"),
        ("a: 1\n\tb: 2\n", "f.yaml:2:1: invalid YAML: found a tab character that violates indentation"),
        ("a: *nope\n", "f.yaml:1:4: invalid YAML: found undefined alias"),
        ("a: 1\n---\nb: 2\n", "f.yaml:2:1: invalid YAML: but found another document"),
        ("a: &x 1\nb: &x 2\n", "f.yaml:2:4: invalid YAML: duplicate anchor (first at line 1)"),
        ("a: \x07\n", "f.yaml:1:1: invalid YAML: unacceptable character #x0007: control characters are not allowed"),
    ],
)
def test_invalid_yaml_has_line_and_column(text: str, expected: str) -> None:
    assert fails(text) == expected


# --- hostile documents ------------------------------------------------------------------------------------
BILLION_LAUGHS = """
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""


def test_billion_laughs_is_refused_quickly() -> None:
    started = time.monotonic()
    assert "document expands to too many values (alias bomb?)" in fails(BILLION_LAUGHS)
    assert time.monotonic() - started < 3


def test_mapping_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 {x: 1, y: 2, z: 3, w: 4, v: 5, u: 6, t: 7, s: 8, r: 9, q: 10}"]
    lines += [f"a{i}: &a{i} {{{', '.join(f'k{j}: *a{i - 1}' for j in range(10))}}}" for i in range(1, 9)]
    assert "too many values" in fails("\n".join(lines))


def test_aliases_within_limits_are_expanded() -> None:
    data, pos = load("a: &x {k: [1, 2]}\nb: *x\nc: [*x, *x]\n")
    assert data["b"] == data["c"][1] == {"k": [1, 2]}
    assert pos.values[("c", 1, "k", 0)] == (1, 12)  # where the anchored value was written


@pytest.mark.parametrize(
    "text",
    ["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a [1, {b: [*a]}]\n", "&r [*r]\n"],
)
def test_recursive_alias(text: str) -> None:
    assert "recursive YAML alias" in fails(text)


@pytest.mark.parametrize(
    "text",
    [
        "x: !!python/object/apply:os.system ['id']\n",
        "x: !!python/object/apply:os.system\n  args: ['id']\n",
        "x: !!python/object/new:os.system ['id']\n",
        "x: !!python/object:os.Thing {a: 1}\n",
        "x: !!python/name:os.system ''\n",
        "x: !!python/module:os ''\n",
        "x: !!python/tuple [1, 2]\n",
        "!!python/object/apply:os.system ['id']\n",
        "x: !custom value\n",
        "x: !custom [1]\n",
        "x: !custom {a: 1}\n",
        "? !!python/name:os.system ''\n: 1\n",
        "x: !!map [1]\n",
        "x: !!seq {a: 1}\n",
    ],
)
def test_unsafe_and_unknown_tags_are_refused(text: str) -> None:
    message = fails(text)
    assert message.startswith("f.yaml:")
    assert "tag" in message or "constructor" in message


@pytest.mark.parametrize(
    "text",
    ["x: !!bool maybe\n", "x: !!int ''\n", "x: !!int 0x\n", "x: !!float ''\n", "x: !!timestamp nope\n",
     "x: !!timestamp 2020-13-45\n", "x: !!binary 'a'\n", "x: !!int ':'\n", "x: !!set 1\n", "x: !!omap 1\n"],
)
def test_bad_tagged_scalars_are_config_errors(text: str) -> None:
    assert fails(text).startswith("f.yaml:1:4: invalid value")


def test_standard_tags_work() -> None:
    data, _ = load("a: !!str 1\nb: !!int '3'\nc: !!float 1\nd: !!set {x}\ne: !!omap [k: 1]\nf: !!bool yes\n")
    assert data == {"a": "1", "b": 3, "c": 1.0, "d": {"x": None}, "e": [{"k": 1}], "f": True}


@pytest.mark.parametrize("depth", [300, 2000, 100_000])
def test_deep_nesting_is_refused(depth: int) -> None:
    message = fails("a: " + "[" * depth + "]" * depth)
    assert "nest" in message
    message = fails("a: " + "{b: " * depth + "1" + "}" * depth)
    assert "nest" in message


def test_moderate_nesting_is_fine() -> None:
    data, _ = load("a: " + "[" * 150 + "]" * 150)
    for _ in range(149):
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data == [[]]


# --- fuzzing ------------------------------------------------------------------------------------------------
def _only_config_errors(raw: bytes) -> None:
    try:
        _, pos = load_yaml(decode(raw, "fuzz.yaml"), "fuzz.yaml", allow_empty=True)
    except ConfigError as err:
        assert err.diagnostics
        for diag in err.diagnostics:
            assert diag.location.file == "fuzz.yaml"
            assert diag.location.line >= 0 and diag.location.col >= 0
            assert diag.message and "\n" not in diag.message
        return
    for diag in pos.problems:
        assert diag.location.file == "fuzz.yaml" and diag.location.line >= 1


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(raw: bytes) -> None:
    _only_config_errors(raw)


YAMLISH = st.sampled_from(
    [":", " ", "  ", "\n", "-", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!", "!x ",
     "!!python/object/apply:os.system ", "!!int ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ", "? ",
     "|", ">", "'", '"', "#", "%YAML 1.1\n", "---", "...", "a", "on", "1", "~", "\t", "é", "\x07", "\\", "=", "@"]
)


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(YAMLISH, max_size=40))
def test_fuzz_yaml_like_text(pieces: list[str]) -> None:
    _only_config_errors("".join(pieces).encode())
