"""Lost or late: an acknowledged event missing from the final read is `lost` only when the
pipeline says it got past it; otherwise it is `unseen` (the pipeline never got to it).

A quiet sink is not a finished pipeline (a consumer group waiting out a dead member's session,
a transaction left open on a Kafka sink), so `lost` is proven with the pipeline's own
progress, recorded in the history (checkers/HISTORY.md):
- `landed` records: where each acknowledged event landed in the source (partition, position);
- `progress` records: each consumer group's committed position per source partition
  (everything before it is claimed processed) and the end of the source;
- `sink-blocked`: a Kafka sink whose last stable offset was behind its end at the final read.

An event missing from the final read is `lost` when the final committed position of every
group is past its source position, or when the pipeline had caught up (lag 0 everywhere) and
it is still missing; unless the sink was blocked by an open transaction (then the effect may
sit behind it). Everything else missing is `unseen`: no safety anomaly, but no `valid` either,
and the reason says why (stalled, behind, blocked, or progress not observable).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onceproof.checkers.history import OK, History

NS = 1_000_000_000
STALL_S = 5.0  # no committed position moved for this long at the end: stalled, not merely slow
FAULT_SLACK_S = 2.0  # a fault this close after the last progress is still what it stalled after


def position_key(pos: Any) -> int:
    """A source position as a comparable integer: a Kafka offset or Postgres `pos` as is, a
    Redis stream entry id "ms-seq" as ms * 2**20 + seq. Raises ValueError for anything else."""
    if isinstance(pos, bool):
        raise ValueError(f"not a source position: {pos!r}")
    if isinstance(pos, int):
        return pos
    if isinstance(pos, str):
        ms, sep, seq = pos.partition("-")
        if ms.isdigit() and (not sep or seq.isdigit()):
            return (int(ms) << 20) + int(seq or 0)
    raise ValueError(f"not a source position: {pos!r}")


@dataclass
class Group:
    """A group's committed position per partition at one progress record (-1 = none)."""

    name: str
    committed: dict[int, int]  # partition -> position key (-1: nothing committed)
    lag: int
    lagging: int  # partitions with something left to process
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class Snapshot:
    rec: int  # record number
    time_ns: int
    groups: list[Group]
    note: str = ""

    @property
    def caught_up(self) -> bool:
        return bool(self.groups) and all(g.lag == 0 for g in self.groups)


@dataclass
class Verdict:
    """What the progress rule decided about the events missing from the final read."""

    lost: np.ndarray  # bool per eid
    unseen: np.ndarray  # bool per eid
    reason: str = ""  # one line, when some are unseen
    stall: dict[str, Any] | None = None
    proof: dict[int, str] = field(default_factory=dict)  # eid -> why it is proven lost
    proof_recs: list[int] = field(default_factory=list)  # records that prove it (final progress, ...)
    notes: list[str] = field(default_factory=list)
    positions: dict[int, tuple[int, Any]] = field(default_factory=dict)  # eid -> (partition, position)
    blocked: dict[str, Any] | None = None  # the last sink-blocked record's value
    final: Snapshot | None = None  # the final progress snapshot that judged


def has_progress(h: History) -> bool:
    """True when the history records the pipeline's progress (made by onceproof with progress
    observation); older histories judge `lost` by the final read alone."""
    return _recs(h, "progress", OK).size > 0


def progress_unread(h: History) -> bool:
    """True when the run tried to read the pipeline's progress and no read succeeded (every
    `progress` operation failed: a broken `pipeline.progress` query, a pipeline that never
    made its progress table), as opposed to a history from before progress was observed."""
    return _recs(h, "progress").size > 0 and not has_progress(h)


def _recs(h: History, f: str, type_: int | None = None) -> np.ndarray:
    code = h.f_code(f)
    if code < 0:
        return np.zeros(0, np.int64)
    mask = h.f == code
    if type_ is not None:
        mask &= h.type == type_
    return np.flatnonzero(mask)


def snapshots(h: History) -> list[Snapshot]:
    """Every ok `progress` record, in file order."""
    out = []
    for i in _recs(h, "progress", OK).tolist():
        rec = h.record(i)
        v = rec["value"] if isinstance(rec.get("value"), dict) else {}
        groups = []
        for g in v.get("groups") or []:
            committed: dict[int, int] = {}
            lagging = 0
            for p, c, e in g.get("partitions") or []:
                committed[int(p)] = -1 if c in (-1, None) else position_key(c)
                end = position_key(e)
                if committed[int(p)] < end:
                    lagging += 1
            groups.append(Group(str(g.get("group")), committed, int(g.get("lag") or 0),
                                lagging if g.get("lag") else 0, g))
        out.append(Snapshot(i, int(rec["time"]), groups, str(v.get("note") or "")))
    return out


def landed_positions(h: History, wanted: set[str]) -> dict[str, tuple[int, Any]]:
    """Event id -> (partition, position) from the `landed` records, for the ids in `wanted`."""
    out: dict[str, tuple[int, Any]] = {}
    if not wanted:
        return out
    for i in _recs(h, "landed").tolist():
        v = h.record(i).get("value") or {}
        p = int(v.get("partition", 0))
        for eid, pos in v.get("events") or []:
            if eid in wanted:
                out[eid] = (p, pos)
    return out


def _load_start_ns(h: History) -> int:
    for i in _recs(h, "load-start").tolist():
        return int(h.time[i])
    return 0


def _faults(h: History) -> list[tuple[int, str]]:
    """(time ns, "f3 kill pipeline-1") of each fault applied (ok), in order."""
    out = []
    for i in _recs(h, "apply", OK).tolist():
        v = h.record(i).get("value") or {}
        out.append((int(h.time[i]), f"{v.get('fault', '?')} {v.get('kind', 'fault')} "
                                    f"{', '.join(str(t) for t in v.get('targets') or [])}".strip()))
    return out


def stall(h: History, snaps: list[Snapshot]) -> dict[str, Any] | None:
    """The liveness figure: how the most-lagging group ended, when its committed position last
    moved (s since the load started), how long it then stood still, and the last fault applied
    before it stopped. None without progress records with groups."""
    final = snaps[-1] if snaps else None
    if final is None or not final.groups:
        return None
    worst = max(final.groups, key=lambda g: g.lag)
    t0 = _load_start_ns(h)
    last_move_ns: int | None = None
    prev: dict[int, int] | None = None
    for s in snaps:
        g = next((x for x in s.groups if x.name == worst.name), None)
        if g is None:
            continue
        if prev is not None and g.committed != prev:
            last_move_ns = s.time_ns
        elif prev is None and any(c >= 0 for c in g.committed.values()):
            last_move_ns = s.time_ns
        prev = g.committed
    still_ns = final.time_ns - (last_move_ns if last_move_ns is not None else t0)
    state = "caught-up" if worst.lag == 0 else "stalled" if still_ns >= STALL_S * NS else "behind"
    after = None
    if last_move_ns is not None:
        before = [name for t, name in _faults(h) if t <= last_move_ns + FAULT_SLACK_S * NS]
        after = before[-1] if before else None
    else:
        faults = _faults(h)
        after = faults[0][1] if faults else None
    return {"group": worst.name, "state": state, "lag": worst.lag, "partitions": worst.lagging,
            "last_progress_s": None if last_move_ns is None else round((last_move_ns - t0) / NS, 1),
            "stalled_s": round(still_ns / NS, 1), "after_fault": after}


def _blocked(h: History) -> dict[str, Any] | None:
    recs = _recs(h, "sink-blocked")
    if not len(recs):
        return None
    v = h.record(int(recs[-1])).get("value")
    return v if isinstance(v, dict) else {}


def blocked_reason(v: dict[str, Any]) -> str:
    """One line on a Kafka sink held back by an open transaction."""
    sink = str(v.get("sink", "the sink")).split(":", 1)[-1]
    parts = v.get("partitions") or []
    where = ", ".join(f"{sink}[{b.get('partition')}] last stable offset {b.get('last_stable'):,} < end "
                      f"{b.get('end'):,}" for b in parts[:3] if isinstance(b, dict))
    txns = v.get("transactions")
    if txns:
        t = txns[0]
        age = f", its producer idle {t['age_s']:.1f} s" if isinstance(t.get("age_s"), (int, float)) else ""
        who = (f"open transaction of producer {t.get('producer_id')} (epoch {t.get('producer_epoch')}) "
               f"since offset {t.get('start_offset'):,}{age}")
    elif txns is None:
        who = "an open transaction (" + str(v.get("note") or "its producer is not known") + ")"
    else:
        who = "an open transaction"
    return f"sink blocked: {where}: {who}; read_committed readers cannot see past it"


def _stall_reason(st: dict[str, Any]) -> str:
    after = f" (after {st['after_fault']})" if st.get("after_fault") else ""
    # a group's name, or the plan's own progress (its SQL or Redis hash), which is no group
    who = st["group"] if str(st["group"]).startswith("pipeline.progress") else f"consumer group {st['group']}"
    n = st["partitions"]
    lag = f"had lag {st['lag']:,} on {n} partition{'s' if n != 1 else ''}"
    if st["state"] == "stalled":
        when = (f"made no progress after t={st['last_progress_s']:.1f} s" if st.get("last_progress_s") is not None
                else "made no progress at all")
        return f"stalled: {who} {lag} and {when}{after}"
    return (f"behind: {who} still {lag} at the end of the drain and was still "
            f"moving; a longer quiesce.max would tell")


def judge(h: History, missing: np.ndarray, ack_ns: np.ndarray) -> Verdict:
    """Split the acknowledged events missing from the final read (`missing`, bool per eid;
    `ack_ns`, ack time per eid) into proven `lost` and `unseen`, with the reason and the
    stall figure. Needs a history with progress records (`has_progress`)."""
    n_ev = len(missing)
    snaps = snapshots(h)
    final = next((s for s in reversed(snaps) if s.groups or s.note), snaps[-1]) if snaps else None
    v = Verdict(np.zeros(n_ev, bool), np.zeros(n_ev, bool))
    v.stall = stall(h, snaps)
    eids = np.flatnonzero(missing)
    if not len(eids):
        return v
    ids = [h.event_ids[int(e)] for e in eids]
    pos = landed_positions(h, set(ids))
    blocked = _blocked(h)
    if final is not None:
        v.proof_recs.append(final.rec)
    for e, eid_str in zip(eids.tolist(), ids):
        where = pos.get(eid_str)
        if where is not None:
            v.positions[e] = where
        if blocked is not None or final is None or not final.groups:
            continue
        if where is not None:
            p, at = where
            key = position_key(at)
            if all(g.committed.get(p, -1) > key for g in final.groups):
                names = ", ".join(f"{g.name} committed {_show(g.raw, p)}" for g in final.groups)
                v.proof[e] = f"source partition {p} position {at} is before the final committed position ({names})"
                continue
        if final.caught_up and ack_ns[e] <= final.time_ns:
            v.proof[e] = "the pipeline had caught up (lag 0 on every source partition) and it is still missing"
    if v.proof:
        v.lost[np.array(list(v.proof), np.int64)] = True
    v.unseen = missing & ~v.lost
    v.blocked, v.final = blocked, final
    if v.unseen.any():
        v.reason = unseen_reason(v, int(np.count_nonzero(v.unseen)))
    return v


def unseen_reason(v: Verdict, n: int) -> str:
    """Why `n` acknowledged events missing from the final read are unseen rather than lost, in
    one line, from what `judge` found (`v`: its blocked sink, final progress and stall, which
    depend on the history's progress records only). Also used by the partitioned check, which
    knows `n` only once every partition is judged."""
    blocked, final = v.blocked, v.final
    if blocked is not None:
        reason = blocked_reason(blocked)
        if v.stall is not None and v.stall["state"] != "caught-up":
            reason += "; and " + _stall_reason(v.stall)
        return reason
    if final is None or not final.groups:
        note = final.note if final is not None and final.note else "no progress was recorded"
        return (f"progress unknown: {note}; {n:,} acknowledged events missing from the final read "
                "cannot be told lost or late")
    if v.stall is not None and v.stall["state"] != "caught-up":
        return _stall_reason(v.stall)
    return f"{n:,} acknowledged events missing have no known source position"


def _show(raw: dict[str, Any], partition: int) -> Any:
    for p, c, _ in raw.get("partitions") or []:
        if int(p) == partition:
            return c
    return -1
