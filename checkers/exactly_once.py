"""The exactly-once checker: every event's effect is in the sink exactly once.

Input: a History (checkers.history) with `send` operations, sink `observe`s made while
the run went on, and a `final-read` after quiescence. Output (JSON-serialisable):
`valid` in {True, False, "unknown"}, a count per anomaly of DESIGN.md, up to
`examples` examples per anomaly with the history records that prove it, and stats.

Rules: an `ok` send must be applied exactly once; an `info` send (or one with no
completion) 0 or 1 times; a `fail` send never. An `ok` send missing from the final read is
`lost` only when the pipeline's own progress proves it (checkers/progress.py), else `unseen`:
no anomaly, but the verdict is "unknown" with the reason (`reason`, `unseen`, `stall` in the
result; `stall` is None when the pipeline caught up). Histories without progress records judge `lost` by the final read alone (a note
says so). Nothing acknowledged or nothing read from the sink -> "unknown" (vacuous), never
valid; no final read (a run cut short) and no anomaly -> "unknown". `reason` says in one line
why a verdict is unknown: the unseen events, "vacuous run: ...", or "no final read ...".
Everything is computed on numpy columns indexed by event number (eid), so a 10M-record
history costs a few array passes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onceproof.checkers import perf
from onceproof.checkers import progress as progress_rule
from onceproof.checkers.history import FAIL, INFO, INVOKE, OK, History

KINDS = ("lost", "duplicate", "phantom", "premature", "flicker", "reorder", "state-mismatch")

WHY = {
    "lost": "acknowledged to the producer, never applied by the end",
    "duplicate": "applied more than once",
    "phantom": "applied, but never sent, or its send certainly failed",
    "premature": "seen in the sink before its send was invoked",
    "flicker": "seen in the sink, later missing from a complete read: a visible effect rolled back",
    "reorder": "applied after a later seq of the same key",
    "state-mismatch": "derived state differs from the fold of the events applied",
}

# the `lost` of an event some read saw in the sink (a row deleted, a visible effect rolled back)
SEEN_LOST = "acknowledged to the producer, seen in the sink, then missing from the final read"

_NONE = np.int64(-1)


@dataclass
class Partial:
    """What `partial` found in one history, or in one partition of a history's events
    (checkers/partitioned.py): per-event totals that add up over partitions, example candidates
    (eid, example) in order of first appearance, the per-key fold of the applied events, the
    sorted ack -> first-seen latencies; and the global facts every partition sees alike (they
    depend only on the records that are not sends: observations, progress, state, start)."""

    # global: the same in every partition
    order: str | None
    notes: list[str]  # notes made before the per-event rules, in order
    has_final: bool
    n_obs: int
    progress: bool  # the history has progress records (lost judged by progress_rule)
    records: int
    state_rec: dict[str, Any] | None  # the last ok state record, when it declares a dict
    state_declared: dict[str, Any] | None
    # per partition: sums
    n_ev: int
    n_ok: int
    n_fail: int
    n_info: int
    unfinished: int
    applied: int
    effects: int  # effects in the sink's content
    seen_effects: int  # every effect of every read
    counts: dict[str, int]  # per kind but state-mismatch
    n_unseen: int
    judged: progress_rule.Verdict | None
    candidates: dict[str, list[tuple[int, dict[str, Any]]]]  # kind -> [(eid, example)] first `examples`
    unseen_candidates: list[tuple[int, dict[str, Any]]]
    key_names: list[str]
    state_count: np.ndarray  # per key code: distinct events applied (int64)
    state_total: np.ndarray  # per key code: sum of their seqs (float64, as np.bincount gives)
    latency_ns: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # sorted, ack -> first seen
    final_error: str | None = None  # global: the error of a failed final read, when there is no final read
    plan_state: bool | None = None  # global: whether the run's plan declares derived state (its start record)


def check(history: History, *, order: str | None = None, examples: int = 10) -> dict[str, Any]:
    """Check a history for exactly-once delivery. `order="per-key"` also checks per-key order
    (default: what the run's `start` record says). The same as `finish([partial(history)])`; the
    partitioned check (checkers/partitioned.py) calls `partial` per partition instead."""
    p = partial(history, order=order, examples=examples)
    return finish([p], examples=examples)


def _final_read_error(h: History) -> str | None:
    """The error of the run's last failed final read (e.g. a sink mapping naming a column the
    table lacks), or None: a run without a final read either failed it or was cut short."""
    code = h.f_code("final-read")
    if code < 0:
        return None
    failed = np.flatnonzero((h.f == code) & (h.type == FAIL))
    if not len(failed):
        return None
    value = h.record(int(failed[-1])).get("value") or {}
    return str(value.get("error") or "unknown error")[:300]


def _source_copies(h: History, n_ev: int, notes: list[str]) -> np.ndarray:
    """Per event, how many applications are not a duplicate: 1, or the number of records the
    event has in the source when the run counted more (a `source-copies` record: the load's
    producer wrote it twice, harness/source_copies.py); a pipeline that processes each source
    record once is then not accused. The note is the same in every partition of a history."""
    allowed = np.ones(n_ev, np.int64)
    code = h.f_code("source-copies")
    if code < 0:
        return allowed
    copies: dict[str, int] = {}
    for rec in h.records(np.flatnonzero(h.f == code)):
        copies.update((rec.get("value") or {}).get("copies") or {})
    if copies:
        index = {eid: i for i, eid in enumerate(h.event_ids)}
        for eid, n in copies.items():
            i = index.get(eid)
            if i is not None:
                allowed[i] = max(1, int(n))
        notes.append(f"{len(copies):,} events were written to the source more than once by the load's producer "
                     "(its idempotence holds within one producer epoch only): an event applied as many times as "
                     "it is in the source is not a duplicate")
    return allowed


def partial(history: History, *, order: str | None = None, examples: int = 10) -> Partial:
    """The per-event part of the check of `history` (all its events, or one partition of them):
    see `Partial`. `order` as in `check`."""
    h = history
    notes: list[str] = list(h.warnings)
    if order is None and h.start:
        order = h.start.get("order")
    n_ev = len(h.event_ids)

    # -- sends: per event, its invoke and its completion
    s_type = h.type[h.send_rec]
    invoke_rec = np.full(n_ev, _NONE, np.int64)
    comp_rec = np.full(n_ev, _NONE, np.int64)
    inv = s_type == INVOKE
    _first_wins(invoke_rec, h.send_eid[inv], h.send_rec[inv])
    comp = ~inv
    comp_rec[h.send_eid[comp]] = h.send_rec[comp]  # the last completion wins
    sent = (invoke_rec >= 0) | (comp_rec >= 0)
    comp_type = np.full(n_ev, -1, np.int8)
    has_comp = comp_rec >= 0
    comp_type[has_comp] = h.type[comp_rec[has_comp]]
    unfinished = sent & ~has_comp  # no completion: the run was cut, counts as info
    n_ok = int(np.count_nonzero(comp_type == OK))
    n_fail = int(np.count_nonzero(comp_type == FAIL))
    n_info = int(np.count_nonzero(comp_type == INFO)) + int(np.count_nonzero(unfinished))

    # -- sink reads
    obs_time = h.time[h.obs_rec]
    n_obs = len(h.obs_rec)
    first_obs = np.full(n_ev, np.iinfo(np.int32).max, np.int32)
    if len(h.eff_eid):
        np.minimum.at(first_obs, h.eff_eid, h.eff_obs)
    seen = first_obs < np.iinfo(np.int32).max
    first_seen = np.full(n_ev, _NONE, np.int64)
    first_seen[seen] = obs_time[first_obs[seen]]

    finals = np.flatnonzero(h.obs_final)
    has_final = len(finals) > 0
    if has_final:
        content_mask = h.eff_obs == finals[-1]
        if len(finals) > 1:
            notes.append(f"{len(finals)} final reads; the last one is the sink's content")
    final_error = None if has_final else _final_read_error(h)
    if not has_final:
        fulls = np.flatnonzero(h.obs_full)
        since = int(fulls[-1]) if len(fulls) else 0
        content_mask = h.eff_obs >= since
        if n_obs:
            why = f"the final read failed: {final_error}" if final_error else "the run did not finish"
            notes.append(f"no final read ({why}): the sink's content is the latest full "
                         "observe plus the incremental ones after it; lost events cannot be proven")
    content = h.eff_eid[content_mask]
    applied = np.bincount(content, minlength=n_ev) if n_ev else np.zeros(0, np.int64)

    # -- anomalies, one boolean mask per kind over events
    masks: dict[str, np.ndarray] = {}
    missing = (comp_type == OK) & (applied == 0) if has_final else np.zeros(n_ev, bool)
    judged: progress_rule.Verdict | None = None
    progress = progress_rule.has_progress(h)
    if progress:
        ack_ns = np.full(n_ev, np.iinfo(np.int64).max, np.int64)
        ack_ns[has_comp] = h.time[comp_rec[has_comp]]
        judged = progress_rule.judge(h, missing, ack_ns)
        masks["lost"] = judged.lost
    else:
        masks["lost"] = missing
        if has_final and progress_rule.progress_unread(h):
            notes.append("the pipeline's progress could not be read (every progress read failed; see the "
                         "run's notes): `lost` is judged by the final read alone, so a stalled pipeline "
                         "shows as lost")
        elif has_final:
            notes.append("no progress records (a history from before onceproof observed the pipeline's "
                         "progress): `lost` is judged by the final read alone, so a stalled pipeline "
                         "shows as lost")
    allowed = _source_copies(h, n_ev, notes)
    masks["duplicate"] = applied > allowed
    masks["phantom"] = (seen | (applied > 0)) & ((invoke_rec < 0) | (comp_type == FAIL))
    inv_time = np.full(n_ev, _NONE, np.int64)
    has_inv = invoke_rec >= 0
    inv_time[has_inv] = h.time[invoke_rec[has_inv]]
    masks["premature"] = seen & has_inv & (first_seen < inv_time)
    masks["flicker"], missing_from = _flicker(h, first_obs, n_ev)
    reorder_after = np.full(n_ev, _NONE, np.int64)
    if order == "per-key":
        masks["reorder"], reorder_after = _reorder(h, content, n_ev)
    else:
        masks["reorder"] = np.zeros(n_ev, bool)
    state_rec, declared = _declared_state(h)
    state_count, state_total = _state_fold(h, content) if declared is not None else (
        np.zeros(0, np.int64), np.zeros(0, np.float64))

    counts = {k: int(np.count_nonzero(m)) for k, m in masks.items()}

    # -- latency: ack -> first seen (as perf.ack_latencies), kept sorted for an exact merge
    never = np.iinfo(np.int64).max
    t_first = np.full(n_ev, never, np.int64)  # the earliest time seen (reads need not be in time order)
    if len(h.eff_eid):
        np.minimum.at(t_first, h.eff_eid, h.effect_times(inv_time))  # when each became visible (a commit time), else its read
    both = (comp_type == OK) & (t_first != never)
    lat_ns = np.sort(np.maximum(t_first[both] - h.time[comp_rec[both]], 0))
    del t_first

    ctx = _Examples(h, invoke_rec, comp_rec, missing_from, reorder_after, applied, judged)
    chosen = {k: np.flatnonzero(masks[k])[:examples] for k in KINDS if k != "state-mismatch"}
    ctx.load_sightings(np.concatenate(list(chosen.values())) if chosen else np.zeros(0, np.int64))
    candidates = {kind: [(int(e), ctx.example(kind, int(e))) for e in eids] for kind, eids in chosen.items()}
    unseen_candidates = []
    n_unseen = 0
    if judged is not None:
        n_unseen = int(np.count_nonzero(judged.unseen))
        for e in np.flatnonzero(judged.unseen)[:examples].tolist():
            where = judged.positions.get(e)
            unseen_candidates.append((e, {"id": h.event_ids[e], "key": ctx._key(e), "seq": ctx._seq(e),
                                          "partition": where[0] if where else None,
                                          "position": where[1] if where else None}))
    return Partial(
        order=order, notes=notes, has_final=bool(has_final), n_obs=n_obs, progress=progress,
        records=len(h), state_rec=state_rec, state_declared=declared,
        n_ev=n_ev, n_ok=n_ok, n_fail=n_fail, n_info=n_info, unfinished=int(np.count_nonzero(unfinished)),
        applied=int(np.count_nonzero(applied)), effects=int(len(content)), seen_effects=int(len(h.eff_eid)),
        counts=counts, n_unseen=n_unseen, judged=judged, candidates=candidates,
        unseen_candidates=unseen_candidates, key_names=list(h.key_names), state_count=state_count,
        state_total=state_total, latency_ns=lat_ns, final_error=final_error,
        plan_state=h.start.get("state") if isinstance(h.start, dict) else None)


def finish(parts: list[Partial], *, examples: int = 10,
           first_at: list[Any] | None = None) -> dict[str, Any]:
    """The result of `check` from the partials of the partitions of one history's events
    (one partial: the whole history). `first_at[i][eid]`: where partition i's event eid first
    appears in the whole history (any increasing number; default: the eid itself), so that the
    examples kept are the first `examples` of each kind in the history, whatever the partitions.
    Raises ValueError for no partials."""
    if not parts:
        raise ValueError("finish() needs at least one partial")
    g = parts[0]
    order = g.order
    notes = list(g.notes)
    has_final = g.has_final

    def total(name: str) -> int:
        return sum(int(getattr(p, name)) for p in parts)

    n_ok, n_eff = total("n_ok"), total("seen_effects")
    counts = {k: sum(p.counts[k] for p in parts) for k in KINDS if k != "state-mismatch"}
    state_examples = _state_compare(parts)
    counts["state-mismatch"] = len(state_examples)
    counts = {k: counts[k] for k in KINDS}

    if n_ok and counts["lost"] >= n_ok and counts["phantom"]:  # not one sent id in the sink, yet ids there
        notes.append(f"none of the {n_ok:,} acknowledged events is in the sink, which holds {counts['phantom']:,} ids "
                     "that were never sent: the sink's ids do not look like the events' ids; is the sink mapping "
                     "right? (a query's columns go by position: id, key, seq)")
    n_info = total("n_info")
    if n_ok and n_info > n_ok:  # found on docker: a broker down for most of a run, VALID on 10% of the load
        n_sends = n_ok + total("n_fail") + n_info
        notes.append(f"only {n_ok:,} of {n_sends:,} sends were acknowledged ({100 * n_ok / n_sends:.0f}%); "
                     f"{n_info:,} got no answer (info), so the verdict rests on the acknowledged ones: was a "
                     "target unreachable for most of the run? (see the faults and logs/)")
    # -- verdict
    n_reads = g.n_obs
    vacuous = []
    if n_ok == 0:
        vacuous.append("no send was acknowledged")
    if n_reads == 0:
        vacuous.append("the sink was never read")
    elif n_eff == 0:
        vacuous.append("nothing was ever seen in the sink")
    n_unseen = total("n_unseen")
    if vacuous:  # DESIGN: nothing acknowledged or nothing seen -> no verdict, whatever else
        valid: bool | str = "unknown"
        notes.append("vacuous run: " + " and ".join(vacuous) + "; nothing can be concluded")
    elif any(counts.values()):
        valid = False
    elif not has_final:
        valid = "unknown"
    elif n_unseen:
        valid = "unknown"
    else:
        valid = True
    judged = next((p.judged for p in parts if p.n_unseen), None)
    reason = progress_rule.unseen_reason(judged, n_unseen) if judged is not None else ""
    if reason:
        notes.insert(0, f"{n_unseen:,} acknowledged events unseen (not lost, not proven applied): {reason}")
    # why there is no verdict, in one line (results, junit, the report)
    if vacuous:
        reason = "vacuous run: " + " and ".join(vacuous)
    elif valid == "unknown" and not has_final:
        why = f"the final read failed: {g.final_error}" if g.final_error else "the run did not finish"
        reason = f"no final read ({why}): lost events cannot be proven" + (f"; {reason}" if reason else "")
    if order != "per-key":
        notes.append("per-key order not checked (the plan does not ask for it)")
    if g.state_rec is None:  # a run that stops early never reads the state its plan declares
        declared_unread = g.plan_state if g.plan_state is not None else not has_final
        notes.append("no derived state read (the run did not finish): state not checked" if declared_unread
                     and not has_final else "no derived state declared: state not checked")

    def first(cands: list[list[tuple[int, dict[str, Any]]]]) -> list[dict[str, Any]]:
        keyed = [(int(first_at[i][e]) if first_at is not None else e, ex)
                 for i, c in enumerate(cands) for e, ex in c]
        keyed.sort(key=lambda r: r[0])
        return [ex for _, ex in keyed[:examples]]

    ex = {kind: first([p.candidates[kind] for p in parts]) for kind in KINDS if kind != "state-mismatch"}
    ex["state-mismatch"] = state_examples[:examples]
    stall = g.judged.stall if g.judged is not None else None
    if stall is not None and stall.get("state") == "caught-up":
        stall = None  # nothing stalled: a filled `stall` read as one (found by a new user)
    return {
        "valid": valid,
        "anomalies": counts,
        "unseen": n_unseen,
        "reason": reason,
        "stall": stall,
        "unseen_examples": first([p.unseen_candidates for p in parts]),
        "examples": ex,
        "stats": {
            "events": total("n_ev"),
            "sends": {"ok": n_ok, "fail": total("n_fail"), "info": total("n_info")},
            "unfinished_sends": total("unfinished"),
            "applied": total("applied"),
            "effects": total("effects"),
            "observations": g.n_obs,
            "final_read": bool(has_final),
            "latency_ms": latency_summary([p.latency_ns for p in parts]),
            "records": g.records,
        },
        "order": order,
        "vacuous": bool(vacuous),
        "notes": notes,
    }


def latency_summary(sorted_ns: list[np.ndarray]) -> dict[str, Any]:
    """perf.latency_summary of the latencies in ms of several sorted int64 ns arrays taken as
    one, without joining them: each order statistic is found by bisection on the value, with
    `np.searchsorted` in each array (arrays may be np.memmap: a few pages are read). The
    percentiles are numpy's default ("linear", Hyndman & Fan type 7), computed as numpy does,
    so the result equals `perf.latency_summary(np.concatenate(arrays) / 1e6)`."""
    arrays = [a for a in sorted_ns if len(a)]
    n = sum(len(a) for a in arrays)
    if not n:
        return perf.latency_summary(np.zeros(0))
    if len(arrays) == 1:
        return perf.latency_summary(np.asarray(arrays[0]) / 1e6)
    lo_all = min(int(a[0]) for a in arrays)
    hi_all = max(int(a[-1]) for a in arrays)

    def kth(k: int) -> int:  # the k-th smallest (0-based)
        lo, hi = lo_all, hi_all
        while lo < hi:
            mid = (lo + hi) // 2
            if sum(int(np.searchsorted(a, mid, side="right")) for a in arrays) > k:
                hi = mid
            else:
                lo = mid + 1
        return lo

    q = np.true_divide(np.asarray([50, 90, 99], np.float64), 100)
    virtual = n * q + (1 + q * (1 - 1 - 1)) - 1  # numpy's _compute_virtual_index, alpha = beta = 1
    prev = np.floor(virtual)
    gamma = virtual - prev
    prev_i = np.clip(prev.astype(np.int64), 0, n - 1)
    next_i = np.clip(prev_i + 1, 0, n - 1)
    a = np.array([kth(int(i)) for i in prev_i], np.float64) / 1e6
    b = np.array([kth(int(i)) for i in next_i], np.float64) / 1e6
    diff = b - a
    vals = a + diff * gamma  # numpy's _lerp
    vals = np.where(gamma >= 0.5, b - diff * (1 - gamma), vals)
    mx = hi_all / 1e6
    return {"p50": round(float(vals[0]), 3), "p90": round(float(vals[1]), 3), "p99": round(float(vals[2]), 3),
            "max": round(float(mx), 3), "n": int(n)}


def _first_wins(target: np.ndarray, idx: np.ndarray, values: np.ndarray) -> None:
    # fancy assignment keeps the last of repeated indices: assign reversed so the first wins
    target[idx[::-1]] = values[::-1]


def _flicker(h: History, first_obs: np.ndarray, n_ev: int) -> tuple[np.ndarray, np.ndarray]:
    """Events seen in some read and missing from a later complete (full) read."""
    flicker = np.zeros(n_ev, bool)
    missing_from = np.full(n_ev, _NONE, np.int64)  # the first full read it is missing from
    for f in np.flatnonzero(h.obs_full).tolist():
        present = np.zeros(n_ev, bool)
        present[h.eff_eid[h.eff_obs == f]] = True
        gone = (first_obs < f) & ~present
        new = gone & ~flicker
        missing_from[new] = f
        flicker |= gone
    return flicker, missing_from


def _reorder(h: History, content: np.ndarray, n_ev: int) -> tuple[np.ndarray, np.ndarray]:
    """In sink order, per key: an event whose seq is below a seq already applied for its key.
    Only the first application of each event counts (a replayed copy is a duplicate)."""
    bad = np.zeros(n_ev, bool)
    after = np.full(n_ev, _NONE, np.int64)
    if not len(content):
        return bad, after
    _, first_pos = np.unique(content, return_index=True)
    first_pos.sort()
    eids = content[first_pos]
    keys = h.event_key[eids].astype(np.int64)
    seqs = h.event_seq[eids]
    ok = (keys >= 0) & (seqs >= 0)
    eids, keys, seqs = eids[ok], keys[ok], seqs[ok]
    by_key = np.argsort(keys, kind="stable")  # sink order kept within a key
    eids, keys, seqs = eids[by_key], keys[by_key], seqs[by_key]
    combined = (keys << 32) + seqs
    run_max = np.maximum.accumulate(combined)
    late = combined < run_max
    bad[eids[late]] = True
    # which event it came after: the one holding the running max
    holder = np.maximum.accumulate(np.where(combined == run_max, np.arange(len(eids)), 0))
    after[eids[late]] = eids[holder[late]]
    return bad, after


def _declared_state(h: History) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the last ok state record, its value) when it declares a dict, else (None or the record, None)."""
    if not h.state_recs:
        return None, None
    rec = h.record(h.state_recs[-1])
    declared = rec.get("value") or {}
    if not isinstance(declared, dict):
        return rec, None
    return rec, declared


def _state_fold(h: History, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per key code: how many distinct events were applied and the sum of their seqs."""
    distinct = np.unique(content) if len(content) else np.zeros(0, np.int64)
    keys = h.event_key[distinct]
    known = keys >= 0
    count = np.bincount(keys[known], minlength=len(h.key_names))
    total = np.bincount(keys[known], weights=np.maximum(h.event_seq[distinct][known], 0),
                        minlength=len(h.key_names))
    return count, total


def _state_compare(parts: list[Partial]) -> list[dict[str, Any]]:
    """Compare the last declared derived state with the fold of the applied events (each once),
    the folds of all partitions added up by key name."""
    g = parts[0]
    rec, declared = g.state_rec, g.state_declared
    if rec is None or declared is None:
        return []
    count: dict[str, int] = {}
    total: dict[str, float] = {}
    for p in parts:
        for i in np.flatnonzero(p.state_count).tolist():
            k = p.key_names[i]
            count[k] = count.get(k, 0) + int(p.state_count[i])
            total[k] = total.get(k, 0.0) + float(p.state_total[i])
    examples: list[dict[str, Any]] = []
    for key in sorted(set(declared) | set(count)):
        got = declared.get(key) or {}
        want = {"count": count.get(key, 0), "sum": int(total.get(key, 0))}
        fields = ("count", "sum") if key not in declared else [f for f in ("count", "sum") if f in got]
        diff = {f: (want[f], got.get(f, 0)) for f in fields if got.get(f, 0) != want[f]}
        if diff:
            examples.append({
                "id": None, "key": key, "seq": None,
                "why": f"{WHY['state-mismatch']}: key {key}: " + ", ".join(
                    f"{f} is {g_} in the sink, {w} by the events applied" for f, (w, g_) in diff.items()),
                "expected": want, "declared": got, "records": [rec]})
    return examples


class _Examples:
    """Builds examples: the records that prove an anomaly, trimmed to the event in question."""

    def __init__(self, h: History, invoke_rec: np.ndarray, comp_rec: np.ndarray, missing_from: np.ndarray,
                 reorder_after: np.ndarray, applied: np.ndarray,
                 judged: progress_rule.Verdict | None = None) -> None:
        self.h, self.invoke_rec, self.comp_rec = h, invoke_rec, comp_rec
        self.judged = judged
        self.missing_from, self.reorder_after, self.applied = missing_from, reorder_after, applied
        self.sightings: dict[int, list[int]] = {}

    def load_sightings(self, eids: np.ndarray) -> None:
        h = self.h
        extra = self.reorder_after[eids]
        wanted = np.unique(np.concatenate([eids, extra[extra >= 0]]))
        hits = np.flatnonzero(np.isin(h.eff_eid, wanted))
        for i in hits.tolist():
            self.sightings.setdefault(int(h.eff_eid[i]), []).append(int(h.eff_obs[i]))

    def _observation(self, obs: int, eid: int) -> dict[str, Any]:
        h = self.h
        rec = int(h.obs_rec[obs])
        times = self.sightings.get(eid, []).count(obs)
        ev = [h.event_ids[eid], self._key(eid), self._seq(eid)]
        n_total = int(h.obs_total[obs]) if h.obs_total is not None else int(np.count_nonzero(h.eff_obs == obs))
        index = int(h.rec_global[rec]) if h.rec_global is not None else rec
        return {"index": index, "time": int(h.time[rec]), "process": h.process_names[h.process[rec]],
                "type": "ok", "f": h.f_names[h.f[rec]],
                "value": {"full": bool(h.obs_full[obs]), "events": [ev] * times,
                          "events_total": n_total, "trimmed": True}}

    def _key(self, eid: int) -> str | None:
        k = int(self.h.event_key[eid])
        return self.h.key_names[k] if k >= 0 else None

    def _seq(self, eid: int) -> int | None:
        s = int(self.h.event_seq[eid])
        return s if s >= 0 else None

    def rows(self, eid: int) -> list[tuple[int, dict[str, Any]]]:
        """(record number, record) of the records that concern event `eid`, in file order (the
        record number orders them: a record's own `index` may be absent)."""
        h = self.h
        recs = [int(r) for r in (self.invoke_rec[eid], self.comp_rec[eid]) if r >= 0]
        out = [(r, h.record(r)) for r in recs]
        out += [(int(h.obs_rec[o]), self._observation(o, eid)) for o in sorted(set(self.sightings.get(eid, [])))]
        out.sort(key=lambda r: r[0])
        return out

    def example(self, kind: str, eid: int) -> dict[str, Any]:
        h = self.h
        why = WHY[kind]
        recs = self.rows(eid)
        if kind == "lost" and self.sightings.get(eid):  # not "never applied": applied, then removed
            why = SEEN_LOST
        if kind == "lost" and self.judged is not None and eid in self.judged.proof:
            why += f": {self.judged.proof[eid]}"
            recs = sorted(recs + [(int(r), h.record(int(r))) for r in self.judged.proof_recs], key=_first)
        elif kind == "duplicate":
            why += f": {int(self.applied[eid])} times in the final read"
        elif kind == "phantom":
            why += (": its send failed" if self.comp_rec[eid] >= 0 and h.type[self.comp_rec[eid]] == FAIL
                    else ": no send of this id")
        elif kind == "flicker":
            f = int(self.missing_from[eid])
            missing = self._observation(f, eid)
            missing["value"]["events"] = []
            recs = sorted(recs + [(int(h.obs_rec[f]), missing)], key=_first)
            why += f": missing from the complete read at time {missing['time']}"
        elif kind == "reorder":
            other = int(self.reorder_after[eid])
            if other >= 0:
                why += f": seq {self._seq(eid)} applied after seq {self._seq(other)} ({h.event_ids[other]})"
                recs = sorted(recs + self.rows(other), key=_first)
        elif kind == "premature":
            why += f": invoked at {int(h.time[self.invoke_rec[eid]])}"
        return {"id": h.event_ids[eid], "key": self._key(eid), "seq": self._seq(eid), "why": why,
                "records": [r for _, r in recs]}


def _first(row: tuple[int, dict[str, Any]]) -> int:
    return row[0]
