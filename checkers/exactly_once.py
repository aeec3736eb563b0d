"""The exactly-once checker: every event's effect is in the sink exactly once.

Input: a History (checkers.history) with `send` operations, sink `observe`s made while
the run went on, and a `final-read` after quiescence. Output (JSON-serialisable):
`valid` in {True, False, "unknown"}, a count per anomaly of DESIGN.md, up to
`examples` examples per anomaly with the history records that prove it, and stats.

Rules: an `ok` send must be applied exactly once; an `info` send (or one with no
completion) 0 or 1 times; a `fail` send never. An `ok` send missing from the final read is
`lost` only when the pipeline's own progress proves it (checkers/progress.py), else `unseen`:
no anomaly, but the verdict is "unknown" with the reason (`reason`, `unseen`, `stall` in the
result). Histories without progress records judge `lost` by the final read alone (a note
says so). Nothing acknowledged or nothing read from the sink -> "unknown" (vacuous), never
valid; no final read (a run cut short) and no anomaly -> "unknown". `reason` says in one line
why a verdict is unknown: the unseen events, "vacuous run: ...", or "no final read ...".
Everything is computed on numpy columns indexed by event number (eid), so a 10M-record
history costs a few array passes.
"""
from __future__ import annotations

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

_NONE = np.int64(-1)


def check(history: History, *, order: str | None = None, examples: int = 10) -> dict[str, Any]:
    """Check a history for exactly-once delivery. `order="per-key"` also checks per-key order
    (default: what the run's `start` record says)."""
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
    else:
        fulls = np.flatnonzero(h.obs_full)
        since = int(fulls[-1]) if len(fulls) else 0
        content_mask = h.eff_obs >= since
        if n_obs:
            notes.append("no final-read (the run did not finish): the sink's content is the latest full "
                         "observe plus the incremental ones after it; lost events cannot be proven")
    content = h.eff_eid[content_mask]
    applied = np.bincount(content, minlength=n_ev) if n_ev else np.zeros(0, np.int64)

    # -- anomalies, one boolean mask per kind over events
    masks: dict[str, np.ndarray] = {}
    missing = (comp_type == OK) & (applied == 0) if has_final else np.zeros(n_ev, bool)
    judged: progress_rule.Verdict | None = None
    if progress_rule.has_progress(h):
        ack_ns = np.full(n_ev, np.iinfo(np.int64).max, np.int64)
        ack_ns[has_comp] = h.time[comp_rec[has_comp]]
        judged = progress_rule.judge(h, missing, ack_ns)
        masks["lost"] = judged.lost
    else:
        masks["lost"] = missing
        if has_final:
            notes.append("no progress records (a history from before onceproof observed the pipeline's "
                         "progress): `lost` is judged by the final read alone, so a stalled pipeline "
                         "shows as lost")
    masks["duplicate"] = applied > 1
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
    state_bad, state_examples = _state(h, content, n_ev)

    counts = {k: int(np.count_nonzero(m)) for k, m in masks.items()}
    counts["state-mismatch"] = len(state_bad)
    counts = {k: counts[k] for k in KINDS}

    # -- verdict
    n_reads = n_obs
    vacuous = []
    if n_ok == 0:
        vacuous.append("no send was acknowledged")
    if n_reads == 0:
        vacuous.append("the sink was never read")
    elif len(h.eff_eid) == 0:
        vacuous.append("nothing was ever seen in the sink")
    if vacuous:  # DESIGN: nothing acknowledged or nothing seen -> no verdict, whatever else
        valid: bool | str = "unknown"
        notes.append("vacuous: " + " and ".join(vacuous) + "; nothing can be concluded")
    elif any(counts.values()):
        valid = False
    elif not has_final:
        valid = "unknown"
    elif judged is not None and judged.unseen.any():
        valid = "unknown"
    else:
        valid = True
    n_unseen = int(np.count_nonzero(judged.unseen)) if judged is not None else 0
    reason = judged.reason if judged is not None and n_unseen else ""
    if reason:
        notes.insert(0, f"{n_unseen:,} acknowledged events unseen (not lost, not proven applied): {reason}")
    # why there is no verdict, in one line (results, junit, the report)
    if vacuous:
        reason = "vacuous run: " + " and ".join(vacuous)
    elif valid == "unknown" and not has_final:
        reason = "no final read (the run did not finish): lost events cannot be proven" + (
            f"; {reason}" if reason else "")
    if order != "per-key":
        notes.append("per-key order not checked (the plan does not ask for it)")
    if not h.state_recs:
        notes.append("no derived state declared: state not checked")

    # -- latency: ack -> first seen (measured by perf; kept in the stats of `onceproof check`)
    latency = perf.latency_ms(h)

    ctx = _Examples(h, invoke_rec, comp_rec, missing_from, reorder_after, applied, judged)
    ex: dict[str, list[dict[str, Any]]] = {}
    chosen = {k: np.flatnonzero(masks[k])[:examples] for k in KINDS if k != "state-mismatch"}
    ctx.load_sightings(np.concatenate(list(chosen.values())) if chosen else np.zeros(0, np.int64))
    for kind, eids in chosen.items():
        ex[kind] = [ctx.example(kind, int(e)) for e in eids]
    ex["state-mismatch"] = state_examples[:examples]
    unseen_examples = []
    if judged is not None:
        for e in np.flatnonzero(judged.unseen)[:examples].tolist():
            where = judged.positions.get(e)
            unseen_examples.append({"id": h.event_ids[e], "key": ctx._key(e), "seq": ctx._seq(e),
                                    "partition": where[0] if where else None,
                                    "position": where[1] if where else None})

    return {
        "valid": valid,
        "anomalies": counts,
        "unseen": n_unseen,
        "reason": reason,
        "stall": judged.stall if judged is not None else None,
        "unseen_examples": unseen_examples,
        "examples": ex,
        "stats": {
            "events": n_ev,
            "sends": {"ok": n_ok, "fail": n_fail, "info": n_info},
            "unfinished_sends": int(np.count_nonzero(unfinished)),
            "applied": int(np.count_nonzero(applied)),
            "effects": int(len(content)),
            "observations": n_obs,
            "final_read": bool(has_final),
            "latency_ms": latency,
            "records": len(h),
        },
        "order": order,
        "vacuous": bool(vacuous),
        "notes": notes,
    }


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


def _state(h: History, content: np.ndarray, n_ev: int) -> tuple[list[str], list[dict[str, Any]]]:
    """Compare the last declared derived state with the fold of the applied events (each once)."""
    if not h.state_recs:
        return [], []
    rec = h.record(h.state_recs[-1])
    declared = rec.get("value") or {}
    if not isinstance(declared, dict):
        return [], []
    distinct = np.unique(content) if len(content) else np.zeros(0, np.int64)
    keys = h.event_key[distinct]
    known = keys >= 0
    count = np.bincount(keys[known], minlength=len(h.key_names))
    total = np.bincount(keys[known], weights=np.maximum(h.event_seq[distinct][known], 0),
                        minlength=len(h.key_names))
    key_code = {k: i for i, k in enumerate(h.key_names)}
    bad: list[str] = []
    examples: list[dict[str, Any]] = []
    for key in sorted(set(declared) | {h.key_names[i] for i in np.flatnonzero(count)}):
        got = declared.get(key) or {}
        code = key_code.get(key)
        want = {"count": int(count[code]) if code is not None else 0,
                "sum": int(total[code]) if code is not None else 0}
        fields = ("count", "sum") if key not in declared else [f for f in ("count", "sum") if f in got]
        diff = {f: (want[f], got.get(f, 0)) for f in fields if got.get(f, 0) != want[f]}
        if diff:
            bad.append(key)
            examples.append({
                "id": None, "key": key, "seq": None,
                "why": f"{WHY['state-mismatch']}: key {key}: " + ", ".join(
                    f"{f} is {g} in the sink, {w} by the events applied" for f, (w, g) in diff.items()),
                "expected": want, "declared": got, "records": [rec]})
    return bad, examples


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
        n_total = int(np.count_nonzero(h.eff_obs == obs))
        return {"index": rec, "time": int(h.time[rec]), "process": h.process_names[h.process[rec]],
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
