"""The perf checker (Jepsen's `perf`): what happened over time, from the history alone.

Events sent, acknowledged and applied per time bin; end-to-end latency (acknowledgement ->
first sighting in the sink) per bin and overall; the window of each fault, from the
completion of its apply to the completion of its heal; harness phases; and the recovery
time after each fault (how long after the heal the applied rate came back).

`check(history)` is the checker: a JSON-serialisable summary, `valid` always True (or
"unknown" for an empty history), so composing it never changes a verdict. `build(history)`
is the full per-bin `Timeline` the report draws. Everything is aggregated with numpy on the
reader's columns; nothing per event leaves this module, so the result of a 10M-record run
is as small as that of a 10k-record one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onceproof.checkers.history import FAIL, INFO, INVOKE, OK, History

NS = 1_000_000_000
PHASES = ("load-start", "load-end", "heal-all", "quiesce-start", "quiesce-end")
RECOVERY_LEVEL = 0.9  # throughput is back once it reaches this fraction of what it was before
RECOVERY_BASELINE_S = 5.0  # "before" = the mean over at most this long before the fault
_NEVER = np.iinfo(np.int64).max


@dataclass
class FaultWindow:
    """One fault of the nemesis. Times are seconds since the run started (the history's
    clock); `end_s` None means never healed."""

    fault: str
    kind: str
    targets: list[str]
    start_s: float
    end_s: float | None  # None: never healed
    outcome: str = "ok"  # how the apply ended: ok, fail, info
    error: str = ""  # why the apply did not end ok (the nemesis's `error`), when it said
    before_rate: float | None = None  # applied events/s before the fault
    recovery_s: float | None = None  # heal -> applied rate back at RECOVERY_LEVEL x before
    recovery_note: str = ""

    @property
    def label(self) -> str:
        return f"{self.kind} {', '.join(self.targets)}".strip()

    def active_at(self, t: float, end_of_run: float) -> bool:
        """True if the fault is in effect at `t` s (a fault never healed lasts to `end_of_run`)."""
        end = self.end_s if self.end_s is not None else end_of_run
        return self.start_s <= t < end


@dataclass
class Timeline:
    """A history binned over time. Rates are events per second per bin of `bin_s` seconds
    starting at `x` (s since the run started); latencies are ms, binned by the time of the
    acknowledgement (None for a bin without any)."""

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
    phases: list[tuple[str, float]] = field(default_factory=list)
    load_start_s: float | None = None
    load_end_s: float | None = None
    sends: dict[str, int] = field(default_factory=dict)  # ok / fail / info (no completion = info)
    n_sent: int = 0
    n_applied: int = 0
    latency_ms: dict[str, Any] = field(default_factory=dict)  # latency_summary()'s shape

    def active_faults(self, t: float) -> list[FaultWindow]:
        """The faults in effect at `t` s."""
        return [f for f in self.faults if f.active_at(t, self.end_s)]

    def last_healed(self, t: float) -> FaultWindow | None:
        """The fault healed last at or before `t` s, if any."""
        healed = [f for f in self.faults if f.end_s is not None and f.end_s <= t]
        return max(healed, key=lambda f: f.end_s or 0.0) if healed else None


# --- the checker --------------------------------------------------------------------------
def check(history: History) -> dict[str, Any]:
    """Summarise a history's performance. Returns (JSON-serialisable):

    - `valid`: True, or "unknown" for an empty history (perf never finds an anomaly);
    - `measurement`: True (a measurement, not a judgement: never shown as an anomaly);
    - `latency_ms`: `latency_summary()` of acknowledgement -> first sighting;
    - `latency_to`: what a sighting's time is: `visible` (when the effect became visible in the
      sink, as the reads said: a commit time, a message timestamp; checkers/HISTORY.md) or
      `read` (when the observer's read returned: includes its polling delay);
    - `rates`: mean events/s `sent`, `acked`, `applied` over the load (its start to its end,
      else to the last record), and the `bin_s` the timeline uses;
    - `sends`: ok / fail / info counts (a send without completion counts as info),
      `sent`, `applied` (events seen in the sink);
    - `load_start_s`, `load_end_s`: s since the run started (None if not recorded);
    - `faults`: one dict per fault window: `fault`, `kind`, `targets`, `outcome`,
      `applied_s` / `healed_s` (s since the load started, or since the run started if it
      never did; `healed_s` None if never healed), `before_rate` (events/s), `recovery_s`,
      `recovery_note`;
    - `notes`: why something could not be measured.
    Raises nothing of its own; a malformed History raises what numpy raises."""
    tl = build(history)
    notes: list[str] = []
    if len(history) == 0:
        notes.append("the history is empty: nothing to measure")
    t0 = tl.load_start_s or 0.0
    t1 = tl.load_end_s if tl.load_end_s is not None else tl.end_s
    span = t1 - t0

    def per_s(n: int) -> float | None:
        return round(n / span, 1) if span > 0 else None

    return {
        "valid": True if len(history) else "unknown",
        "measurement": True,
        "latency_ms": tl.latency_ms or latency_summary(np.zeros(0)),
        "latency_to": "visible" if history.eff_vis is not None else "read",
        "rates": {"bin_s": tl.bin_s, "sent": per_s(tl.n_sent), "acked": per_s(tl.sends.get("ok", 0)),
                  "applied": per_s(tl.n_applied)},
        "sends": {**tl.sends, "sent": tl.n_sent, "applied": tl.n_applied},
        "load_start_s": _r(tl.load_start_s), "load_end_s": _r(tl.load_end_s),
        "faults": [{"fault": w.fault, "kind": w.kind, "targets": w.targets, "outcome": w.outcome,
                    "applied_s": round(w.start_s - t0, 3),
                    "healed_s": None if w.end_s is None else round(w.end_s - t0, 3),
                    "before_rate": w.before_rate, "recovery_s": w.recovery_s, "recovery_note": w.recovery_note}
                   for w in tl.faults],
        "notes": notes,
    }


def _r(x: float | None) -> float | None:
    return None if x is None else round(float(x), 3)


# --- latency --------------------------------------------------------------------------------
def first_sightings(h: History) -> tuple[np.ndarray, np.ndarray]:
    """Per event (indexed by eid): the time it was first seen in the sink (int64 ns since the
    run started, int64 max if never: when its effect became visible, the commit time a read
    gave in `visible`, else the time of the read, `History.effect_times`; a visibility time
    before the event's send falls back to the read's time) and the sink read that first saw it (int64 row in the
    history's obs columns, int64 max if never)."""
    n_ev = len(h.event_ids)
    first_seen = np.full(n_ev, _NEVER, np.int64)
    first_obs = np.full(n_ev, _NEVER, np.int64)
    if len(h.eff_eid):
        sent = np.full(n_ev, _NEVER, np.int64)  # each event's first send invoke
        inv = h.type[h.send_rec] == INVOKE
        np.minimum.at(sent, h.send_eid[inv], h.time[h.send_rec[inv]])
        np.minimum.at(first_seen, h.eff_eid, h.effect_times(sent))
        np.minimum.at(first_obs, h.eff_eid, h.eff_obs.astype(np.int64))
    return first_seen, first_obs


def ack_latencies(h: History, first_seen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """End-to-end latency of each event that was acknowledged (its last send completion is
    `ok`) and seen in the sink: (acknowledgement times, int64 ns since the run started;
    latencies, float64 ms from the acknowledgement to the first sighting, 0 for an event seen
    before its acknowledgement came back). `first_seen` is first_sightings()[0] if known."""
    if first_seen is None:
        first_seen = first_sightings(h)[0]
    n_ev = len(h.event_ids)
    comp = h.type[h.send_rec] != INVOKE
    last_comp = np.full(n_ev, -1, np.int64)
    last_comp[h.send_eid[comp]] = h.send_rec[comp]  # the last completion wins
    has_comp = last_comp >= 0
    acked = np.zeros(n_ev, bool)
    acked[has_comp] = h.type[last_comp[has_comp]] == OK
    both = acked & (first_seen != _NEVER)
    ack_ns = h.time[last_comp[both]].astype(np.int64)
    return ack_ns, np.maximum(first_seen[both] - ack_ns, 0) / 1e6


def latency_summary(lat_ms: np.ndarray) -> dict[str, Any]:
    """`{"p50", "p90", "p99", "max"}` of latencies in ms (rounded to µs; None when there are
    none) and `n`, how many."""
    if not len(lat_ms):
        return {"p50": None, "p90": None, "p99": None, "max": None, "n": 0}
    q = np.percentile(lat_ms, [50, 90, 99])
    return {"p50": round(float(q[0]), 3), "p90": round(float(q[1]), 3), "p99": round(float(q[2]), 3),
            "max": round(float(lat_ms.max()), 3), "n": int(len(lat_ms))}


def latency_ms(h: History) -> dict[str, Any]:
    """latency_summary() of the history's acknowledgement -> first sighting latencies."""
    return latency_summary(ack_latencies(h)[1])


# --- the timeline ---------------------------------------------------------------------------
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
    """The history binned over time (see Timeline), with its fault windows, phases and the
    recovery after each fault. An empty history gives an empty Timeline."""
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
    first_seen, first_obs = first_sightings(h)
    seen = first_seen != _NEVER
    tl.n_applied = int(np.count_nonzero(seen))
    tl.applied = _applied_per_second(h, first_obs[seen], n_bins, b)

    # latency: first seen - acknowledged, binned by the time of acknowledgement
    ack_ns, lat_ms = ack_latencies(h, first_seen)
    lat_bin = np.minimum((ack_ns / bin_ns).astype(np.int64), n_bins - 1)
    tl.latency_p50, tl.latency_p99 = _binned_percentiles(lat_bin, lat_ms, n_bins, (0.50, 0.99))
    if len(lat_ms):
        tl.latency_ms = latency_summary(lat_ms)

    _phases(h, tl)
    tl.faults.extend(fault_windows(h))
    recovery(tl)
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


def _targets(v: dict[str, Any]) -> list[str]:
    """A nemesis record's `targets` as names: a list of them, one name, or nothing usable."""
    t = v.get("targets")
    if isinstance(t, list):
        return [str(x) for x in t]
    return [t] if isinstance(t, str) else []


def fault_windows(h: History) -> list[FaultWindow]:
    """Each fault of the history's nemesis, from the completion of its apply to the completion
    of its heal (seconds since the run started); apply and heal paired by `value.fault`.
    A fault whose apply certainly failed lasts no time; one never healed has `end_s` None."""
    faults: list[FaultWindow] = []
    open_: dict[str, list[FaultWindow]] = {}
    for rec in _records_of(h, "nemesis"):
        v = rec["value"] if isinstance(rec["value"], dict) else {}
        name = str(v.get("fault", "?"))
        t = rec["time"] / NS
        if rec["f"] == "apply":
            if rec["type"] == "invoke":
                w = FaultWindow(name, str(v.get("kind", "fault")), _targets(v), t, None, outcome="info")
                open_.setdefault(name, []).append(w)
                faults.append(w)
            else:  # the fault is in effect from its completion on
                pending = [w for w in open_.get(name, []) if w.outcome == "info"]
                if pending:
                    w = pending[0]
                    w.start_s, w.outcome = t, rec["type"]
                else:
                    w = FaultWindow(name, str(v.get("kind", "fault")), _targets(v), t, None, outcome=rec["type"])
                    open_.setdefault(name, []).append(w)
                    faults.append(w)
                if rec["type"] != "ok" and v.get("error") is not None:
                    w.error = str(v["error"])[:300]
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


def _phases(h: History, tl: Timeline) -> None:
    for rec in _records_of(h, "harness"):
        t = rec["time"] / NS
        if rec["f"] in PHASES:
            tl.phases.append((rec["f"], t))
        if rec["f"] == "load-start" and tl.load_start_s is None:
            tl.load_start_s = t
        if rec["f"] == "load-end":
            tl.load_end_s = t


def recovery(tl: Timeline) -> None:
    """Fill in `before_rate`, `recovery_s` and `recovery_note` of each of `tl.faults`: how long
    after the heal the applied rate came back to RECOVERY_LEVEL x its mean over the
    RECOVERY_BASELINE_S before the fault (capped at the rate sent then)."""
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
