"""The `reads` checker: reads of the pipeline's per-key state during the run (a read workload,
harness/reads.py) must be linearizable against the pipeline's writes, per key, in the max
register model (checkers/models.py `MaxRegister`): the state of key k is the highest `seq` of
k's events applied so far (`GREATEST(last_seq, seq)`), -1 before any.

Operations (checkers/HISTORY.md, "Reads"):
- a WRITE per event of a key that was read: `("write", seq)`, called when the event's send was
  invoked (nobody can apply it earlier), returned when the observer first saw its effect in the
  workload's sink on the primary (the reference pipelines update the per-key state in the same
  transaction as the effect row, so by then the state holds it); never seen: it never returned
  (it may or may not have happened, as a Jepsen `info`). The time it takes effect (the commit)
  lies in that window whatever the pipeline does.
- a READ per `read` invoke/ok pair of a reader process: `("read",) -> value` (null: -1). A read
  that failed or got no answer (fail, info, or no completion) constrains nothing and is left out:
  it is never accused. An info answer marked `broken` (the pipeline answered out of the read
  contract: not JSON, no `value`, a value that is not a seq) is counted: with no anomaly found,
  any such answer makes the verdict "unknown" (the read path was not really tested).

Rules, each a witness that the key's history is not linearizable in the max register (the state
never decreases, so none of them can be explained by any order of the other operations):
- `stale-read`: a read returned v while a write of u > v had completed before the read began, or
  while another read that returned u > v had completed before it began (Jepsen's "stale read":
  the value was overwritten before the read started). "Began" is the later of the read's call and
  the call of the write of v (the read cannot take effect before the value it returned existed).
- `unexplained-read`: a read returned a value that no write of that key had been invoked with
  by the time the read returned.
When a key's writes have distinct values (one write per seq: a single load process), these rules
DECIDE the key: a max register history is linearizable iff it has none of them. Proof sketch: a
linearization is a point per op within its window such that each read of v is after the write of
v and before every write of a larger value; these are difference constraints over a DAG (values
grow along every edge), whose least solution is the latest call along a chain; it is feasible
iff no op returns before the call of an op that must precede it, and each such pair is one of
the rules above. So the search is polynomial (sorting and binary search) where the general
search (Wing & Gong / Lowe) is exponential in the writes in flight (hundreds here, with writes
open from send to first sighting). A key whose writes share a value is searched whole by the
linearizability checker (checkers/linearizable.py) instead; one it proves non-linearizable is
`non-linearizable` with the smallest set `linearizable.smallest_invalid` finds.

Each example carries the smallest set of operations that cannot be linearized (the read, and the
one or two operations that make it impossible, and the write of the value it returned), checked
by the linearizability checker to be non-linearizable and to be linearizable without the read.
The result also has `operations` and `minimal_invalid` (the first example's set) for the
report's lanes, like the linearizable checker's result.

Output: `valid` (True, False, "unknown"), `anomalies` {kind: count}, `examples` {kind: [...]},
`reads` {ok, fail, info, broken}, `keys`, `writes`, `first_anomaly_s` (seconds after the load started
at which the first accused read was invoked; None if none), `reason` when unknown, `notes`.
Raises HistoryError for a `read` record of the wrong shape.
"""
from __future__ import annotations

import bisect
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from onceproof.checkers import linearizable
from onceproof.checkers.history import INVOKE, OK, History, HistoryError
from onceproof.checkers.linearizable import Op
from onceproof.checkers.models import max_register

F_READ = "read"
KINDS = ("stale-read", "unexplained-read", "non-linearizable")
NS = 1e9
_NONE = -1


def check(history: History, *, budget_s: float = 30.0, examples: int = 10) -> dict[str, Any]:
    """Check the history's reads (see the module docstring). `budget_s` bounds the search of
    the keys without a witness; a key it cannot decide in time makes the verdict "unknown"."""
    h = history
    reads, counts = _reads(h)
    result: dict[str, Any] = {"valid": "unknown", "anomalies": {k: 0 for k in KINDS},
                              "examples": {k: [] for k in KINDS}, "reads": counts, "keys": 0, "writes": 0,
                              "first_anomaly_s": None, "reason": "", "notes": [], "model": max_register.name}
    broken = counts.pop("broken", 0)
    example = counts.pop("broken_example", "")
    result["reads"]["broken"] = broken
    if broken:  # a read path that answers out of contract was not tested, whatever else passed
        result["notes"].append(f"{broken} of {counts['ok'] + counts['fail'] + counts['info']} read answers broke the "
                               f"read contract, e.g. {example}")
    if not reads and not broken:
        asked: int = counts["ok"] + counts["fail"] + counts["info"]
        result["reason"] = ("no read answered: nothing to check" if asked
                            else "no reads in the history (the plan has no `workload.reads`?)")
        return result
    writes = _writes(h, {op.input[1] for op in reads})
    load_start = _load_start(h)
    by_key: dict[str, list[Op]] = defaultdict(list)
    for op in reads:
        by_key[op.input[1]].append(op)
    result["keys"] = len(by_key)
    result["writes"] = sum(len(writes.get(k, [])) for k in by_key)
    accused_calls: list[float] = []
    first_set: list[Op] = []
    undecided: list[str] = []
    deadline = time.perf_counter() + budget_s
    for key in sorted(by_key):
        w_ops = writes.get(key, [])
        r_ops = sorted(by_key[key], key=lambda o: (o.call, o.id))
        distinct = len({w.input[2] for w in w_ops}) == len(w_ops)
        witnesses = _witnesses(key, w_ops, r_ops)
        if not witnesses and not distinct:  # the rules decide only distinct values: search the whole key
            ops = [_strip(o) for o in (*w_ops, *r_ops)]
            left = deadline - time.perf_counter()
            r = linearizable.check(ops, max_register, budget_s=max(left, 0.5), partition=False, native=False)
            if r["valid"] is False:
                small, _ = linearizable.smallest_invalid(ops, max_register, budget_s=max(min(left, 10.0), 1.0),
                                                         native=False)
                anchor = max(small, key=lambda o: (o.call, o.id))
                witnesses = [("non-linearizable", anchor, small,
                              "no order of these operations, each within its real-time window, explains "
                              "what the reads returned")]
            elif r["valid"] != True:  # noqa: E712 - "unknown"
                undecided.append(key)
                continue
        for kind, read, ops_set, why in witnesses:
            result["anomalies"][kind] += 1
            accused_calls.append(read.call)
            if len(result["examples"][kind]) < examples:
                result["examples"][kind].append(_example(h, key, read, ops_set, why))
            if not first_set or read.call < min(o.call for o in first_set if o.input[0] == "read"):
                first_set = ops_set
    n = sum(result["anomalies"].values())
    if n:
        result["valid"] = False
        result["first_anomaly_s"] = round((min(accused_calls) - load_start) / NS, 3)
        result["operations"] = [_op_dict(o) for o in sorted(first_set, key=lambda o: (o.call, o.id))]
        result["minimal_invalid"] = [o.id for o in first_set]
        result["longest_prefix"], result["unplaced"] = [], []
    elif undecided:
        result["reason"] = (f"the search of {len(undecided)} key(s) ({', '.join(undecided[:5])}) ran out of its "
                            f"{budget_s:g} s budget")
    elif broken:
        result["reason"] = (f"{broken} of {counts['ok'] + counts['fail'] + counts['info']} read answers broke the "
                            f"read contract (GET /read?key=K answers {{\"value\": <the key's highest applied seq, "
                            f"an integer >= 0, or null>}}), e.g. {example}: the read path was not tested")
    else:
        result["valid"] = True
    if undecided and n:
        result["notes"].append(f"{len(undecided)} key(s) not decided within the budget")
    return result


# --- operations ------------------------------------------------------------------------------
def _reads(h: History) -> tuple[list[Op], dict[str, int]]:
    """The answered reads as Ops (id = the invoke's record number; input ("read", key); output
    the value, -1 for null), and the count of ok / fail / info (unanswered) reads, and of
    `broken` ones: info answers that broke the read contract (with `broken_example`, the
    first one's error)."""
    counts: dict[str, Any] = {"ok": 0, "fail": 0, "info": 0, "broken": 0}
    code = h.f_code(F_READ)
    if code < 0:
        return [], counts
    pending: dict[Any, tuple[int, int, str]] = {}
    out: list[Op] = []
    for i in np.flatnonzero(h.f == code).tolist():
        rec = h.record(i)
        value, proc = rec.get("value"), rec.get("process")
        if not isinstance(value, dict) or not isinstance(value.get("key"), str):
            raise HistoryError(h.path, None, f"record {rec.get('index', i)}: a `read` record's value must be an "
                                             f"object with a string `key`, got {str(value)[:80]!r}")
        t = int(h.time[i])
        if h.type[i] == INVOKE:
            if proc in pending:  # a process with two reads at once: the first never answered
                counts["info"] += 1
            pending[proc] = (i, t, value["key"])
            continue
        start = pending.pop(proc, None)
        if start is None or start[2] != value["key"]:
            raise HistoryError(h.path, None, f"record {rec.get('index', i)}: a `read` completion of process "
                                             f"{str(proc)[:40]!r} with no invoke of key {value['key'][:40]!r} before it")
        if h.type[i] != OK:
            counts["fail" if rec.get("type") == "fail" else "info"] += 1
            if value.get("broken"):  # an answer that breaks the read contract (harness/reads.py)
                counts["broken"] += 1
                if "broken_example" not in counts:
                    counts["broken_example"] = str(value.get("error", ""))[:200]  # type: ignore[assignment]
            continue
        v = value.get("value")
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise HistoryError(h.path, None, f"record {rec.get('index', i)}: a `read` ok's `value` must be a "
                                             f"number >= 0 or null, got {str(v)[:40]!r}")
        counts["ok"] += 1
        out.append(Op(start[0], proc, start[1], t, ("read", start[2]), -1 if v is None else v))
    counts["info"] += len(pending)
    return out, counts


def _writes(h: History, keys: set[str]) -> dict[str, list[Op]]:
    """Per key read, one write Op per event of that key: ("write", key, seq), called at its
    first send invoke (0 if none is recorded: the earliest it could be), returned at its first
    sighting in the sink (inf if never seen). id = the send invoke's record number (or -1 - eid)."""
    n_ev = len(h.event_ids)
    call = np.full(n_ev, _NONE, np.int64)
    inv = h.type[h.send_rec] == INVOKE
    # the first invoke wins: assign in reverse so that the first of repeated indices is kept
    call[h.send_eid[inv][::-1]] = h.time[h.send_rec[inv]][::-1]
    rec = np.full(n_ev, _NONE, np.int64)
    rec[h.send_eid[inv][::-1]] = h.send_rec[inv][::-1]
    never = np.iinfo(np.int64).max
    seen = np.full(n_ev, never, np.int64)
    if len(h.eff_eid):
        np.minimum.at(seen, h.eff_eid, h.time[h.obs_rec][h.eff_obs])
    codes = {c: name for c, name in enumerate(h.key_names) if name in keys}
    out: dict[str, list[Op]] = defaultdict(list)
    for eid in np.flatnonzero(np.isin(h.event_key, list(codes))).tolist():
        key, seq = codes[int(h.event_key[eid])], int(h.event_seq[eid])
        if seq < 0:
            continue
        c = int(call[eid])
        ret = math.inf if seen[eid] == never else int(seen[eid])
        out[key].append(Op(int(rec[eid]) if rec[eid] >= 0 else -1 - eid, "load", max(c, 0), ret,
                           ("write", key, seq), None))
    return out


def _load_start(h: History) -> int:
    code = h.f_code("load-start")
    if code < 0:
        return 0
    idx = np.flatnonzero(h.f == code)
    return int(h.time[idx[0]]) if len(idx) else 0


def _strip(op: Op) -> Op:
    """The op as the max register takes it: ("write", v) / ("read",), key dropped."""
    inp = ("write", op.input[2]) if op.input[0] == "write" else ("read",)
    return Op(op.id, op.process, op.call, op.ret, inp, op.output)


# --- witnesses -------------------------------------------------------------------------------
def _witnesses(key: str, writes: Sequence[Op], reads: Sequence[Op]) -> list[tuple[str, Op, list[Op], str]]:
    """(kind, read, smallest set, why) for every read of `key` that a rule of the module
    docstring accuses, each set confirmed by the linearizability checker."""
    first_write: dict[int, Op] = {}
    for w in sorted(writes, key=lambda o: (o.call, o.id)):
        first_write.setdefault(w.input[2], w)
    done = sorted((w for w in writes if w.ret != math.inf), key=lambda o: o.ret)
    done_ret = [w.ret for w in done]
    best_w: list[Op] = []  # best_w[i]: the highest write among done[:i+1]
    for w in done:
        best_w.append(w if not best_w or w.input[2] > best_w[-1].input[2] else best_w[-1])
    by_ret = sorted(reads, key=lambda o: o.ret)
    read_ret = [r.ret for r in by_ret]
    best_r: list[Op] = []
    for r in by_ret:
        best_r.append(r if not best_r or r.output > best_r[-1].output else best_r[-1])
    out: list[tuple[str, Op, list[Op], str]] = []
    for r in reads:
        v = r.output
        own = first_write.get(v) if v >= 0 else None
        if v >= 0 and (own is None or own.call > r.ret):
            cand = [r] + ([own] if own is not None else [])
            why = (f"read {v} of key {key}, a value no write had been invoked with by the time the read returned"
                   + (f" (the event with seq {v} was sent {(own.call - r.ret) / NS:.3f} s later)" if own else ""))
            out += _confirmed("unexplained-read", r, cand, why)
            continue
        began = max(r.call, own.call) if own is not None else r.call
        i = bisect.bisect_left(done_ret, began) - 1
        if i >= 0 and best_w[i].input[2] > v:
            w = best_w[i]
            cand = [w, r] + ([own] if own is not None else [])
            why = (f"read {_show(v)} of key {key}, but seq {w.input[2]} had been applied (seen in the sink) "
                   f"{(began - w.ret) / NS:.3f} s before the read began: a stale read")
            out += _confirmed("stale-read", r, cand, why)
            continue
        j = bisect.bisect_left(read_ret, began) - 1
        if j >= 0 and best_r[j].output > v:
            r1 = best_r[j]
            w1 = first_write.get(r1.output)
            cand = [r1, r] + ([w1] if w1 is not None else []) + ([own] if own is not None else [])
            why = (f"read {_show(v)} of key {key}, but an earlier read (process {r1.process}) had returned "
                   f"{r1.output}, {(began - r1.ret) / NS:.3f} s before this one began: a stale read")
            out += _confirmed("stale-read", r, cand, why)
    return out


def _show(v: int) -> str:
    return "nothing" if v < 0 else str(v)


def _confirmed(kind: str, read: Op, cand: list[Op], why: str) -> list[tuple[str, Op, list[Op], str]]:
    """[(kind, read, cand, why)] if the linearizability checker finds `cand` not linearizable
    and (the read's value explained) linearizable without the read; [] otherwise."""
    ops = [_strip(o) for o in dict.fromkeys(cand)]
    if linearizable.check(ops, max_register, budget_s=5.0, partition=False, native=False)["valid"] is not False:
        return []
    rest = [o for o in ops if o.id != read.id]
    if rest and linearizable.check(rest, max_register, budget_s=5.0, partition=False,
                                   native=False)["valid"] is not True:
        return []
    return [(kind, read, list(dict.fromkeys(cand)), why)]


# --- examples --------------------------------------------------------------------------------
def _op_dict(op: Op) -> dict[str, Any]:
    """The op as the max register saw it (its key is the example's), as the linearizable
    checker's `operations` list them."""
    op = _strip(op)
    d = op.to_dict()
    d["input"] = list(op.input)
    return d


def _example(h: History, key: str, read: Op, ops: list[Op], why: str) -> dict[str, Any]:
    """An example as the report and junit show it: the read (id, key, value as `seq`), why,
    the operations of the smallest set, and their history records (a write's send invoke and
    the observation that first saw it, trimmed to the event)."""
    records: list[dict[str, Any]] = []
    for op in sorted(ops, key=lambda o: (o.call, o.id)):
        if op.id < 0:
            continue
        records.append(h.record(op.id))
        if op.input[0] == "read":
            done = _completion(h, op)
            if done is not None:
                records.append(done)
        elif op.ret != math.inf:
            records.append({"index": None, "time": int(op.ret), "process": "observer", "type": "ok", "f": "observe",
                            "value": {"events": [[h.record(op.id).get("value", {}).get("id"), key, op.input[2]]],
                                      "trimmed": True, "first_seen": True}})
    return {"id": read.id, "key": key, "seq": read.output if read.output >= 0 else None, "why": why,
            "operations": [_op_dict(o) for o in sorted(ops, key=lambda o: (o.call, o.id))], "records": records}


def _completion(h: History, op: Op) -> dict[str, Any] | None:
    code = h.f_code(F_READ)
    proc = h.process_names.index(op.process) if op.process in h.process_names else -1
    later = np.flatnonzero((h.f == code) & (h.process == proc) & (np.arange(len(h)) > op.id))
    return h.record(int(later[0])) if len(later) else None
