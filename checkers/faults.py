"""The faults checker: did the planned faults happen? A run whose faults were not applied
tested less than its plan says, so "valid under faults" would be a claim it cannot back.

`check(history, planned=N, strict=True)` reads the nemesis's `apply` operations (pairing them
with perf.fault_windows): every planned fault must have an `apply` that ended `ok`. One whose
apply ended `fail` (certainly not applied) or `info` (maybe half applied), or that was never
applied at all (fewer applies than `planned`), makes the result "unknown" with the `reason`
when `strict`; when not (a plan's `checks: {faults: lenient}`) the result stays valid and
only notes it. A history without nemesis operations and nothing planned is valid."""
from __future__ import annotations

from typing import Any

from onceproof.checkers.history import History
from onceproof.checkers.perf import fault_windows


def check(history: History, planned: int | None = None, strict: bool = True) -> dict[str, Any]:
    """{"valid": True | "unknown", "reason", "planned", "applied", "unapplied": [{"fault",
    "kind", "targets", "outcome", "error"}], "notes"} for `history` (see the module)."""
    windows = fault_windows(history)
    unapplied = [{"fault": w.fault, "kind": w.kind, "targets": w.targets, "outcome": w.outcome, "error": w.error}
                 for w in windows if w.outcome != "ok"]
    problems = [f"{u['fault']} {u['kind']} {', '.join(u['targets'])}".replace("  ", " ").strip()
                + (" was not applied" if u["outcome"] == "fail" else " may not have been applied (its apply "
                   "ended unknown)") + (f": {u['error']}" if u["error"] else "") for u in unapplied]
    if planned is not None and len(windows) < planned:
        problems.append(f"{planned - len(windows)} of {planned} planned faults were never applied "
                        "(the schedule did not reach them)")
    reason = "; ".join(problems)
    notes = []
    if reason:
        notes.append(("the run tested less than its plan: " if strict else
                      "checks.faults is lenient, the verdict stands, but the run tested less than its plan: ")
                     + reason)
    return {
        "valid": "unknown" if reason and strict else True,
        "reason": reason if strict else "",
        "planned": planned if planned is not None else len(windows),
        "applied": sum(w.outcome == "ok" for w in windows),
        "unapplied": unapplied,
        "notes": notes,
    }
