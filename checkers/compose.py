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


def check_safe(checker: Checker, history: Any) -> dict[str, Any]:
    """`checker(history)` as a dict; a checker that raises gives no verdict:
    `{"valid": "unknown", "error": "<exception type>: <message>"}` (Jepsen's check-safe)."""
    try:
        return dict(checker(history))
    except Exception as e:  # noqa: BLE001 - one broken checker must not hide the others' results
        return {"valid": "unknown", "error": f"{type(e).__name__}: {e}"}


def compose(checkers: Mapping[str, Checker]) -> Checker:
    """One checker made of several: `{"valid": merged, "checkers": {name: result}}`, each
    child run through check_safe (so one that raises is "unknown", and the others still run)."""

    def check(history: Any) -> dict[str, Any]:
        results = {name: check_safe(c, history) for name, c in checkers.items()}
        return {"valid": merge_valid(r.get("valid") for r in results.values()), "checkers": results}

    return check
