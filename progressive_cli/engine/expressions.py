"""Safe, typed workflow expressions: ``${{ steps.targets.output.calories * 0.9 }}``.

The syntax is a small subset of Python expressions, parsed with :mod:`ast` and never
passed to ``eval``/``exec``/``compile``. Each accepted node becomes a closure, so an
expression is compiled once when its workflow loads and is cheap to evaluate.

What it allows: literals (``true``/``false``/``null`` too), lists and dicts, ``a.b``
and ``a["b"]`` on mappings, ``a[0]`` and slices on lists and strings, arithmetic,
comparisons, ``in``, ``and``/``or``/``not``, ``x if c else y``, calls to the functions
in :data:`FUNCTIONS`, and filters: ``x | default(0)`` is ``default(x, 0)``.

What it refuses, at compile time: any name outside the context roots, any name or
key starting with ``_``, attribute access on anything but a mapping (so no
``__class__``/``__globals__`` escape exists), method calls, lambdas, comprehensions,
f-strings, walrus, starred arguments. At run time it bounds sizes: integers, string
and list lengths, exponents, what one evaluation builds in total and how long a value
may get once written out as text, so a hostile expression cannot exhaust memory or CPU.

In a template, a ``${{ }}`` ends at the first ``}}`` outside brackets and string
literals, so ``${{ {'a': {'b': 1}} }}`` is one expression.
"""

from __future__ import annotations

import ast
import decimal
import json
import math
import operator
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

Context = Mapping[str, Any]
Fn = Callable[[Context], Any]

TEMPLATE = re.compile(r"\$\{\{(.*?)\}\}", re.DOTALL)
DEFAULT_ROOTS = frozenset({"inputs", "steps", "vars", "execution"})
MAX_LEN = 1_000_000  # longest string or list an expression may build
MAX_INT_BITS = 4096
MAX_EXPONENT = 1000
MAX_SOURCE = 4096
MAX_DEPTH = 64
MAX_BUILD = 4 * MAX_LEN  # items and characters one evaluation may build in total
MAX_TEXT = 10 * MAX_LEN  # longest a list built with * may be once written out (it repeats references)


class ExpressionError(ValueError):
    """A problem compiling or evaluating an expression; ``offset`` is 0-based within the source."""

    def __init__(self, message: str, source: str = "", offset: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.source = source
        self.offset = offset


_MISSING = object()

# What is left of MAX_BUILD in the evaluation running in this thread/task (None outside one).
_BUDGET: ContextVar[list[int] | None] = ContextVar("expression_budget", default=None)


def _length_ok(value: Any) -> Any:
    if isinstance(value, str | list | tuple | dict):
        if len(value) > MAX_LEN:
            raise ExpressionError(f"result is longer than {MAX_LEN} items")
        budget = _BUDGET.get()
        if budget is not None:
            budget[0] -= len(value)
            if budget[0] < 0:
                raise ExpressionError(f"expression builds more than {MAX_BUILD} items in total")
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
        raise ExpressionError("integer result is too large")
    elif isinstance(value, complex):
        raise ExpressionError("result is not a real number")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ExpressionError("number is out of range (infinite or not a number)")
    return value


def _text_size(value: Any, limit: int) -> int:
    """A lower bound on how long ``value`` is as JSON text, counting shared parts each time they
    appear (``[s] * 1000`` is a thousand copies of ``s`` once serialized). Stops once past ``limit``."""
    total = 0
    stack = [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, Mapping):
            total += 2 + 2 * len(item)
            for k, v in item.items():
                stack.append(k)
                stack.append(v)
                if len(stack) > limit:
                    break
        elif isinstance(item, list | tuple):
            total += 2 + len(item)
            stack.extend(item[: limit + 1])
        elif isinstance(item, int) and not isinstance(item, bool):
            total += (max(item.bit_length(), 1) - 1) * 3 // 10 + 1
        else:
            total += 1
    return total


def _text_ok(value: Any, limit: int = MAX_LEN) -> Any:
    if isinstance(value, Mapping | list | tuple) and _text_size(value, limit) > limit:
        raise ExpressionError(f"result is longer than {limit} characters as text")
    return value


def _num(value: Any, what: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ExpressionError(f"{what} needs numbers, got {type_name(value)}")
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _numeric(op: Callable[[Any, Any], Any], a: Any, b: Any, sym: str) -> Any:
    _num(a, sym)
    _num(b, sym)
    try:
        return _length_ok(op(a, b))
    except OverflowError:  # e.g. 10**400 * 1.5: the integer does not fit a float
        raise ExpressionError(f"{sym}: number out of range") from None


def _add(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return _length_ok(a + b)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return _length_ok([*a, *b])
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return _length_ok({**a, **b})
    return _numeric(operator.add, a, b, "+")


def _mul(a: Any, b: Any) -> Any:
    if isinstance(a, str | list) and isinstance(b, int) and not isinstance(b, bool):
        if len(a) * max(b, 0) > MAX_LEN:
            raise ExpressionError(f"result is longer than {MAX_LEN} items")
        if isinstance(a, list) and b > 1 and _text_size(a, MAX_TEXT // b) * b > MAX_TEXT:
            # [big] * n shares one `big` n times: cheap to build, but n copies once serialized
            raise ExpressionError(f"result is longer than {MAX_TEXT} characters as text")
        return _length_ok(a * b)
    return _numeric(operator.mul, a, b, "*")


def _div(op: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    def run(a: Any, b: Any) -> Any:
        if _num(b, sym) == 0:
            raise ExpressionError("division by zero")
        return _numeric(op, a, b, sym)

    return run


def _pow(a: Any, b: Any) -> Any:
    _num(a, "**")
    if abs(_num(b, "**")) > MAX_EXPONENT:
        raise ExpressionError(f"exponent larger than {MAX_EXPONENT}")
    if isinstance(a, int) and isinstance(b, int) and b > 0 and (a.bit_length() - 1) * b > MAX_INT_BITS:
        raise ExpressionError("integer result is too large")  # refuse before spending the CPU
    try:
        result = a**b
    except (OverflowError, ZeroDivisionError) as exc:
        raise ExpressionError(f"** failed: {exc}") from None
    if isinstance(result, complex):
        raise ExpressionError("** of a negative number to a fractional power has no real result")
    return _length_ok(result)


def _arith(op: Callable[[Any, Any], Any], sym: str) -> Callable[[Any, Any], Any]:
    return lambda a, b: _numeric(op, a, b, sym)


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: _add,
    ast.Sub: _arith(operator.sub, "-"),
    ast.Mult: _mul,
    ast.Div: _div(operator.truediv, "/"),
    ast.FloorDiv: _div(operator.floordiv, "//"),
    ast.Mod: _div(operator.mod, "%"),
    ast.Pow: _pow,
}


def _compare(op: type) -> Callable[[Any, Any], bool]:
    def ordered(fn: Callable[[Any, Any], bool], sym: str) -> Callable[[Any, Any], bool]:
        def run(a: Any, b: Any) -> bool:
            try:
                return fn(a, b)
            except TypeError:
                raise ExpressionError(f"cannot compare {type_name(a)} {sym} {type_name(b)}") from None

        return run

    def contains(a: Any, b: Any) -> bool:
        if isinstance(b, str):
            if not isinstance(a, str):
                raise ExpressionError(f"'in' a string needs a string, got {type_name(a)}")
            return a in b
        if isinstance(b, Mapping | list | tuple):
            try:
                return a in b
            except TypeError:
                return False
        raise ExpressionError(f"'in' needs a list, object or string, got {type_name(b)}")

    table: dict[type, Callable[[Any, Any], bool]] = {
        ast.Eq: operator.eq,
        ast.NotEq: operator.ne,
        ast.Lt: ordered(operator.lt, "<"),
        ast.LtE: ordered(operator.le, "<="),
        ast.Gt: ordered(operator.gt, ">"),
        ast.GtE: ordered(operator.ge, ">="),
        ast.In: contains,
        ast.NotIn: lambda a, b: not contains(a, b),
    }
    return table[op]


# --- functions ---------------------------------------------------------------------------------------
def _default(value: Any, fallback: Any = "") -> Any:
    return fallback if value is None or value == "" else value


def _join(items: Any, sep: str = ",") -> str:
    if not isinstance(items, list | tuple):
        raise ExpressionError(f"join needs a list, got {type_name(items)}")
    sep = str(sep)
    if len(sep) * (len(items) - 1) > MAX_LEN or _text_size(items, 5 * MAX_LEN) > 5 * MAX_LEN:
        raise ExpressionError(f"result is longer than {MAX_LEN} characters")
    return _length_ok(sep.join(to_text(i) for i in items))


def _replace(text: str, old: str, new: str) -> str:
    count = text.count(old) if old else len(text) + 1
    if len(text) + count * (len(new) - len(old)) > MAX_LEN:  # check before building it
        raise ExpressionError(f"result is longer than {MAX_LEN} characters")
    return text.replace(old, new)


def _unique(items: Sequence[Any]) -> list[Any]:
    _text_ok(items, 10 * MAX_LEN)
    return list({json.dumps(x, sort_keys=True, default=str): x for x in items}.values())


def _tojson(value: Any) -> str:
    return json.dumps(_text_ok(value), sort_keys=True, default=str)


def _round(value: Any, ndigits: Any = 0) -> Any:
    """Half away from zero, as people round (2.5 -> 3, -2.5 -> -3), not Python's half-to-even."""
    _num(value, "round")
    if isinstance(ndigits, bool) or not isinstance(ndigits, int) or not -20 <= ndigits <= 20:
        raise ExpressionError("round() digits must be a whole number from -20 to 20")
    quantum = decimal.Decimal(1).scaleb(-ndigits)
    result = decimal.Decimal(repr(value)).quantize(quantum, rounding=decimal.ROUND_HALF_UP)
    return int(result) if ndigits <= 0 else float(result)


_FALSE_WORDS = frozenset({"", "false", "no", "off", "0"})


def _bool(value: Any) -> bool:
    """Strings read as words: "false", "no", "off", "0" and "" are false."""
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_WORDS
    return bool(value)


def _seq(name: str, fn: Callable[[Sequence[Any]], Any]) -> Callable[..., Any]:
    def run(*args: Any) -> Any:
        items = args[0] if len(args) == 1 else list(args)
        if not isinstance(items, list | tuple):
            raise ExpressionError(f"{name} needs a list, got {type_name(items)}")
        try:
            return fn(items)
        except (TypeError, ValueError) as exc:
            raise ExpressionError(f"{name} failed: {exc}") from None

    return run


def _convert(name: str, fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        if isinstance(value, Mapping | list | tuple):
            raise ExpressionError(f"{name} cannot convert {type_name(value)}")
        try:
            return fn(value)
        except (TypeError, ValueError, OverflowError):
            raise ExpressionError(f"{name} cannot convert {value!r}") from None

    return run


def _str_fn(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(value: Any, *args: Any) -> Any:
        if not isinstance(value, str):
            raise ExpressionError(f"{name} needs a string, got {type_name(value)}")
        return fn(value, *(str(a) for a in args))

    return run


def _mapping_fn(name: str, fn: Callable[[Mapping[str, Any]], Any]) -> Callable[[Any], Any]:
    def run(value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ExpressionError(f"{name} needs an object, got {type_name(value)}")
        return fn(value)

    return run


def _length(value: Any) -> int:
    if not isinstance(value, str | list | tuple | Mapping):
        raise ExpressionError(f"length needs a string, list or object, got {type_name(value)}")
    return len(value)


def _get(value: Any, key: Any, fallback: Any = None) -> Any:
    if isinstance(key, str) and key.startswith("_"):
        raise ExpressionError(f"keys starting with '_' are not readable: {key}")
    if isinstance(value, Mapping):
        return value.get(key, fallback)
    if isinstance(value, list | tuple) and isinstance(key, int) and -len(value) <= key < len(value):
        return value[key]
    return fallback


def _range(*args: Any) -> list[int]:
    if any(isinstance(x, bool) or not isinstance(x, int) for x in args):
        raise ExpressionError("range() needs whole numbers")
    span = range(*args)
    if len(span) > MAX_LEN:
        raise ExpressionError(f"range of more than {MAX_LEN} items")
    return list(span)


def _int(value: Any) -> int:
    return int(float(value)) if isinstance(value, str) and "." in value else int(value)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "length": _length,
    "len": _length,
    "default": _default,
    "coalesce": lambda *vals: next((v for v in vals if v is not None), None),
    "get": _get,
    "join": _join,
    "lower": _str_fn("lower", str.lower),
    "upper": _str_fn("upper", str.upper),
    "trim": _str_fn("trim", str.strip),
    "startswith": _str_fn("startswith", str.startswith),
    "endswith": _str_fn("endswith", str.endswith),
    "replace": _str_fn("replace", _replace),
    "split": _str_fn("split", lambda s, sep=",": s.split(sep)),
    "round": _round,
    "abs": lambda v: abs(_num(v, "abs")),
    "floor": lambda v: math.floor(_num(v, "floor")),
    "ceil": lambda v: math.ceil(_num(v, "ceil")),
    "min": _seq("min", min),
    "max": _seq("max", max),
    "sum": _seq("sum", lambda xs: sum(_num(x, "sum") for x in xs)),
    "sort": _seq("sort", sorted),
    "unique": _seq("unique", _unique),
    "keys": _mapping_fn("keys", lambda m: list(m.keys())),
    "values": _mapping_fn("values", lambda m: list(m.values())),
    "items": _mapping_fn("items", lambda m: [[k, v] for k, v in m.items()]),
    "int": _convert("int", _int),
    "float": _convert("float", float),
    "str": lambda v: to_text(v),
    "bool": _bool,
    "tojson": _tojson,
    "fromjson": _str_fn("fromjson", json.loads),
    "range": lambda *a: _range(*a),
}

CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


def to_text(value: Any) -> str:
    """How a value reads when interpolated into a string."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(_text_ok(value), sort_keys=True, default=str)


# --- compiler ------------------------------------------------------------------------------------------
@dataclass
class Expression:
    """A compiled expression. ``references`` holds (root, first key) pairs it reads, for cross-checks."""

    source: str
    fn: Fn
    references: set[tuple[str, str | None]] = field(default_factory=set)

    def __call__(self, context: Context) -> Any:
        token = _BUDGET.set([MAX_BUILD])
        try:
            return self.fn(context)
        except ExpressionError as exc:
            if not exc.source:
                exc.source = self.source
            raise
        except RecursionError:
            raise ExpressionError("expression nests too deeply", self.source) from None
        finally:
            _BUDGET.reset(token)


class _Compiler:
    def __init__(self, source: str, roots: frozenset[str], text: str = "", lead: int = 0) -> None:
        self.source = source
        self.text = text.encode("utf-8", "surrogatepass")  # what was parsed, after `lead` characters
        self.lead = lead
        self.roots = roots
        self.references: set[tuple[str, str | None]] = set()
        self.depth = 0

    def fail(self, node: ast.AST | None, message: str) -> ExpressionError:
        col = getattr(node, "col_offset", 0) if node is not None else 0  # in UTF-8 bytes
        if isinstance(node, ast.Attribute) and node.end_col_offset is not None:
            col = node.end_col_offset - len(node.attr.encode())  # point at the attribute, not the chain
        chars = len(self.text[:col].decode("utf-8", "ignore"))
        return ExpressionError(message, self.source, self.lead + chars)

    def compile(self, node: ast.AST) -> Fn:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(node, "expression nests too deeply")
        try:
            method = getattr(self, f"_{type(node).__name__}", None)
            if method is None:
                raise self.fail(node, f"{_describe(node)} is not allowed in an expression")
            return method(node)
        finally:
            self.depth -= 1

    def _Constant(self, node: ast.Constant) -> Fn:
        value = node.value
        if not isinstance(value, str | int | float | bool) and value is not None:
            raise self.fail(node, f"{type(value).__name__} literals are not allowed")
        try:
            _length_ok(value)
        except ExpressionError as exc:
            raise self.fail(node, exc.message) from None
        return lambda ctx: value

    def _Name(self, node: ast.Name) -> Fn:
        name = node.id
        if name in CONSTANTS:
            value = CONSTANTS[name]
            return lambda ctx: value
        if name.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed: {name}")
        if name in FUNCTIONS:
            raise self.fail(node, f"'{name}' is a function; call it as {name}(...) or use it after |")
        if name not in self.roots:
            allowed = ", ".join(sorted(self.roots))
            raise self.fail(node, f"unknown name '{name}'; expressions can read: {allowed}")
        self.references.add((name, None))

        def load(ctx: Context) -> Any:
            try:
                return ctx[name]
            except KeyError:
                return None

        return load

    def _key_of(self, node: ast.AST) -> str | int | None:
        if isinstance(node, ast.Attribute):
            return node.attr
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
            value = node.slice.value
            if isinstance(value, str | int) and not isinstance(value, bool):
                return value
        return None

    def _note_reference(self, node: ast.Attribute | ast.Subscript) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.roots:
            key = self._key_of(node)
            self.references.discard((node.value.id, None))
            self.references.add((node.value.id, key if isinstance(key, str) else None))

    def _Attribute(self, node: ast.Attribute) -> Fn:
        attr = node.attr
        if attr.startswith("_"):
            raise self.fail(node, f"names starting with '_' are not allowed: {attr}")
        self._note_reference(node)
        base = self.compile(node.value)

        def load(ctx: Context) -> Any:
            obj = base(ctx)
            if isinstance(obj, Mapping):
                return obj.get(attr)
            if obj is None:
                return None
            raise ExpressionError(f"cannot read '.{attr}' of a {type_name(obj)}")

        return load

    def _Subscript(self, node: ast.Subscript) -> Fn:
        key = node.slice.value if isinstance(node.slice, ast.Constant) else None
        if isinstance(key, str) and key.startswith("_"):
            raise self.fail(node.slice, f"keys starting with '_' are not allowed: {key}")
        self._note_reference(node)
        base = self.compile(node.value)
        if isinstance(node.slice, ast.Slice):
            parts = [self.compile(p) if p is not None else (lambda ctx: None)
                     for p in (node.slice.lower, node.slice.upper, node.slice.step)]

            def load_slice(ctx: Context) -> Any:
                obj = base(ctx)
                bounds = [p(ctx) for p in parts]
                if not isinstance(obj, str | list | tuple):
                    raise ExpressionError(f"cannot slice a {type_name(obj)}")
                if any(b is not None and (isinstance(b, bool) or not isinstance(b, int)) for b in bounds):
                    raise ExpressionError("slice bounds must be whole numbers")
                if bounds[2] == 0:
                    raise ExpressionError("slice step cannot be zero")
                return _length_ok(obj[slice(*bounds)])

            return load_slice
        index = self.compile(node.slice)

        def load(ctx: Context) -> Any:
            obj = base(ctx)
            key = index(ctx)
            if isinstance(key, str) and key.startswith("_"):
                raise ExpressionError(f"keys starting with '_' are not readable: {key}")
            if isinstance(obj, Mapping):
                try:
                    return obj.get(key)
                except TypeError:
                    raise ExpressionError(f"cannot index an object with a {type_name(key)}") from None
            if isinstance(obj, list | tuple | str):
                if isinstance(key, bool) or not isinstance(key, int):
                    raise ExpressionError(f"a {type_name(obj)} index must be a whole number")
                return obj[key] if -len(obj) <= key < len(obj) else None
            if obj is None:
                return None
            raise ExpressionError(f"cannot index a {type_name(obj)}")

        return load

    def _List(self, node: ast.List) -> Fn:
        items = [self.compile(e) for e in node.elts]
        return lambda ctx: _length_ok([i(ctx) for i in items])

    _Tuple = _List

    def _Dict(self, node: ast.Dict) -> Fn:
        if any(k is None for k in node.keys):
            raise self.fail(node, "'**' unpacking is not allowed")
        keys = [self.compile(k) for k in node.keys if k is not None]
        values = [self.compile(v) for v in node.values]

        def build(ctx: Context) -> dict[Any, Any]:
            out: dict[Any, Any] = {}
            for k, v in zip(keys, values, strict=True):
                key = k(ctx)
                if not isinstance(key, str | int | float | bool) and key is not None:
                    raise ExpressionError(f"object keys must be strings or numbers, got {type_name(key)}")
                out[key] = v(ctx)
            return _length_ok(out)

        return build

    def _BinOp(self, node: ast.BinOp) -> Fn:
        if isinstance(node.op, ast.BitOr):
            return self._filter(node)
        op = _BINOPS.get(type(node.op))
        if op is None:
            raise self.fail(node, f"operator {_describe(node.op)} is not allowed")
        left, right = self.compile(node.left), self.compile(node.right)
        return lambda ctx: op(left(ctx), right(ctx))

    def _filter(self, node: ast.BinOp) -> Fn:
        target = node.right
        if isinstance(target, ast.Name):
            name, extra = target.id, []
        elif isinstance(target, ast.Call) and isinstance(target.func, ast.Name):
            name, extra = target.func.id, target.args
            if target.keywords:
                raise self.fail(target, "filters take positional arguments only")
        else:
            raise self.fail(target, "after | comes a filter name, such as default(0) or length")
        return self._call(target, name, [node.left, *extra])

    def _UnaryOp(self, node: ast.UnaryOp) -> Fn:
        operand = self.compile(node.operand)
        if isinstance(node.op, ast.Not):
            return lambda ctx: not operand(ctx)
        if isinstance(node.op, ast.USub):
            return lambda ctx: -_num(operand(ctx), "-")
        if isinstance(node.op, ast.UAdd):
            return lambda ctx: +_num(operand(ctx), "+")
        raise self.fail(node, f"operator {_describe(node.op)} is not allowed")

    def _BoolOp(self, node: ast.BoolOp) -> Fn:
        parts = [self.compile(v) for v in node.values]
        if isinstance(node.op, ast.And):

            def all_of(ctx: Context) -> Any:
                value: Any = True
                for p in parts:
                    value = p(ctx)
                    if not value:
                        return value
                return value

            return all_of

        def any_of(ctx: Context) -> Any:
            value: Any = False
            for p in parts:
                value = p(ctx)
                if value:
                    return value
            return value

        return any_of

    def _Compare(self, node: ast.Compare) -> Fn:
        left = self.compile(node.left)
        ops = [_compare(type(op)) for op in node.ops if type(op) not in (ast.Is, ast.IsNot)]
        if len(ops) != len(node.ops):
            raise self.fail(node, "'is' is not allowed; use == or !=")
        rights = [self.compile(c) for c in node.comparators]

        def run(ctx: Context) -> bool:
            a = left(ctx)
            for op, r in zip(ops, rights, strict=True):
                b = r(ctx)
                if not op(a, b):
                    return False
                a = b
            return True

        return run

    def _IfExp(self, node: ast.IfExp) -> Fn:
        test, body, orelse = self.compile(node.test), self.compile(node.body), self.compile(node.orelse)
        return lambda ctx: body(ctx) if test(ctx) else orelse(ctx)

    def _Call(self, node: ast.Call) -> Fn:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node, "method calls are not allowed; call functions by name, e.g. upper(x) or x | upper")
        if node.keywords:
            raise self.fail(node, "keyword arguments are not allowed")
        return self._call(node, node.func.id, list(node.args))

    def _call(self, node: ast.AST, name: str, args: list[ast.expr]) -> Fn:
        fn = FUNCTIONS.get(name)
        if fn is None:
            raise self.fail(node, f"unknown function '{name}'; known: {', '.join(sorted(FUNCTIONS))}")
        if any(isinstance(a, ast.Starred) for a in args):
            raise self.fail(node, "'*' arguments are not allowed")
        compiled = [self.compile(a) for a in args]

        def call(ctx: Context) -> Any:
            values = [c(ctx) for c in compiled]
            try:
                return _length_ok(fn(*values))
            except ExpressionError:
                raise
            except TypeError:
                raise ExpressionError(f"{name}() got {len(values)} argument(s) it cannot take") from None
            except (ValueError, OverflowError, IndexError, KeyError) as exc:
                raise ExpressionError(f"{name}() failed: {exc}") from None

        return call


def _describe(node: ast.AST) -> str:
    names = {
        "Lambda": "lambda", "ListComp": "a comprehension", "DictComp": "a comprehension",
        "SetComp": "a comprehension", "GeneratorExp": "a generator", "JoinedStr": "an f-string",
        "NamedExpr": "':='", "Await": "await", "Yield": "yield", "YieldFrom": "yield",
        "Starred": "'*'", "Set": "a set literal", "BitAnd": "'&'", "BitXor": "'^'",
        "LShift": "'<<'", "RShift": "'>>'", "MatMult": "'@'", "Invert": "'~'",
    }
    return names.get(type(node).__name__, type(node).__name__)


def compile_expression(source: str, roots: frozenset[str] = DEFAULT_ROOTS) -> Expression:
    """Compile one bare expression (no ``${{ }}``); error offsets count characters of ``source``."""
    if not isinstance(source, str):
        raise ExpressionError("an expression must be a string")
    text = source.strip()
    lead = len(source) - len(source.lstrip())
    if not text:
        raise ExpressionError("empty expression", source)
    if len(text) > MAX_SOURCE:
        raise ExpressionError(f"expression is longer than {MAX_SOURCE} characters", source)
    flat = text.replace("\r", " ").replace("\n", " ")
    try:
        with warnings.catch_warnings():  # e.g. "invalid escape sequence": not the user's concern here
            warnings.simplefilter("ignore")
            tree = ast.parse(flat, mode="eval")
    except SyntaxError as exc:
        # the offset is 1-based in characters; 0 (or a later line) means "at the end"
        at = exc.offset - 1 if exc.offset and (exc.lineno or 1) == 1 else len(text)
        raise ExpressionError(f"syntax error: {exc.msg}", source, lead + min(max(at, 0), len(text))) from None
    except (ValueError, MemoryError, RecursionError) as exc:
        raise ExpressionError(f"cannot parse expression: {exc}", source, lead) from None
    compiler = _Compiler(source, roots, flat, lead)
    try:
        fn = compiler.compile(tree.body)
    except RecursionError:
        raise ExpressionError("expression nests too deeply", source, lead) from None
    refs = compiler.references
    keyed = {root for root, key in refs if key is not None}
    return Expression(text, fn, {(root, key) for root, key in refs if key is not None or root not in keyed})


# --- templates ----------------------------------------------------------------------------------------
@dataclass
class Template:
    """A string that may hold ``${{ }}`` parts. A string that is one whole part keeps its type."""

    source: str
    parts: list[str | Expression]

    @property
    def expressions(self) -> list[Expression]:
        return [p for p in self.parts if isinstance(p, Expression)]

    def render(self, context: Context) -> Any:
        if len(self.parts) == 1:
            part = self.parts[0]
            return part(context) if isinstance(part, Expression) else part
        out: list[str] = []
        size = 0
        try:
            for part in self.parts:
                text = part if isinstance(part, str) else to_text(part(context))
                size += len(text)
                if size > MAX_LEN:  # checked part by part: never build the oversized string
                    raise ExpressionError(f"rendered text is longer than {MAX_LEN} characters", self.source)
                out.append(text)
        except RecursionError:
            raise ExpressionError("a value nests too deeply to be written as text", self.source) from None
        return "".join(out)


def is_template(value: str) -> bool:
    return "${{" in value


def _closing(source: str, start: int) -> int:
    """Where the ``}}`` that ends the expression starting at ``start`` is: the first one outside
    brackets and string literals, so ``${{ {'a': {'b': 1}} }}`` is one expression. -1 if none."""
    depth = 0
    quote = ""
    i, n = start, len(source)
    while i < n:
        ch = source[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if source.startswith(quote, i):
                i += len(quote)
                quote = ""
                continue
        elif ch in "\"'":
            quote = ch * 3 if source.startswith(ch * 3, i) else ch
            i += len(quote)
            continue
        elif ch in "([{":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        elif ch == "}":
            if depth == 0 and source.startswith("}}", i):
                return i
            depth = max(depth - 1, 0)
        i += 1
    return -1


def _spans(source: str) -> list[tuple[int, int, int]]:
    """(start of ``${{``, start of its expression, end of its expression) for each part."""
    spans: list[tuple[int, int, int]] = []
    pos = 0
    while (opening := source.find("${{", pos)) != -1:
        start = opening + 3
        end = _closing(source, start)
        if end == -1:
            end = source.find("}}", start)  # unbalanced: let the compiler say what is wrong
        if end == -1:
            raise ExpressionError("'${{' is not closed with '}}'", source, opening)
        spans.append((opening, start, end))
        pos = end + 2
    return spans


def _whole(source: str, spans: list[tuple[int, int, int]]) -> tuple[int, int] | None:
    """The expression's span when ``source`` is one ``${{ }}`` with only whitespace around it."""
    if len(spans) == 1:
        opening, start, end = spans[0]
        if not source[:opening].strip() and not source[end + 2 :].strip():
            return start, end
    return None


def compile_template(source: str, roots: frozenset[str] = DEFAULT_ROOTS) -> Template:
    """Compile a string such as ``"Hello ${{ inputs.name }}"``; errors carry the offset in ``source``."""
    spans = _spans(source)
    whole = _whole(source, spans)
    if whole:
        return Template(source, [_compile_part(source, *whole, roots)])
    parts: list[str | Expression] = []
    pos = 0
    for opening, start, end in spans:
        if opening > pos:
            parts.append(source[pos:opening])
        parts.append(_compile_part(source, start, end, roots))
        pos = end + 2
    rest = source[pos:]
    if rest or not parts:
        parts.append(rest)
    return Template(source, parts)


def _compile_part(source: str, start: int, end: int, roots: frozenset[str]) -> Expression:
    try:
        return compile_expression(source[start:end], roots)
    except ExpressionError as exc:
        raise ExpressionError(exc.message, source, start + exc.offset) from None


def compile_condition(value: str, roots: frozenset[str] = DEFAULT_ROOTS) -> Expression:
    """Fields that are always expressions (``if``, ``items``...) may omit the ``${{ }}``."""
    if not isinstance(value, str):
        raise ExpressionError("an expression must be a string")
    if "${{" not in value:
        return compile_expression(value, roots)
    whole = _whole(value, _spans(value))
    if whole:
        return _compile_part(value, *whole, roots)
    raise ExpressionError("write either a bare expression or one ${{ ... }}", value, value.index("${{"))
