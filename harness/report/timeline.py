"""What happened over time, from the history: events sent, acknowledged and applied per time
bin, end-to-end latency percentiles per bin, fault windows, process kills and restarts,
harness phases, and the recovery time after each fault.

Everything is aggregated with numpy on the reader's columns; nothing per event leaves this
module, so a report of a 10M-record run is as small as one of a 10k-record run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onceproof.checkers.history import FAIL, INFO, INVOKE, OK, History
from onceproof.faults.base import process_marks

NS = 1_000_000_000
PROCESS_FAULTS = process_marks()  # kind -> (verb at apply, verb at heal), declared by each process kind
PHASES = ("load-start", "load-end", "heal-all", "quiesce-start", "quiesce-end")
RECOVERY_LEVEL = 0.9  # throughput is back once it reaches this fraction of what it was before
RECOVERY_BASELINE_S = 5.0  # "before" = the mean over at most this long before the fault


@dataclass
class FaultWindow:
    fault: str
    kind: str
    targets: list[str]
    start_s: float
    end_s: float | None  # None: never healed
    outcome: str = "ok"  # how the apply ended: ok, fail, info
    before_rate: float | None = None  # applied events/s before the fault
    recovery_s: float | None = None  # heal -> applied rate back at RECOVERY_LEVEL x before
    recovery_note: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {', '.join(self.targets)}".strip()

    def active_at(self, t: float, end_of_run: float) -> bool:
        end = self.end_s if self.end_s is not None else end_of_run
        return self.start_s <= t < end


@dataclass
class Marker:
    time_s: float
    lane: str  # the process (target) or anomaly kind it belongs to
    what: str  # kill, restart, pause, resume, duplicate, ...
    detail: str = ""


@dataclass
class Timeline:
    bin_s: float = 1.0
    end_s: float = 0.0
    x: list[float] = field(default_factory=list)  # bin starts, seconds
    sent: list[float] = field(default_factory=list)  # per second
    acked: list[float] = field(default_factory=list)
    failed: list[float] = field(default_factory=list)
    info: list[float] = field(default_factory=list)
    applied: list[float] = field(default_factory=list)
    latency_p50: list[float | None] = field(default_factory=list)  # ms, by time of acknowledgement
    latency_p99: list[float | None] = field(default_factory=list)
    faults: list[FaultWindow] = field(default_factory=list)
    markers: list[Marker] = field(default_factory=list)
    phases: list[tuple[str, float]] = field(default_factory=list)
    load_start_s: float | None = None
    load_end_s: float | None = None
    origin: str = "the run started"  # what time 0 is
    sends: dict[str, int] = field(default_factory=dict)  # ok / fail / info (no completion = info)
    n_sent: int = 0
    n_applied: int = 0
    latency_ms: dict[str, float] = field(default_factory=dict)

    def active_faults(self, t: float) -> list[FaultWindow]:
        return [f for f in self.faults if f.active_at(t, self.end_s)]

    def last_healed(self, t: float) -> FaultWindow | None:
        healed = [f for f in self.faults if f.end_s is not None and f.end_s <= t]
        return max(healed, key=lambda f: f.end_s or 0.0) if healed else None


def choose_bin(duration_s: float) -> float:
    """Fine bins for a short run (so a 15 s run still shows its faults), one second for
    a long one, wider only past ~80 minutes (to keep the page small)."""
    for c in (0.1, 0.2, 0.25, 0.5):
        if duration_s / c <= 120:
            return c
    b = 1.0
    while duration_s / b > 5000:
        b *= 2
    return b


def build(h: History) -> Timeline:
    tl = Timeline()
    if len(h) == 0:
        return tl
    t_ns = h.time
    tl.end_s = float(t_ns.max()) / NS
    tl.bin_s = b = choose_bin(tl.end_s)
    n_bins = max(1, math.ceil(tl.end_s / b + 1e-9))
    bin_ns = b * NS
    tl.x = [round(i * b, 3) for i in range(n_bins)]

    def per_second(times_ns: np.ndarray) -> list[float]:
        idx = np.minimum((times_ns / bin_ns).astype(np.int64), n_bins - 1)
        counts = np.bincount(idx, minlength=n_bins)
        return [round(c / b, 3) for c in counts.tolist()]

    # sends
    n_ev = len(h.event_ids)
    s_type = h.type[h.send_rec]
    s_time = t_ns[h.send_rec]
    inv = s_type == INVOKE
    ok, fail, info = s_type == OK, s_type == FAIL, s_type == INFO
    tl.sent, tl.acked = per_second(s_time[inv]), per_second(s_time[ok])
    tl.failed, tl.info = per_second(s_time[fail]), per_second(s_time[info])
    invoked = np.zeros(n_ev, bool)
    invoked[h.send_eid[inv]] = True
    completion = np.full(n_ev, -1, np.int8)
    completion[h.send_eid[~inv]] = s_type[~inv]
    tl.n_sent = int(np.count_nonzero(invoked | (completion >= 0)))
    n_ok = int(np.count_nonzero(completion == OK))
    n_fail = int(np.count_nonzero(completion == FAIL))
    tl.sends = {"ok": n_ok, "fail": n_fail, "info": tl.n_sent - n_ok - n_fail}

    # applied: the first sighting of each event in the sink
    never = np.iinfo(np.int64).max
    first_seen = np.full(n_ev, never, np.int64)
    first_obs = np.full(n_ev, never, np.int64)
    if len(h.eff_eid):
        eff_time = t_ns[h.obs_rec[h.eff_obs]]
        np.minimum.at(first_seen, h.eff_eid, eff_time)
        np.minimum.at(first_obs, h.eff_eid, h.eff_obs.astype(np.int64))
    seen = first_seen != never
    tl.n_applied = int(np.count_nonzero(seen))
    tl.applied = _applied_per_second(h, first_obs[seen], n_bins, b)

    # latency: first seen - acknowledged, binned by the time of acknowledgement
    ack = np.full(n_ev, -1, np.int64)
    ack[h.send_eid[ok]] = s_time[ok]
    both = seen & (ack >= 0)
    lat_ms = np.maximum(first_seen[both] - ack[both], 0) / 1e6
    lat_bin = np.minimum((ack[both] / bin_ns).astype(np.int64), n_bins - 1)
    tl.latency_p50, tl.latency_p99 = _binned_percentiles(lat_bin, lat_ms, n_bins, (0.50, 0.99))
    if len(lat_ms):
        q = np.percentile(lat_ms, [50, 90, 99])
        tl.latency_ms = {"p50": round(float(q[0]), 1), "p90": round(float(q[1]), 1),
                         "p99": round(float(q[2]), 1), "max": round(float(lat_ms.max()), 1)}

    _faults_and_phases(h, tl)
    _recovery(tl)
    return tl


def _applied_per_second(h: History, first_obs: np.ndarray, n_bins: int, b: float) -> list[float]:
    """Events applied per second. An event first seen by a read was applied at some moment
    since the read before it: each read's new events are spread evenly over that interval,
    so the curve does not alias when reads are further apart than a bin."""
    n_obs = len(h.obs_rec)
    new_per_read = np.bincount(first_obs, minlength=n_obs).astype(np.float64)
    read_s = h.time[h.obs_rec] / NS
    order = np.argsort(read_s, kind="stable")
    ends = read_s[order]
    starts = np.concatenate(([0.0], ends[:-1]))
    counts = new_per_read[order]
    # spread over [start, end): cumulative "applied" as a piecewise-linear function of time,
    # sampled at the bin edges, then differenced
    edges = np.arange(n_bins + 1) * b
    cum_at_end = np.cumsum(counts)
    cum_at_start = cum_at_end - counts
    idx = np.searchsorted(ends, edges, side="left")  # the read interval holding each edge
    out = np.empty(len(edges))
    past = idx >= len(ends)
    out[past] = cum_at_end[-1] if len(ends) else 0.0
    i = idx[~past]
    span = np.maximum(ends[i] - starts[i], 1e-9)
    frac = np.clip((edges[~past] - starts[i]) / span, 0.0, 1.0)
    out[~past] = cum_at_start[i] + frac * counts[i]
    per_bin = np.diff(out)
    return [round(float(c) / b, 3) for c in per_bin]


def _binned_percentiles(bins: np.ndarray, values: np.ndarray, n_bins: int,
                        qs: tuple[float, ...]) -> tuple[list[float | None], ...]:
    """Per bin, the nearest-rank percentiles `qs` of `values` (None for an empty bin)."""
    out: list[list[float | None]] = []
    order = np.lexsort((values, bins))
    v = values[order]
    counts = np.bincount(bins, minlength=n_bins)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    has = counts > 0
    for q in qs:
        pos = starts + np.ceil(q * counts).astype(np.int64) - 1
        col: list[float | None] = [None] * n_bins
        if len(v):
            picked = v[np.clip(pos, 0, len(v) - 1)]
            for i in np.flatnonzero(has).tolist():
                col[i] = round(float(picked[i]), 2)
        out.append(col)
    return tuple(out)


def _records_of(h: History, process: str) -> list[dict[str, Any]]:
    if process not in h.process_names:
        return []
    code = h.process_names.index(process)
    return h.records(np.flatnonzero(h.process == code).tolist())


def fault_windows(h: History) -> list[FaultWindow]:
    """Each fault of the history's nemesis, from the completion of its apply to the completion
    of its heal (seconds since the run started); apply and heal paired by `value.fault`."""
    faults: list[FaultWindow] = []
    open_: dict[str, list[FaultWindow]] = {}
    for rec in _records_of(h, "nemesis"):
        v = rec["value"] if isinstance(rec["value"], dict) else {}
        name = str(v.get("fault", "?"))
        t = rec["time"] / NS
        if rec["f"] == "apply":
            if rec["type"] == "invoke":
                w = FaultWindow(name, str(v.get("kind", "fault")), [str(x) for x in v.get("targets") or []],
                                t, None, outcome="info")
                open_.setdefault(name, []).append(w)
                faults.append(w)
            else:  # the fault is in effect from its completion on
                pending = [w for w in open_.get(name, []) if w.outcome == "info"]
                if pending:
                    pending[0].start_s, pending[0].outcome = t, rec["type"]
                else:
                    w = FaultWindow(name, str(v.get("kind", "fault")),
                                    [str(x) for x in v.get("targets") or []], t, None, outcome=rec["type"])
                    open_.setdefault(name, []).append(w)
                    faults.append(w)
        elif rec["f"] == "heal":
            windows = open_.get(name) or []
            if not windows:
                continue
            windows[0].end_s = t
            if rec["type"] != "invoke":  # healed once the heal completed
                windows.pop(0)
    for w in faults:
        if w.outcome == "fail" and w.end_s is None:
            w.end_s = w.start_s  # certainly not applied: nothing to heal
            w.recovery_note = "the fault was not applied"
    return faults


def _faults_and_phases(h: History, tl: Timeline) -> None:
    for rec in _records_of(h, "harness"):
        t = rec["time"] / NS
        if rec["f"] in PHASES:
            tl.phases.append((rec["f"], t))
        if rec["f"] == "load-start" and tl.load_start_s is None:
            tl.load_start_s = t
        if rec["f"] == "load-end":
            tl.load_end_s = t
    tl.faults.extend(fault_windows(h))
    for w in tl.faults:
        verbs = PROCESS_FAULTS.get(w.kind)
        if not verbs or w.outcome == "fail":
            continue
        for target in w.targets or ["?"]:
            tl.markers.append(Marker(w.start_s, target, verbs[0], f"{w.fault}"))
            if w.end_s is not None:
                tl.markers.append(Marker(w.end_s, target, verbs[1], f"{w.fault}"))


def faults_from_results(results: dict[str, Any], tl: Timeline) -> None:
    """No nemesis records in the history (or no history): take the windows results.json lists
    (timed from the start of the load, not of the run)."""
    if not tl.x:
        tl.origin = "the load started"
    for f in results.get("faults") or []:
        if not isinstance(f, dict) or not isinstance(f.get("applied_s"), (int, float)):
            continue
        healed = f.get("healed_s")
        w = FaultWindow(str(f.get("fault", "?")), str(f.get("kind", "fault")),
                        [str(x) for x in f.get("targets") or []], float(f["applied_s"]),
                        float(healed) if isinstance(healed, (int, float)) else None)
        tl.faults.append(w)
        verbs = PROCESS_FAULTS.get(w.kind)
        for target in (w.targets or ["?"]) if verbs else []:
            tl.markers.append(Marker(w.start_s, target, verbs[0], w.fault))  # type: ignore[index]
            if w.end_s is not None:
                tl.markers.append(Marker(w.end_s, target, verbs[1], w.fault))  # type: ignore[index]
    tl.end_s = max([tl.end_s] + [w.end_s or w.start_s for w in tl.faults])
    _recovery(tl)


def _recovery(tl: Timeline) -> None:
    """For each healed fault: how long after the heal the applied rate came back to
    RECOVERY_LEVEL x its mean over the RECOVERY_BASELINE_S before the fault."""
    if not tl.applied:
        for w in tl.faults:
            w.recovery_note = "no throughput data"
        return
    b = tl.bin_s
    rate = np.array(tl.applied)
    load_start = tl.load_start_s or 0.0
    load_end = tl.load_end_s if tl.load_end_s is not None else tl.end_s
    last_bin = min(len(rate), int(load_end / b))  # bins wholly inside the load
    for w in tl.faults:
        if w.end_s is None or w.outcome == "fail":
            w.recovery_note = w.recovery_note or "never healed"
            continue
        lo = int(max(load_start, w.start_s - RECOVERY_BASELINE_S) / b)
        hi = int(w.start_s / b)  # the bin holding the apply is already disturbed
        if hi <= lo:
            w.recovery_note = "no throughput before the fault to compare with"
            continue
        # what the pipeline kept up with before the fault: applied, but no more than was sent
        # (applied above the send rate is a backlog draining, not a level to come back to)
        before = float(rate[lo:hi].mean())
        if tl.sent:
            before = min(before, float(np.mean(tl.sent[lo:hi])))
        w.before_rate = round(before, 1)
        if before <= 0:
            w.recovery_note = "no throughput before the fault to compare with"
            continue
        first = int(w.end_s / b)
        after = np.flatnonzero(rate[first:last_bin] >= RECOVERY_LEVEL * before)
        if len(after):
            back_at = max((first + int(after[0])) * b, w.end_s)
            w.recovery_s = round(back_at - w.end_s, 3)
        else:
            w.recovery_note = "throughput not back before the load ended"
