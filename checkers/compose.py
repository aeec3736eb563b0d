"""Checkers compose (Jepsen style): run several over one history, merge their verdicts."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

Checker = Callable[[Any], Mapping[str, Any]]


def merge_valid(verdicts: Iterable[Any]) -> bool | str:
    """Invalid if any is invalid, else unknown if any is unknown, else valid."""
    vs = list(verdicts)
    if any(v is False for v in vs):
        return False
    if any(v is not True for v in vs):
        return "unknown"
    return True


def compose(checkers: Mapping[str, Checker]) -> Checker:
    """One checker made of several: `{"valid": merged, "checkers": {name: result}}`."""

    def check(history: Any) -> dict[str, Any]:
        results = {name: dict(c(history)) for name, c in checkers.items()}
        return {"valid": merge_valid(r.get("valid") for r in results.values()), "checkers": results}

    return check
