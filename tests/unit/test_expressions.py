"""The workflow expression language: typed results, functions, the sandbox, offsets, fuzzing."""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progressive_cli.engine import expressions as ex
from progressive_cli.engine.expressions import (
    FUNCTIONS,
    ExpressionError,
    compile_condition,
    compile_expression,
    compile_template,
)

CTX: dict[str, Any] = {
    "inputs": {
        "n": 3,
        "f": 2.5,
        "name": "Ada",
        "items": [3, 1, 2],
        "words": ["b", "a", "b"],
        "nested": {"a": {"b": 5}},
        "empty": "",
        "none": None,
        "flag": True,
        "big": 10**400,
        "_secret": "hidden",
        "dunder": "__class__",
        "under": "_secret",
        "key": "name",
    },
    "steps": {"a": {"output": {"x": 10, "list": [1, 2, 3], "text": "Hello"}}},
    "vars": {"k": "v"},
    "execution": {"id": "e1"},
}


def ev(source: str, ctx: dict[str, Any] | None = None) -> Any:
    return compile_expression(source)(CTX if ctx is None else ctx)


def render(source: str, ctx: dict[str, Any] | None = None) -> Any:
    return compile_template(source).render(CTX if ctx is None else ctx)


def same(a: Any, b: Any) -> bool:
    """Equal and of the same type all the way down (so 3 != 3.0 != True, "3" != 3)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


# --- typed results, literals, operators ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # literals and roots
        ("1", 1),
        ("-2", -2),
        ("1.5", 1.5),
        ("'a'", "a"),
        ('"a b"', "a b"),
        ("true", True),
        ("false", False),
        ("null", None),
        ("True", True),
        ("None", None),
        ("[1, 'a', null]", [1, "a", None]),
        ("(1, 2)", [1, 2]),
        ("{'a': 1, 'b': [true]}", {"a": 1, "b": [True]}),
        ("{1: 'x'}", {1: "x"}),
        ("{inputs.name: inputs.n}", {"Ada": 3}),
        ("inputs.n", 3),
        ("inputs.f", 2.5),
        ("inputs['n']", 3),
        ("inputs.nested.a.b", 5),
        ("inputs['nested']['a']['b']", 5),
        ("inputs[inputs.key]", "Ada"),
        ("inputs.items", [3, 1, 2]),
        ("inputs.missing", None),
        ("inputs.missing.deeper", None),
        ("inputs.none['x']", None),
        ("steps.a.output.x", 10),
        ("steps.nope.output", None),
        ("vars.k", "v"),
        ("execution.id", "e1"),
        # arithmetic
        ("1 + 2", 3),
        ("inputs.n * 2", 6),
        ("inputs.n * 0.9", 3 * 0.9),
        ("7 / 2", 3.5),
        ("7 // 2", 3),
        ("-7 // 2", -4),
        ("7 % 3", 1),
        ("2 ** 10", 1024),
        ("2 ** -1", 0.5),
        ("+inputs.n", 3),
        ("-inputs.f", -2.5),
        ("'ab' + 'cd'", "abcd"),
        ("'ab' * 3", "ababab"),
        ("[1] * 3", [1, 1, 1]),
        ("[1] + [2]", [1, 2]),
        ("{'a': 1} + {'b': 2}", {"a": 1, "b": 2}),
        ("{'a': 1} + {'a': 2}", {"a": 2}),
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        # comparisons
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 4", False),
        ("3 >= 4", False),
        ("1 < 2 < 3", True),
        ("1 < 3 < 2", False),
        ("inputs.n == 3", True),
        ("inputs.n != 3", False),
        ("'a' < 'b'", True),
        ("[1, 2] == [1, 2]", True),
        ("null == inputs.missing", True),
        ("1 == 1.0", True),
        ("'3' == 3", False),
        # in / not in
        ("2 in inputs.items", True),
        ("5 not in inputs.items", True),
        ("'name' in inputs", True),
        ("'zzz' in inputs", False),
        ("'da' in inputs.name", True),
        ("[1] in {'a': 1}", False),
        # and / or / not (Python semantics: the deciding operand)
        ("true and false", False),
        ("true or false", True),
        ("not true", False),
        ("not inputs.empty", True),
        ("inputs.empty or 'fallback'", "fallback"),
        ("inputs.name and inputs.n", 3),
        ("inputs.none and 1/0", None),  # short-circuit: 1/0 never runs
        ("inputs.flag or 1/0", True),
        # ternary
        ("'big' if inputs.n > 2 else 'small'", "big"),
        ("'big' if inputs.n > 5 else 'small'", "small"),
        ("1 if inputs.none else 1/1", 1.0),
        # slices and indexes
        ("inputs.items[0]", 3),
        ("inputs.items[-1]", 2),
        ("inputs.items[10]", None),
        ("inputs.items[1:]", [1, 2]),
        ("inputs.items[:2]", [3, 1]),
        ("inputs.items[::-1]", [2, 1, 3]),
        ("inputs.items[::2]", [3, 2]),
        ("inputs.name[0]", "A"),
        ("inputs.name[1:]", "da"),
        ("inputs.name[::-1]", "adA"),
        ("'abc'[-1:]", "c"),
        # filters
        ("inputs.missing | default(0)", 0),
        ("inputs.empty | default('x')", "x"),
        ("inputs.n | default(0)", 3),
        ("inputs.items | length", 3),
        ("inputs.name | upper", "ADA"),
        ("inputs.name | lower | upper", "ADA"),
        ("inputs.words | join('-')", "b-a-b"),
        ("inputs.f | round", 3),
    ],
)
def test_evaluates_with_types(source: str, expected: Any) -> None:
    result = ev(source)
    assert same(result, expected), (source, result, expected)


def test_multi_line_expressions() -> None:
    assert ev("inputs.n\n  + 1") == 4
    assert ev("inputs.n +\r\n 1") == 4


def test_evaluation_errors_are_expression_errors() -> None:
    for source, fragment in [
        ("1 / 0", "division by zero"),
        ("1 // 0.0", "division by zero"),
        ("1 % 0", "division by zero"),
        ("'a' + 1", "+ needs numbers"),
        ("'a' - 'b'", "- needs numbers"),
        ("true + 1", "+ needs numbers"),
        ("-'a'", "- needs numbers"),
        ("1 < 'a'", "cannot compare number < string"),
        ("null > 1", "cannot compare"),
        ("1 in 2", "'in' needs a list"),
        ("1 in 'abc'", "'in' a string needs a string"),
        ("inputs.n.x", "cannot read '.x' of a number"),
        ("inputs.items.x", "cannot read '.x' of a list"),
        ("inputs.items['a']", "index must be a whole number"),
        ("inputs.items[true]", "index must be a whole number"),
        ("inputs.n[0]", "cannot index a number"),
        ("inputs[[1]]", "cannot index an object with a list"),
        ("inputs[1:2]", "cannot slice a object"),
        ("inputs.items[0.5:]", "slice bounds must be whole numbers"),
        ("inputs.items[::0]", "slice step cannot be zero"),
        ("{[1]: 2}", "object keys must be strings or numbers"),
        ("(-8) ** 0.5", "no real result"),
        ("0 ** -1", "** failed"),
        ("inputs.big * 1.5", "out of range"),
        ("inputs.big / 3", "out of range"),
        ("inputs.big - 0.5", "out of range"),
        ("inputs.big % 2.5", "out of range"),
    ]:
        with pytest.raises(ExpressionError) as info:
            ev(source)
        assert fragment in info.value.message, (source, info.value.message)
        assert info.value.source == source.strip()


def test_non_finite_numbers_are_refused() -> None:
    for source in ("1e308 * 10", "1e400", "float('inf')", "float('nan')", "-1e308 * 10"):
        with pytest.raises(ExpressionError, match="out of range"):
            ev(source)
    with pytest.raises(ExpressionError, match=r"\*\* failed"):
        ev("10.0 ** 400")


# --- functions --------------------------------------------------------------------------------------------
FUNCTION_CASES: list[tuple[str, Any]] = [
    ("length('abc')", 3),
    ("length([1, 2])", 2),
    ("length({'a': 1})", 1),
    ("len(inputs.items)", 3),
    ("default(null, 5)", 5),
    ("default('', 5)", 5),
    ("default(0, 5)", 0),
    ("default(false, 5)", False),
    ("default(null)", ""),
    ("coalesce(null, null, 2, 3)", 2),
    ("coalesce(null)", None),
    ("coalesce()", None),
    ("get(inputs, 'n')", 3),
    ("get(inputs, 'zzz', 7)", 7),
    ("get([10, 20], 1)", 20),
    ("get([10, 20], -2)", 10),
    ("get([10, 20], 5, 'none')", "none"),
    ("get('abc', 0, 'x')", "x"),
    ("join(['a', 1, true, null, 2.0], '|')", "a|1|true||2"),
    ("join(['a', 'b'])", "a,b"),
    ("join([])", ""),
    ("lower('AbC')", "abc"),
    ("upper('AbC')", "ABC"),
    ("trim('  a b  ')", "a b"),
    ("startswith('hello', 'he')", True),
    ("startswith('hello', 'lo')", False),
    ("endswith('hello', 'lo')", True),
    ("replace('a-b-c', '-', '+')", "a+b+c"),
    ("replace('ab', '', '.')", ".a.b."),
    ("split('a,b,c')", ["a", "b", "c"]),
    ("split('a b', ' ')", ["a", "b"]),
    ("round(2.5)", 3),  # half away from zero, as people round
    ("round(-2.5)", -3),
    ("round(2.675, 2)", 2.68),
    ("round(1234, -2)", 1200),
    ("bool('false')", False),
    ("bool('No')", False),
    ("bool('0')", False),
    ("bool('yes')", True),
    ("round(3.14159, 2)", 3.14),
    ("round(1234, -2)", 1200),
    ("abs(-3)", 3),
    ("abs(-2.5)", 2.5),
    ("floor(2.7)", 2),
    ("floor(-2.1)", -3),
    ("ceil(2.1)", 3),
    ("ceil(-2.7)", -2),
    ("min([3, 1, 2])", 1),
    ("min(3, 1, 2)", 1),
    ("max([3, 1, 2])", 3),
    ("max('a', 'c', 'b')", "c"),
    ("sum([1, 2, 3.5])", 6.5),
    ("sum([])", 0),
    ("sort([3, 1, 2])", [1, 2, 3]),
    ("sort(['b', 'a'])", ["a", "b"]),
    ("unique([1, 2, 1, 3, 2])", [1, 2, 3]),
    ("unique([{'a': 1}, {'a': 1}, [1], [1]])", [{"a": 1}, [1]]),
    ("keys({'a': 1, 'b': 2})", ["a", "b"]),
    ("values({'a': 1, 'b': 2})", [1, 2]),
    ("items({'a': 1})", [["a", 1]]),
    ("int('42')", 42),
    ("int('4.9')", 4),
    ("int(4.9)", 4),
    ("int(true)", 1),
    ("float('2.5')", 2.5),
    ("float(2)", 2.0),
    ("str(3)", "3"),
    ("str(2.0)", "2"),
    ("str(null)", ""),
    ("str(true)", "true"),
    ("str([1, 'a'])", '[1, "a"]'),
    ("bool('')", False),
    ("bool([0])", True),
    ("tojson({'b': 1, 'a': [true, null]})", '{"a": [true, null], "b": 1}'),
    ("tojson('x')", '"x"'),
    ("fromjson('{\"a\": [1, 2.5, null]}')", {"a": [1, 2.5, None]}),
    ("range(3)", [0, 1, 2]),
    ("range(1, 7, 2)", [1, 3, 5]),
    ("range(3, 0, -1)", [3, 2, 1]),
]


@pytest.mark.parametrize(("source", "expected"), FUNCTION_CASES)
def test_functions(source: str, expected: Any) -> None:
    result = ev(source)
    assert same(result, expected), (source, result, expected)


def test_every_function_has_a_hand_checked_case() -> None:
    called = {source.split("(")[0] for source, _ in FUNCTION_CASES}
    assert set(FUNCTIONS) <= called, set(FUNCTIONS) - called


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("length(3)", "length needs a string, list or object"),
        ("join('ab')", "join needs a list"),
        ("lower(1)", "lower needs a string"),
        ("keys([1])", "keys needs an object"),
        ("min(1)", "min needs a list"),
        ("min([])", "min failed"),
        ("sort([1, 'a'])", "sort failed"),
        ("sum(['a'])", "sum needs numbers"),
        ("int('x')", "int cannot convert 'x'"),
        ("int([1])", "int cannot convert list"),
        ("float('inf') | int", "out of range"),
        ("range(1.5)", "range() needs whole numbers"),
        ("round(1.5, 1.5)", "digits must be a whole number"),
        ("fromjson('{')", "fromjson() failed"),
        ("split('abc', '')", "split() failed"),
        ("range(1, 10, 0)", "range() failed"),
        ("range()", "range() got 0 argument(s)"),
        ("upper()", "upper() got 0 argument(s)"),
        ("abs(1, 2)", "abs() got 2 argument(s)"),
        ("abs('x')", "abs needs numbers"),
        ("floor(float('nan'))", "out of range"),
        ("round(float('inf'))", "out of range"),
        ("get(inputs, '_secret')", "keys starting with '_'"),
    ],
)
def test_function_errors(source: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        ev(source)
    assert fragment in info.value.message


# --- templates ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("${{ inputs.n }}", 3),  # one whole part keeps its type
        ("${{inputs.n}}", 3),
        ("  ${{ inputs.n }}\n", 3),
        ("${{ inputs.items }}", [3, 1, 2]),
        ("${{ inputs.none }}", None),
        ("${{ inputs.flag }}", True),
        ("${{ {'a': {'b': 1}} }}", {"a": {"b": 1}}),  # '}}' inside the expression is not the end
        ("${{ 'a}}b' }}", "a}}b"),
        ("n=${{ inputs.n }}", "n=3"),
        ("${{ inputs.n }}-${{ inputs.f }}", "3-2.5"),
        ("${{ inputs.n }}${{ inputs.n }}", "33"),
        ("${{ inputs.n }} and ${{ inputs.name }}", "3 and Ada"),
        ("[${{ inputs.none }}]", "[]"),
        ("${{ inputs.flag }}!", "true!"),
        ("${{ 4.0 }}x", "4x"),
        ("${{ inputs.items }}!", "[3, 1, 2]!"),
        ("${{ {'b': 1, 'a': 2} }} ", {"b": 1, "a": 2}),
        ("x ${{ {'b': 1, 'a': 2} }}", 'x {"a": 2, "b": 1}'),
        ("no template here", "no template here"),
        ("", ""),
        ("{{ 7*7 }}", "{{ 7*7 }}"),  # Jinja syntax is plain text here, never evaluated
        ("{% import os %}", "{% import os %}"),
        ("$ {{ 7*7 }}", "$ {{ 7*7 }}"),
        ("${{ 7*7 }}", 49),
    ],
)
def test_templates(source: str, expected: Any) -> None:
    result = render(source)
    assert same(result, expected), (source, result)


def test_rendered_text_is_bounded_part_by_part() -> None:
    template = compile_template("${{ 'a' * 600000 }}" * 2 + "!")
    with pytest.raises(ExpressionError, match="rendered text is longer than"):
        template.render(CTX)
    started = time.monotonic()
    with pytest.raises(ExpressionError):
        compile_template("${{ 'a' * 999999 }}" * 2000).render(CTX)
    assert time.monotonic() - started < 1


def test_rendering_a_value_nested_too_deeply_for_text() -> None:
    deep: list[Any] = []
    for _ in range(20_000):
        deep = [deep]
    ctx = {**CTX, "vars": {"deep": deep}}
    assert compile_template("${{ vars.deep }}").render(ctx) is deep  # a whole part is not written out
    with pytest.raises(ExpressionError, match="nests too deeply"):
        compile_template("x ${{ vars.deep }}").render(ctx)
    with pytest.raises(ExpressionError, match="nests too deeply"):
        compile_expression("tojson(vars.deep)")(ctx)


def test_python_syntax_warnings_are_not_printed() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert compile_expression("1if true else 2")(CTX) == 1
        assert compile_expression("'\\d'")(CTX) == "\\d"


def test_template_parts_and_expressions() -> None:
    template = compile_template("a ${{ inputs.n }} b ${{ steps.a.output.x }}")
    assert [p if isinstance(p, str) else p.source for p in template.parts] == [
        "a ", "inputs.n", " b ", "steps.a.output.x"
    ]
    assert [e.source for e in template.expressions] == ["inputs.n", "steps.a.output.x"]
    assert ex.is_template("x ${{ y }}") and not ex.is_template("x {{ y }}")


def test_conditions() -> None:
    assert compile_condition("inputs.n > 2")(CTX) is True
    assert compile_condition("${{ inputs.n > 5 }}")(CTX) is False
    assert compile_condition(" ${{ inputs.n }} ")(CTX) == 3
    with pytest.raises(ExpressionError, match="either a bare expression or one"):
        compile_condition("${{ inputs.n }} and ${{ inputs.n }}")
    with pytest.raises(ExpressionError, match="either a bare expression or one"):
        compile_condition("inputs.n > ${{ 1 }}")
    with pytest.raises(ExpressionError, match="empty expression"):
        compile_condition("   ")


# --- offsets and messages ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "bad", "fragment"),
    [
        ("inputs.n + foo", "foo", "unknown name 'foo'; expressions can read: execution, inputs, steps, vars"),
        ("   foo", "foo", "unknown name 'foo'"),
        ("'é' + foo", "foo", "unknown name 'foo'"),  # offsets count characters, not UTF-8 bytes
        ("'日本語' + inputs._x", "_x", "names starting with '_' are not allowed: _x"),
        ("inputs.n +* 2", "* 2", "syntax error"),
        ("inputs.n + (1", "(1", "was never closed"),
        ("inputs['__class__']", "'__class__'", "keys starting with '_' are not allowed"),
        ("1 + nope(2)", "nope(2)", "unknown function 'nope'"),
        ("1 + inputs.keys()", "inputs.keys()", "method calls are not allowed"),
        ("[1, lambda: 2]", "lambda: 2", "lambda is not allowed"),
        ("inputs.n | 3", "3", "after | comes a filter name"),
        ("inputs.n is null", "inputs.n is null", "'is' is not allowed; use == or !="),
        ("1 + length", "length", "'length' is a function"),
        ("upper(x='a')", "upper(x='a')", "keyword arguments are not allowed"),
        ("1 << 2", "1 << 2", "operator '<<' is not allowed"),
    ],
)
def test_compile_errors_point_at_the_problem(source: str, bad: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression(source)
    err = info.value
    assert fragment in err.message
    assert err.source == source
    assert err.offset == source.index(bad), (err.offset, source[err.offset:])


def test_syntax_error_at_the_end_points_at_the_end() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_expression("  inputs.n +")
    assert info.value.offset == len("  inputs.n +")
    assert info.value.message.startswith("syntax error")


@pytest.mark.parametrize(
    ("source", "bad", "fragment"),
    [
        ("Hello ${{ inputs.name }} and ${{ bogus.x }}", "bogus", "unknown name 'bogus'"),
        ("${{ inputs.n }}-${{ inputs.n +* 1 }}", "* 1 }}", "syntax error"),
        ("a ${{ inputs.n }", "${{ inputs.n }", "'${{' is not closed"),
        ("  ${{   zzz }}", "zzz", "unknown name 'zzz'"),
        ("é ${{ 1 }} é ${{ é }}", "é }}", "unknown name 'é'"),
        ("é ${{ 1 }} é ${{ é + }}", " }}", "syntax error"),
        ("${{ }}", " }}", "empty expression"),
        ("x ${{ inputs.a.__class__ }}", "__class__", "names starting with '_'"),
    ],
)
def test_template_offsets_are_in_the_full_string(source: str, bad: str, fragment: str) -> None:
    with pytest.raises(ExpressionError) as info:
        compile_template(source)
    err = info.value
    assert fragment in err.message
    assert err.source == source
    assert err.offset == source.rindex(bad), (err.offset, source[err.offset:])


def test_condition_offsets() -> None:
    with pytest.raises(ExpressionError) as info:
        compile_condition("  ${{ inputs.n + zz }}")
    assert info.value.offset == len("  ${{ inputs.n + ")
    with pytest.raises(ExpressionError) as info:
        compile_condition("x ${{ 1 }}")
    assert info.value.offset == 2


# --- references ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("source", "refs"),
    [
        ("steps.a.output.x + inputs.b", {("steps", "a"), ("inputs", "b")}),
        ("inputs['b'] + vars.c", {("inputs", "b"), ("vars", "c")}),
        ("inputs[inputs.k]", {("inputs", "k")}),
        ("length(steps)", {("steps", None)}),
        ("inputs[0]", {("inputs", None)}),
        ("1 + 2", set()),
        ("default(execution.id, 'x') | upper", {("execution", "id")}),
        ("inputs.a if inputs.b else steps.c.output", {("inputs", "a"), ("inputs", "b"), ("steps", "c")}),
    ],
)
def test_references(source: str, refs: set[tuple[str, str | None]]) -> None:
    assert compile_expression(source).references == refs


def test_custom_roots() -> None:
    expr = compile_expression("item.x + 1", frozenset({"item"}))
    assert expr({"item": {"x": 1}}) == 2
    assert expr.references == {("item", "x")}
    with pytest.raises(ExpressionError, match="expressions can read: item"):
        compile_expression("inputs.x", frozenset({"item"}))


# --- the sandbox ---------------------------------------------------------------------------------------------
INJECTIONS = [
    "().__class__.__bases__[0].__subclasses__()",
    "inputs.__class__",
    "inputs['__class__']",
    "inputs['__cla' + 'ss__']",
    "inputs[inputs.dunder]",
    "inputs[inputs.under]",
    "inputs[lower('_SECRET')]",
    "inputs['_secret']",
    "get(inputs, inputs.under)",
    "get(inputs, '__class__')",
    "inputs._secret",
    "''.__class__.__mro__",
    "''.__class__",
    "(1).__class__",
    "inputs.n.__class__",
    "lipsum.__globals__",
    "cycler.__init__.__globals__.os.popen('id').read()",
    "joiner.__init__.__globals__",
    "namespace.__init__.__globals__.os",
    "config.items()",
    "config.__class__.__init__.__globals__['os']",
    "self._TemplateReference__context",
    "self.__init__.__globals__.__builtins__",
    "request.application.__globals__",
    "__import__('os').system('id')",
    "__builtins__",
    "_",
    "getattr(inputs, 'x')",
    "eval('1')",
    "exec('1')",
    "compile('1', 'x', 'eval')",
    "open('/etc/passwd')",
    "type(inputs)",
    "globals()",
    "vars()",
    "lambda: 1",
    "(lambda: 1)()",
    "[x for x in range(3)]",
    "{x: 1 for x in range(3)}",
    "{x for x in range(3)}",
    "(x for x in range(3))",
    "(x := 1)",
    "f'{inputs}'",
    "f'{inputs.__class__}'",
    "inputs.keys()",
    "inputs.items()",
    "inputs.get('n')",
    "{**inputs}",
    "*inputs",
    "[*inputs.items]",
    "length(*inputs.items)",
    "upper(x='a')",
    "str.mro()",
    "str(inputs).__class__",
    "{{7*7}}",
    "{% import os %}",
    "{{ config.items() }}",
    "'{0.__class__}'.format(inputs)",
    "'{0}'.format(inputs)",
    "'%s' % inputs",
    "'%(n)s' % inputs",
    "inputs | attr('__class__')",
    "inputs | map",
    "(1).real",
    "inputs.n.real",
    "b'x'",
    "...",
    "1j",
    "{1, 2}",
    "~1",
    "1 << 2",
    "inputs is None",
    "await inputs",
    "yield 1",
    "import os",
    "inputs.n; 1",
    "inputs.n = 1",
    "del inputs",
    "\x00",
    # DoS
    "9**9**9",
    "2 ** 10000",
    "(2 ** 1000) ** 1000",
    "'a' * 10**9",
    "'a' * 1000000 * 2",
    "[0] * 10**9",
    "range(10**9)",
    "range(10**100)",
    "replace('a' * 1000000, '', 'b' * 1000000)",
    "replace('a' * 1000000, 'a', 'bb')",
    "tojson(['a' * 1000000] * 1000)",
    "[range(999999)] * 100",
    "[range(999999), range(999999), range(999999), range(999999), range(999999)]",
    "join(['a' * 1000000] * 1000, '')",
    "sort(['a' * 1000000] * 1000)",
    "upper('a' * 1000000) + 'b'",
    "int('9' * 4000)",
    "fromjson('1' * 5000)",
    "fromjson('[' * 500000 + ']' * 500000)",
    "(" * 10000 + "1" + ")" * 10000,
    "[" * 10000 + "]" * 10000,
    "(" * 2000 + "1" + ")" * 2000,
    "[" * 1000 + "]" * 1000,
    "[" * 100 + "]" * 100,
    "-" * 3000 + "1",
    "not " * 1000 + "1",
    "inputs" + ".a" * 1000,
    "1" + "+1" * 1000,
    "1" * 100_000,
    "inputs.n + " * 10_000 + "1",
]


@pytest.mark.parametrize("payload", INJECTIONS, ids=lambda p: p[:40])
def test_injection_is_refused(payload: str) -> None:
    started = time.monotonic()
    with pytest.raises(ExpressionError) as info:
        result = compile_expression(payload)(CTX)
        pytest.fail(f"{payload!r} evaluated to {type(result).__name__}")  # pragma: no cover
    assert info.value.message
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("payload", [p for p in INJECTIONS if "\x00" not in p], ids=lambda p: p[:40])
def test_injection_inside_a_template_is_refused(payload: str) -> None:
    with pytest.raises(ExpressionError):
        template = compile_template(f"x ${{{{ {payload} }}}} y")
        template.render(CTX)


def test_secret_keys_can_still_be_read_by_plain_names_that_are_data() -> None:
    # the rule is about names, not about data: a value that *contains* "__class__" is just text
    assert ev("inputs.dunder") == "__class__"
    assert ev("'__class__'") == "__class__"


def test_results_are_plain_data() -> None:
    for source in ("inputs", "steps.a", "(1, 2)", "items({'a': 1})", "inputs.items[:]"):
        assert is_json_like(ev(source)), source


def test_limits_hold_but_allow_big_reasonable_values() -> None:
    assert len(ev("'a' * 1000000")) == 1_000_000
    assert len(ev("range(1000000)")) == 1_000_000
    assert len(ev("[[0] * 1000] * 1000")) == 1000
    assert ev("2 ** 1000") == 2**1000
    assert len(ev("tojson(range(100000))")) > 100_000


# --- fuzzing -------------------------------------------------------------------------------------------------
def is_json_like(value: Any) -> bool:
    seen: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if item is None or isinstance(item, bool | int | float | str):
            continue
        if type(item) is list:
            if id(item) not in seen:
                seen.add(id(item))
                stack.extend(item)
            continue
        if type(item) is dict:
            if id(item) not in seen:
                seen.add(id(item))
                if not all(k is None or isinstance(k, str | int | float | bool) for k in item):
                    return False
                stack.extend(item.values())
            continue
        return False
    return True


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=8),
    st.sampled_from(["__class__", "_secret", "a", "x", ""]),
)
KEYS = st.sampled_from(["a", "b", "x", "list", "name", "_p", "__class__", "0"]) | st.text(max_size=4)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)
contexts = st.fixed_dictionaries(
    {
        "inputs": st.dictionaries(KEYS, json_values, max_size=5),
        "steps": st.dictionaries(KEYS, st.fixed_dictionaries({"output": json_values}), max_size=3),
        "vars": json_values,
        "execution": json_values,
    }
)

EXPR_ALPHABET = st.sampled_from(
    [*"()[]{}'\"+-*/%<>=!.,:|&^~@ _$\\\n#0123456789eE", "inputs", "steps", "vars", "x", "if", "else",
     "not", "and", "or", "in", "lambda", "__class__", "length", "default", "${{", "}}", "true", "null", "é"]
)
expression_like = st.lists(EXPR_ALPHABET, max_size=40).map("".join) | st.text(max_size=60)


def _compile_only_raises_expression_errors(compile_fn: Any, text: str) -> Any:
    try:
        return compile_fn(text)
    except ExpressionError as err:
        assert isinstance(err.message, str) and err.message
        assert 0 <= err.offset <= len(text), (err.offset, text)
        return None


def _evaluate_only_raises_expression_errors(compiled: Any, ctx: dict[str, Any]) -> None:
    started = time.monotonic()
    try:
        result = compiled.render(ctx) if isinstance(compiled, ex.Template) else compiled(ctx)
    except ExpressionError:
        return
    finally:
        assert time.monotonic() - started < 5.0
    assert is_json_like(result), result


FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(text=expression_like, data=st.data())
def test_fuzz_compile_expression(text: str, data: st.DataObject) -> None:
    compiled = _compile_only_raises_expression_errors(compile_expression, text)
    if compiled is not None:  # a context is drawn only when there is something to evaluate
        _evaluate_only_raises_expression_errors(compiled, data.draw(contexts))


@FUZZ
@given(text=expression_like, data=st.data())
def test_fuzz_compile_template(text: str, data: st.DataObject) -> None:
    for source in (text, f"${{{{ {text} }}}}", f"a ${{{{{text}}}}} b"):
        compiled = _compile_only_raises_expression_errors(compile_template, source)
        if compiled is not None:
            _evaluate_only_raises_expression_errors(compiled, data.draw(contexts))


@FUZZ
@given(text=expression_like, data=st.data())
def test_fuzz_compile_condition(text: str, data: st.DataObject) -> None:
    for source in (text, f"${{{{ {text} }}}}"):
        compiled = _compile_only_raises_expression_errors(compile_condition, source)
        if compiled is not None:
            _evaluate_only_raises_expression_errors(compiled, data.draw(contexts))


# A grammar of *valid* expressions, so the fuzzer gets past the parser into the evaluator.
references = st.one_of(
    st.sampled_from(["inputs", "steps", "vars", "execution"]),
    st.builds("{}.{}".format, st.sampled_from(["inputs", "vars", "execution"]),
              st.sampled_from(["a", "b", "x", "list", "name"])),
    st.builds("steps.{}.output".format, st.sampled_from(["a", "b", "x"])),
    st.builds("{}[{!r}]".format, st.sampled_from(["inputs", "vars"]), st.sampled_from(["a", "x", "0", "__class__"])),
)
literals = st.one_of(
    st.integers(-5, 12).map(str),
    st.sampled_from(["0", "1000", "1000000", "999999", "10**400", "2**64", "-1", "1e308", "0.5", "-2.5",
                     "1e-308", "true", "false", "null", "''", "'a'", "'abc'", "'_x'", "'__class__'", "'1.5'",
                     "'[1, 2]'", "'{\"a\": 1}'", "' '", "','", "[]", "{}", "'é'"]),
)
BINARY = ["+", "-", "*", "/", "//", "%", "**", "==", "!=", "<", "<=", ">", ">=", "in", "not in", "and", "or"]


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    names = sorted(FUNCTIONS)
    return st.one_of(
        st.builds("({} {} {})".format, inner, st.sampled_from(BINARY), inner),
        st.builds("({}{})".format, st.sampled_from(["not ", "-", "+"]), inner),
        st.builds("({} if {} else {})".format, inner, inner, inner),
        st.builds("[{}]".format, st.lists(inner, max_size=3).map(", ".join)),
        st.builds("{{{}: {}}}".format, inner, inner),
        st.builds("{}[{}]".format, inner, inner),
        st.builds("{}[{}:{}:{}]".format, inner, st.sampled_from(["", "1", "-1", "0"]),
                  st.sampled_from(["", "2", "-1", "10"]), st.sampled_from(["", "1", "-1", "2"])),
        st.builds("{}({})".format, st.sampled_from(names), st.lists(inner, max_size=3).map(", ".join)),
        st.builds("({} | {})".format, inner, st.sampled_from(names)),
        st.builds("({} | {}({}))".format, inner, st.sampled_from(names), st.lists(inner, max_size=2).map(", ".join)),
    )


valid_expressions = st.recursive(references | literals, _extend, max_leaves=12)


@FUZZ
@given(source=valid_expressions, ctx=contexts)
def test_fuzz_valid_grammar_reaches_the_evaluator(source: str, ctx: dict[str, Any]) -> None:
    try:
        compiled = compile_expression(source)
    except ExpressionError as err:  # the grammar only makes valid expressions, but '_' keys are refused
        assert "starting with '_'" in err.message, (source, err.message)
        return
    assert compiled.source == source
    for root, key in compiled.references:
        assert root in ex.DEFAULT_ROOTS and (key is None or isinstance(key, str))
    _evaluate_only_raises_expression_errors(compiled, ctx)
    template = compile_template(f"<${{{{ {source} }}}}>")
    _evaluate_only_raises_expression_errors(template, ctx)
