"""The report's timeline: perf's analysis of the history (checkers/perf.py: rates, latency,
fault windows, recovery), plus what only a picture needs: a marker for each process kill,
pause and restart, and what time 0 means. When the history has no nemesis records (or there
is no history), the fault windows come from results.json instead."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from onceproof.checkers import perf
from onceproof.checkers.history import History
from onceproof.checkers.perf import NS, RECOVERY_LEVEL, FaultWindow

from onceproof.faults.base import process_marks

__all__ = ["NS", "RECOVERY_LEVEL", "PROCESS_FAULTS", "FaultWindow", "Marker", "Timeline", "build",
           "faults_from_results"]

# which faults get a marker on a process lane: kind -> (verb at the apply, verb at the heal),
# declared by each process kind
PROCESS_FAULTS = process_marks()


@dataclass
class Marker:
    time_s: float
    lane: str  # the process (target) or anomaly kind it belongs to
    what: str  # kill, restart, pause, resume, duplicate, ...
    detail: str = ""


@dataclass
class Timeline(perf.Timeline):
    """perf.Timeline with the report's process markers and the meaning of time 0."""

    markers: list[Marker] = field(default_factory=list)
    origin: str = "the run started"  # what time 0 is


def build(h: History) -> Timeline:
    """perf.build(h), with a marker at each apply and heal of a process fault."""
    tl = Timeline(**vars(perf.build(h)))
    tl.markers = _markers(tl.faults)
    return tl


def _markers(windows: list[FaultWindow]) -> list[Marker]:
    out = []
    for w in windows:
        verbs = PROCESS_FAULTS.get(w.kind)
        if not verbs or w.outcome == "fail":
            continue
        for target in w.targets or ["?"]:
            out.append(Marker(w.start_s, target, verbs[0], w.fault))
            if w.end_s is not None:
                out.append(Marker(w.end_s, target, verbs[1], w.fault))
    return out


def faults_from_results(results: dict[str, Any], tl: Timeline) -> None:
    """No nemesis records in the history (or no history): take the windows results.json lists
    (timed from the start of the load, not of the run)."""
    if not tl.x:
        tl.origin = "the load started"
    windows = []
    for f in results.get("faults") or []:
        if not isinstance(f, dict) or not isinstance(f.get("applied_s"), (int, float)):
            continue
        healed = f.get("healed_s")
        windows.append(FaultWindow(str(f.get("fault", "?")), str(f.get("kind", "fault")),
                                   [str(x) for x in f.get("targets") or []], float(f["applied_s"]),
                                   float(healed) if isinstance(healed, (int, float)) else None))
    tl.faults.extend(windows)
    tl.markers.extend(_markers(windows))
    tl.end_s = max([tl.end_s] + [w.end_s or w.start_s for w in tl.faults])
    perf.recovery(tl)
