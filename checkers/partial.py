"""The `partial` checker: with several sinks in one run, an event's effect must be in ALL of
them or in NONE (atomicity across stores, the promise of a two-phase commit: Gray & Reuter,
"Transaction Processing", ch. 10; Bernstein et al., "Concurrency Control and Recovery", ch. 7).

Input: a History whose workload sink has a `final-read` and whose other sinks each have a
`sink-content` record (process observer, type ok, value `{"sink": "<kind>:<name>", "events":
[[id, key, seq, replica], ...]}`, the complete content after quiescence; the last one per sink
counts). Output (JSON-serialisable, like checkers.exactly_once): `valid` (True, False or
"unknown"), `anomalies` {"partial": n}, `examples` {"partial": [...]} with the records that
prove each (its send, and each sink's content trimmed to the event), `sinks` {name: distinct
ids}, `reason` when unknown.

Rules: an id present in at least one sink's final content and absent from another's is
`partial`. Without a second sink's content, or without the workload sink's final read, there is
nothing to compare: "unknown" with the reason. Nothing in any sink: "unknown" (vacuous).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from onceproof.checkers.history import OK, History

F_CONTENT = "sink-content"
MAIN = "workload sink"
WHY = "applied in some of the run's sinks, not in all"


def check(history: History, *, main: str = MAIN, examples: int = 10) -> dict[str, Any]:
    """Check that each event is in all the run's sinks or in none. `main` names the workload's
    sink (whose content is its last final-read) in examples."""
    h = history
    extras: dict[str, tuple[int, set[str]]] = {}
    code = h.f_code(F_CONTENT)
    if code >= 0:
        for i in np.flatnonzero((h.f == code) & (h.type == OK)).tolist():
            value = h.record(i).get("value") or {}
            if isinstance(value, dict) and isinstance(value.get("events"), list):
                ids = {str(e[0]) for e in value["events"] if isinstance(e, list) and e}
                extras[str(value.get("sink"))] = (i, ids)
    finals = np.flatnonzero(h.obs_final)
    result: dict[str, Any] = {"valid": "unknown", "anomalies": {"partial": 0}, "examples": {"partial": []},
                              "sinks": {}, "reason": "", "notes": []}
    if not extras:
        result["reason"] = "no second sink's content recorded: nothing to compare"
        return result
    if not len(finals):
        result["reason"] = "no final read of the workload's sink (the run did not finish)"
        return result
    final = int(finals[-1])
    main_ids = {h.event_ids[int(e)] for e in h.eff_eid[h.eff_obs == final]}
    sinks: dict[str, tuple[int, set[str]]] = {main: (int(h.obs_rec[final]), main_ids), **extras}
    result["sinks"] = {name: len(ids) for name, (_, ids) in sinks.items()}
    union: set[str] = set().union(*(ids for _, ids in sinks.values()))
    if not union:
        result["reason"] = "vacuous run: nothing in any sink"
        return result
    partial = sorted(i for i in union if any(i not in ids for _, ids in sinks.values()))
    result["anomalies"]["partial"] = len(partial)
    result["valid"] = not partial
    index = {name: n for n, name in enumerate(h.event_ids)} if partial else {}
    for eid in partial[:examples]:
        present = [name for name, (_, ids) in sinks.items() if eid in ids]
        absent = [name for name, (_, ids) in sinks.items() if eid not in ids]
        recs: list[tuple[int, dict[str, Any]]] = []
        n = index.get(eid)
        key = seq = None
        if n is not None:
            recs += [(int(r), h.record(int(r))) for r in h.send_rec[h.send_eid == n].tolist()]
            k, s = int(h.event_key[n]), int(h.event_seq[n])
            key, seq = (h.key_names[k] if k >= 0 else None), (s if s >= 0 else None)
        for name, (rec, ids) in sinks.items():
            recs.append((rec, {"index": rec, "time": int(h.time[rec]), "process": "observer", "type": "ok",
                               "f": h.f_names[h.f[rec]],
                               "value": {"sink": name, "events": [[eid, key, seq]] if eid in ids else [],
                                         "events_total": len(ids), "trimmed": True}}))
        recs.sort(key=lambda r: r[0])
        result["examples"]["partial"].append({
            "id": eid, "key": key, "seq": seq,
            "why": f"{WHY}: in {', '.join(present)}; missing from {', '.join(absent)}",
            "records": [r for _, r in recs]})
    return result
