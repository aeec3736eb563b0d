"""Reading a fault's parameters as a person writes them in a plan: durations such as `8s`,
`500ms`, `2m` or a number of seconds; sizes; choices. Every error names the field and gives
an example of what is expected."""
from __future__ import annotations

import re
from typing import Any

from onceproof.faults.base import ParamError

_DURATION = re.compile(r"^\s*([+-]?\d+(?:\.\d+)?)\s*(ms|s|m|h|us)?\s*$")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def duration(value: Any, field: str, signed: bool = False, allow_zero: bool = True) -> float:
    """Seconds from `8s`, `500ms`, `2m`, `1h`, `-30s` (signed only) or a number of seconds."""
    example = "-30s or 2m" if signed else "2s or 500ms"
    if isinstance(value, bool) or value is None:
        raise ParamError(field, f"expected a duration such as {example}, got {_show(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        m = _DURATION.match(str(value))
        if not m:
            raise ParamError(field, f"expected a duration such as {example}, got {_show(value)}")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if seconds < 0 and not signed:
        raise ParamError(field, f"expected a duration that is not negative, such as {example}, got {_show(value)}")
    if seconds == 0 and not allow_zero:
        raise ParamError(field, f"expected a duration above zero, such as {example}, got {_show(value)}")
    return round(seconds, 9)


def number(value: Any, field: str, example: str, minimum: float | None = 0, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParamError(field, f"expected a number such as {example}, got {_show(value)}")
    if integer and int(value) != value:
        raise ParamError(field, f"expected a whole number such as {example}, got {_show(value)}")
    if minimum is not None and value < minimum:
        raise ParamError(field, f"expected a number of at least {minimum:g} such as {example}, got {_show(value)}")
    return int(value) if integer else float(value)


def choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ParamError(field, f"expected one of {', '.join(choices)}, got {_show(value)}")
    return str(value)


def no_extra(params: dict[str, Any], allowed: set[str], kind: str) -> None:
    for key in params:
        if key not in allowed:
            raise ParamError(str(key), f"is not a parameter of {kind}; its parameters are: "
                             f"{', '.join(sorted(allowed)) or '(none)'}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)
