"""The report's timeline: perf's analysis of the history (checkers/perf.py: rates, latency,
fault windows, recovery), plus what only a picture needs: a marker for each process kill,
pause and restart, and what time 0 means. When the history has no nemesis records (or there
is no history), the fault windows come from results.json instead."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onceproof.checkers import perf
from onceproof.checkers.history import INVOKE, History
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
    """perf.Timeline with the report's process markers, the meaning of time 0, and the
    pipeline's lag on the source (`progress` records): per poll, seconds and the lag of the
    group furthest behind, in events (None: that poll failed or saw no group)."""

    markers: list[Marker] = field(default_factory=list)
    origin: str = "the run started"  # what time 0 is
    lag_x: list[float] = field(default_factory=list)
    lag: list[int | None] = field(default_factory=list)
    lag_group: str = ""


def build(h: History) -> Timeline:
    """perf.build(h), with a marker at each apply and heal of a process fault."""
    tl = Timeline(**vars(perf.build(h)))
    tl.markers = _markers(tl.faults)
    _lag(h, tl)
    return tl


def _lag(h: History, tl: Timeline) -> None:
    """The lag lane: each `progress` poll's lag (of the group furthest behind)."""
    code = h.f_code("progress")
    if code < 0:
        return
    groups: set[str] = set()
    for i in np.flatnonzero((h.f == code) & (h.type != INVOKE)).tolist():
        rec = h.record(i)
        v = rec["value"] if isinstance(rec.get("value"), dict) else {}
        lags = [(int(g.get("lag") or 0), str(g.get("group"))) for g in v.get("groups") or [] if isinstance(g, dict)]
        tl.lag_x.append(round(rec["time"] / NS, 3))
        tl.lag.append(max(lags)[0] if rec["type"] == "ok" and lags else None)
        groups |= {name for _, name in lags}
    tl.lag_group = ", ".join(sorted(groups))


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
