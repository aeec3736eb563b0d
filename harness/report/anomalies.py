"""The anomalies section: counts per kind from each checker's result, then capped examples,
each with that event's own history laid against the run's clock and its faults."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from onceproof.checkers.history import History
from onceproof.report.timeline import NS, Timeline

MAX_EXAMPLES = 20  # per anomaly kind
MAX_RECORDS = 60  # per example
MAX_VALUE_CHARS = 400
SINK_READS = ("observe", "final-read")


@dataclass
class Row:
    index: Any
    time_s: float | None
    process: str
    type: str
    f: str
    value: str
    note: str
    faults: str


@dataclass
class Example:
    kind: str
    id: str
    key: str
    seq: str
    why: str
    rows: list[Row] = field(default_factory=list)
    hidden_records: int = 0
    moment_s: float | None = None  # when it broke, to mark on the timeline
    extra: str = ""  # fields of the example other than the usual ones (state-mismatch, ...)


@dataclass
class CheckerAnomalies:
    checker: str
    valid: Any
    counts: list[tuple[str, int]]
    examples: dict[str, list[Example]]
    hidden_examples: dict[str, int]
    notes: list[str]

    @property
    def total(self) -> int:
        return sum(c for _, c in self.counts)


def collect(results: dict[str, Any], tl: Timeline, history: History | None) -> list[CheckerAnomalies]:
    out = []
    for name, res in (results.get("checkers") or {}).items():
        if not isinstance(res, dict) or not isinstance(res.get("anomalies"), dict):
            continue
        counts = [(str(k), _int(v)) for k, v in res["anomalies"].items()]
        examples: dict[str, list[Example]] = {}
        hidden: dict[str, int] = {}
        for kind, exs in (res.get("examples") or {}).items():
            if not isinstance(exs, list) or not exs:
                continue
            examples[str(kind)] = [_example(str(kind), e, tl, history) for e in exs[:MAX_EXAMPLES]
                                   if isinstance(e, dict)]
            hidden[str(kind)] = max(0, dict(counts).get(str(kind), len(exs)) - len(examples[str(kind)]))
        notes = [str(n) for n in res.get("notes") or []]
        out.append(CheckerAnomalies(str(name), res.get("valid"), counts, examples, hidden, notes))
    return out


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def _text(v: Any, limit: int = MAX_VALUE_CHARS) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v, default=str).decode()
    return s if len(s) <= limit else s[:limit - 1] + "…"


def _example(kind: str, e: dict[str, Any], tl: Timeline, history: History | None) -> Example:
    ex = Example(kind, _text(e.get("id", "")), _text(e.get("key", "")), _text(e.get("seq", "")),
                 _text(e.get("why", ""), 1000))
    others = {k: v for k, v in e.items() if k not in ("id", "key", "seq", "why", "records")}
    if others:
        ex.extra = _text(others, 1000)
    records = e.get("records")
    if not isinstance(records, list):
        records = _records_from_history(history, e.get("id")) if history is not None else []
    records = [r for r in records if isinstance(r, dict)]
    ex.hidden_records = max(0, len(records) - MAX_RECORDS)
    ex.rows = [_row(r, e.get("id"), tl) for r in records[:MAX_RECORDS]]
    ex.moment_s = _moment(kind, records, e.get("id"))
    return ex


def _row(r: dict[str, Any], event_id: Any, tl: Timeline) -> Row:
    t = r.get("time")
    t_s = t / NS if isinstance(t, (int, float)) else None
    value = r.get("value")
    note = ""
    if r.get("f") in SINK_READS and isinstance(value, dict):
        mine = _times_in(value, event_id)
        total = value.get("events_total", len(value.get("events") or []))
        read = "complete read" if value.get("full") else "new effects"
        note = f"this event {mine}× of {total} effects ({read})"
        if mine == 0 and value.get("full"):
            note = f"this event MISSING from a complete read of {total} effects"
    return Row(r.get("index", ""), t_s, _text(r.get("process", "")), _text(r.get("type", "")),
               _text(r.get("f", "")), _text(value), note, _fault_context(t_s, tl))


def _times_in(value: dict[str, Any], event_id: Any) -> int:
    events = value.get("events") or []
    return sum(1 for ev in events if isinstance(ev, list) and ev and ev[0] == event_id)


def _fault_context(t: float | None, tl: Timeline) -> str:
    if t is None or not tl.faults:
        return ""
    active = tl.active_faults(t)
    if active:
        return "; ".join(f"during {w.fault} {w.label} (+{t - w.start_s:.3f} s)" for w in active)
    last = tl.last_healed(t)
    if last is not None and last.end_s is not None:
        return f"{t - last.end_s:.3f} s after {last.fault} {last.label} healed"
    return "before any fault"


def _moment(kind: str, records: list[dict[str, Any]], event_id: Any) -> float | None:
    """When the anomaly became visible: the second application of a duplicate, the
    acknowledgement of a lost event, the read that missed a flickering one, else the first
    sighting."""
    timed = [r for r in records if isinstance(r.get("time"), (int, float))]
    if not timed:
        return None
    reads = [r for r in timed if r.get("f") in SINK_READS and isinstance(r.get("value"), dict)]
    if kind == "duplicate":
        seen = 0
        for r in reads:
            n = _times_in(r["value"], event_id)
            seen = n if r["value"].get("full") else seen + n
            if seen >= 2:
                return r["time"] / NS
    if kind == "lost":
        acks = [r for r in timed if r.get("f") == "send" and r.get("type") == "ok"]
        if acks:
            return acks[0]["time"] / NS
    if kind == "flicker":
        gone = [r for r in reads if r["value"].get("full") and _times_in(r["value"], event_id) == 0]
        if gone:
            return gone[0]["time"] / NS
    sightings = [r for r in reads if _times_in(r["value"], event_id)]
    return (sightings[0] if sightings else timed[-1])["time"] / NS


def _records_from_history(h: History, event_id: Any) -> list[dict[str, Any]]:
    """An example without records (a checker that keeps none): find them in the history."""
    try:
        eid = h.event_ids.index(event_id)
    except ValueError:
        return []
    recs = h.records(h.send_rec[h.send_eid == eid].tolist())
    for obs in np.unique(h.eff_obs[h.eff_eid == eid]).tolist():
        rec = int(h.obs_rec[obs])
        times = int(np.count_nonzero((h.eff_obs == obs) & (h.eff_eid == eid)))
        recs.append({"index": rec, "time": int(h.time[rec]), "process": h.process_names[h.process[rec]],
                     "type": "ok", "f": h.f_names[h.f[rec]],
                     "value": {"full": bool(h.obs_full[obs]), "events": [[event_id]] * times,
                               "events_total": int(np.count_nonzero(h.eff_obs == obs)), "trimmed": True}})
    recs.sort(key=lambda r: r["index"])
    return recs
