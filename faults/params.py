"""Reading values as a person writes them in a plan: durations such as `8s`, `500ms`, `2m` or a
number of seconds; numbers; choices; host names. Every error says what was expected, with an
example.

This is the one duration grammar of the project: a plan's own durations (`workload.duration`,
`quiesce.idle`, ...) and every fault's durations are read by `duration` below.

The classes `Seconds`, `Number`, `Choice` and `Hosts` put these readers on the fields of a
pydantic model (`Annotated[float, Seconds()]`), so a fault kind's parameters are declared as a
model and read by one generic decoder (`FaultKind.decode` in faults/base.py)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from onceproof.faults.base import ParamError

DURATION_PATTERN = r"^\s*[+-]?\d+(\.\d+)?\s*(us|ms|s|m|h)?\s*$"
_DURATION = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(ms|s|m|h|us)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION_S = 30 * 24 * 3600.0  # the longest duration (or time) a plan may name: 30 days
MAX_NUMBER = 1e9  # the largest number a fault parameter may take


def _finite(value: Any) -> float | None:
    """`value` as a finite float, or None (NaN, an infinity, or an int too large for a float)."""
    try:
        f = float(value)
    except (OverflowError, ValueError):
        return None
    return f if math.isfinite(f) else None


def duration(value: Any, field: str = "", signed: bool = False, allow_zero: bool = True,
             example: str | None = None) -> float:
    """Seconds (a float, rounded to the nanosecond) from `8s`, `500ms`, `2m`, `1h`, `250us`,
    `-30s` / `+30s` (signed only) or a number of seconds.

    `signed=False` rejects a negative duration, `allow_zero=False` rejects zero. `example` is
    shown in the error (default: `-30s or 2m` when signed, else `2s or 500ms`).
    Raises ParamError(field, message) (a ValueError) on anything else."""
    example = example or ("-30s or 2m" if signed else "2s or 500ms")
    if isinstance(value, bool) or value is None:
        raise ParamError(field, f"expected a duration such as {example}, got {_show(value)}")
    if isinstance(value, (int, float)):
        number_s = _finite(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ParamError(field, f"expected a duration such as {example}, got {_show(value)}")
        number_s = _finite(m.group(1))
        number_s = None if number_s is None else number_s * _UNITS[m.group(2)]
    if number_s is None or abs(number_s) > MAX_DURATION_S:
        raise ParamError(field, f"expected a finite duration of at most {MAX_DURATION_S / 86400:g} days, "
                         f"such as {example}, got {_show(value)}")
    seconds = number_s
    if seconds < 0 and not signed:
        raise ParamError(field, f"expected a duration that is not negative, such as {example}, got {_show(value)}")
    if seconds == 0 and not allow_zero:
        raise ParamError(field, f"expected a duration above zero, such as {example}, got {_show(value)}")
    return round(seconds, 9)


def number(value: Any, field: str, example: str, minimum: float | None = 0, integer: bool = False,
           maximum: float = MAX_NUMBER) -> float:
    """`value` as a float (an int when `integer`), finite, at least `minimum` (None: no lower
    bound) and at most `maximum`. Raises ParamError(field, message) naming `example`
    otherwise; a bool or a string is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(field, f"expected a number such as {example}, got {_show(value)}")
    f = _finite(value)
    if f is None or abs(f) > maximum:
        raise ParamError(field, f"expected a finite number of at most {maximum:g} such as {example}, got {_show(value)}")
    if integer and int(value) != value:
        raise ParamError(field, f"expected a whole number such as {example}, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise ParamError(field, f"expected a number of at least {minimum:g} such as {example}, got {_show(value)}")
    return int(value) if integer else float(value)


def choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    """`value` if it is one of `choices`; raises ParamError(field, message listing them) otherwise."""
    if value not in choices:
        raise ParamError(field, f"expected one of {', '.join(choices)}, got {_show(value)}")
    return str(value)


def hosts(value: Any, field: str, example: str) -> list[str]:
    """A host name or a list of them -> a non-empty list of names; raises ParamError otherwise."""
    names = value if isinstance(value, list) else [value]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ParamError(field, f"expected a host name or a list of them, such as {example}, got {value!r}")
    return list(names)


def _show(value: Any) -> str:
    try:
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
    except ValueError:  # an int too long to print
        return "a number too large to print"
    return shown if len(shown) <= 60 else shown[:57] + "..."


# --- the readers as pydantic field annotations ---------------------------------------
class _Reader:
    """A before-validator on a pydantic field that reads the value as a person writes it;
    errors are ParamError (a ValueError), which pydantic carries in the error's ctx."""

    def read(self, value: Any) -> Any:
        raise NotImplementedError

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_before_validator_function(self.read, handler(source))


@dataclass(frozen=True)
class Seconds(_Reader):
    """`Annotated[float, Seconds()]`: a duration in seconds, read by `duration`. In the JSON
    Schema: a number of seconds or a string such as `500ms`."""

    signed: bool = False
    allow_zero: bool = True
    example: str | None = None

    def read(self, value: Any) -> float:
        return duration(value, "", signed=self.signed, allow_zero=self.allow_zero, example=self.example)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [{"type": "number"}, {"type": "string", "pattern": DURATION_PATTERN}]}


@dataclass(frozen=True)
class Number(_Reader):
    """`Annotated[float, Number("200")]`: a number (a whole one when `integer`), at least
    `minimum`, read by `number`; `example` is shown in its errors."""

    example: str
    minimum: float | None = 0
    integer: bool = False

    def read(self, value: Any) -> float:
        return number(value, "", self.example, minimum=self.minimum, integer=self.integer)


@dataclass(frozen=True)
class Choice(_Reader):
    """`Annotated[Literal["a", "b"], Choice()]`: one of the Literal's values, read by `choice`
    (so the error lists them all)."""

    choices: tuple[str, ...] = ()

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        choices = self.choices or tuple(str(a) for a in get_args(source))
        return core_schema.no_info_before_validator_function(lambda v: choice(v, "", choices), handler(source))


@dataclass(frozen=True)
class Hosts(_Reader):
    """`Annotated[list[str], Hosts("kafka-2")]`: a host name or a list of them, always stored
    as a list, read by `hosts`."""

    example: str

    def read(self, value: Any) -> list[str]:
        return hosts(value, "", self.example)

    def __get_pydantic_json_schema__(self, schema: core_schema.CoreSchema,
                                     handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}]}


def no_extra(params: dict[str, Any], allowed: set[str], kind: str) -> None:
    """Raise ParamError naming the first key of `params` that is not in `allowed`."""
    for key in params:
        if key not in allowed:
            raise ParamError(str(key), f"is not a parameter of {kind}; its parameters are: "
                             f"{', '.join(sorted(allowed)) or '(none)'}")
