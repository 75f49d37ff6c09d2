"""Building blocks shared by every config model: the strict base model, durations, ids."""


import difflib
import random
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from progressive_cli.config.secrets import ENV_REF

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
DURATION_PATTERN = r"^(\d+(\.\d+)?(ms|s|m|h|d))+$"


def parse_duration(value: Any) -> float:
    """``"1m30s"`` -> 90.0; a bare number means seconds. Raises ValueError otherwise."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 30s, 5m or 1h")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return float(value)
    if not isinstance(value, str):
        raise ValueError("expected a duration such as 500ms, 30s, 5m or 1h")
    text = value.strip().replace(" ", "")
    if not text or not re.fullmatch(DURATION_PATTERN, text):
        raise ValueError(f"'{value}' is not a duration; use e.g. 500ms, 30s, 5m, 1h or 1m30s")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    parts = []
    rest = round(seconds, 3)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if rest >= size:
            count, rest = divmod(rest, size)
            parts.append(f"{int(count)}{unit}")
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema({
        "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0}],
        "description": "a duration: 500ms, 30s, 5m, 1h, 1m30s, or a number of seconds",
    }),
]
"""Seconds as a float; written in YAML as ``30s``, ``5m``, ``1h30m``, ``500ms`` or a number."""

_ANY_REF = re.compile(r"\$\{[^}]*\}?")


def _check_refs(value: str) -> str:
    for match in _ANY_REF.finditer(value):
        if not ENV_REF.fullmatch(match.group(0)):
            raise ValueError(
                f"'{match.group(0)}' is not a valid reference; write secrets as ${{env:NAME}}"
            )
    return value


EnvStr = Annotated[
    str,
    AfterValidator(_check_refs),
    Field(description="text; may contain ${env:NAME} references, resolved at run time and redacted"),
]
"""A string that may embed ``${env:NAME}`` references."""


def empty_list() -> list[Any]:
    """The ``default_factory`` of list fields. Not ``list`` itself: pydantic inspects every factory's
    signature, and ``list``'s is parsed from its text form with the tokenizer, whose first use compiles
    its regular expressions (~10 ms of every command that loads the project)."""
    return []


ID_PATTERN = r"^[a-z][a-z0-9_-]{0,62}$"
Identifier = Annotated[str, Field(pattern=ID_PATTERN, description="lower-case id: letters, digits, - and _")]


def kind_of(value: Any) -> str:
    """How a YAML value's type reads in a message."""
    names = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
             dict: "a mapping", type(None): "nothing (null)"}
    return names.get(type(value), type(value).__name__)


def error_message(err: Any) -> str:
    """A pydantic error as an operator would want to read it."""
    kind, message, ctx = err["type"], str(err["msg"]), err.get("ctx") or {}
    if kind == "value_error":
        return message.removeprefix("Value error, ")
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping, got {kind_of(err.get('input'))}"
    if kind == "list_type":
        return f"expected a list, got {kind_of(err.get('input'))}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}; got {err.get('input')!r}"
    if kind == "union_tag_invalid":
        return (f"unknown {str(ctx.get('discriminator', 'type')).strip(chr(39))} '{ctx.get('tag')}'; "
                f"expected one of: {ctx.get('expected_tags', '')}")
    if kind == "union_tag_not_found":
        return f"missing {ctx.get('discriminator', 'type')} (one of: {ctx.get('expected_tags', '')})"
    if kind == "missing":
        return "required"
    expected = {"string_type": "a string", "int_type": "a whole number", "int_parsing": "a whole number",
                "int_from_float": "a whole number", "float_type": "a number", "float_parsing": "a number",
                "bool_type": "true or false", "bool_parsing": "true or false"}.get(kind)
    if expected:
        return f"expected {expected}, got {kind_of(err.get('input'))}"
    return message


def _rebuild(err: Any) -> InitErrorDetails:
    # Keep the message as rendered; braces would be read as a template by PydanticCustomError.
    message = str(err["msg"]).replace("{", "{{").replace("}", "}}")
    return InitErrorDetails(
        type=PydanticCustomError(str(err["type"]), message), loc=err["loc"], input=err.get("input")
    )


class Model(BaseModel):
    """Strict, immutable config model. Unknown keys are errors with a 'did you mean' hint."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, defer_build=True)

    @model_validator(mode="wrap")
    @classmethod
    def _unknown_keys(cls, data: Any, handler: Any) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            errors = exc.errors()
            if not any(e["type"] == "extra_forbidden" and len(e["loc"]) == 1 for e in errors):
                raise
            known = [f.alias or name for name, f in cls.model_fields.items()]
            rebuilt: list[InitErrorDetails] = []
            for err in errors:
                if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                    key = str(err["loc"][0])
                    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                    hint = f" (did you mean '{close[0]}'?)" if close else f"; expected one of: {', '.join(known)}"
                    err = {**err, "type": "unknown_key", "msg": f"unknown key '{key}'{hint}"}
                rebuilt.append(_rebuild(err))
            raise ValidationError.from_exception_data(exc.title, rebuilt) from None

    def dump(self) -> dict[str, Any]:
        """JSON-ready dict using the YAML spellings of keys."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Backoff(Model):
    """Exponential backoff shared by integration retries and step retries."""

    max_attempts: int = Field(3, ge=1, le=100)
    """Attempts in all, the first one included; 1 means no retry."""
    initial_delay: Duration = 1.0
    multiplier: float = Field(2.0, ge=1.0, le=10.0)
    max_delay: Duration = 30.0
    jitter: Literal["full", "none"] = "full"
    """full: each delay is uniform in [0, the exponential delay] (AWS "full jitter")."""

    @model_validator(mode="after")
    def _delays(self) -> Self:
        if self.max_delay < self.initial_delay:
            raise ValueError("max_delay must be at least initial_delay")
        return self

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Seconds to wait before attempt ``attempt + 1``: exponential, capped, with AWS-style full jitter."""
        delay = min(self.max_delay, self.initial_delay * self.multiplier ** (attempt - 1))
        return rng.uniform(0, delay) if self.jitter == "full" else delay
