"""Hypothesis strategies for exactly-once histories: a run with random interleavings,
retries (a send completes late, out of order), info outcomes applied or not, unfinished
sends, late effects, incremental and full observations and a final read.

`RunModel` keeps the ground truth (what was sent and applied when) so that a test can
inject one anomaly and know its exact name and event.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st


@dataclass
class Event:
    id: str
    key: str
    seq: int
    invoke_t: int
    outcome: str  # ok | fail | info | none (no completion)
    complete_t: int | None
    apply_t: int | None  # None: never applied


@dataclass
class RunModel:
    events: list[Event]
    observe_ts: list[int]
    full_ts: list[int]
    end_t: int
    extra: list[dict[str, Any]] = field(default_factory=list)  # injected records
    final_extra: list[list[Any]] = field(default_factory=list)  # effects appended to the final read
    final_drop: set[str] = field(default_factory=set)  # ids left out of the final read
    obs_drop: dict[int, set[str]] = field(default_factory=dict)  # observe time -> ids left out
    swap: tuple[str, str] | None = None  # two ids swapped in the final read's order
    state: dict[str, dict[str, int]] | None = None

    def effects_until(self, t: int) -> list[Event]:
        applied = [e for e in self.events if e.apply_t is not None and e.apply_t < t]
        return sorted(applied, key=lambda e: e.apply_t)  # type: ignore[arg-type, return-value]

    def fold(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for e in self.effects_until(self.end_t):
            s = out.setdefault(e.key, {"count": 0, "sum": 0})
            s["count"] += 1
            s["sum"] += e.seq
        return out

    def records(self) -> list[dict[str, Any]]:
        recs: list[tuple[int, int, dict[str, Any]]] = []

        def add(t: int, order: int, process: str, typ: str, f: str, value: Any) -> None:
            recs.append((t, order, {"time": t, "process": process, "type": typ, "f": f, "value": value}))

        add(0, 0, "harness", "info", "start", {"run_id": "t", "plan": "t", "seed": 0, "rate": 1,
                                               "duration_s": 1, "order": None})
        for e in self.events:
            v = {"id": e.id, "key": e.key, "seq": e.seq}
            add(e.invoke_t, 1, "load", "invoke", "send", v)
            if e.complete_t is not None:
                add(e.complete_t, 1, "load", e.outcome, "send", v)
        prev = -1
        for t in sorted(set(self.observe_ts) | set(self.full_ts)):
            full = t in self.full_ts
            drop = self.obs_drop.get(t, set())
            evs = [e for e in self.effects_until(t) if full or e.apply_t > prev]  # type: ignore[operator]
            add(t - 1, 2, "observer", "invoke", "observe", None)
            add(t, 2, "observer", "ok", "observe",
                {"full": full, "events": [[e.id, e.key, e.seq, 0] for e in evs if e.id not in drop]})
            prev = t
        for r in self.extra:
            recs.append((r["time"], 3, r))
        final = [[e.id, e.key, e.seq, 0] for e in self.effects_until(self.end_t) if e.id not in self.final_drop]
        if self.swap:
            ids = [x[0] for x in final]
            i, j = ids.index(self.swap[0]), ids.index(self.swap[1])
            final[i], final[j] = final[j], final[i]
        final += self.final_extra
        add(self.end_t, 4, "observer", "invoke", "final-read", None)
        add(self.end_t + 1, 4, "observer", "ok", "final-read", {"full": True, "events": final})
        if self.state is not None:
            add(self.end_t + 2, 4, "observer", "ok", "state", self.state)
        recs.sort(key=lambda x: (x[0], x[1]))
        return [{"index": i, **r} for i, (_, _, r) in enumerate(recs)]


@st.composite
def runs(draw: Any, min_events: int = 1, max_events: int = 25) -> RunModel:
    n = draw(st.integers(min_events, max_events))
    n_keys = draw(st.integers(1, 4))
    seqs = [0] * n_keys
    events = []
    t = 10
    for i in range(n):
        t += draw(st.integers(1, 5)) * 10  # invokes at multiples of 10, other things in between
        k = draw(st.integers(0, n_keys - 1))
        outcome = "ok" if i == 0 else draw(st.sampled_from(["ok", "ok", "ok", "fail", "info", "none"]))
        latency = draw(st.integers(1, 200))  # long latencies: completions interleave and reorder
        applied = outcome == "ok" or (outcome in ("info", "none") and draw(st.booleans()))
        late = draw(st.integers(0, 400)) if applied and draw(st.booleans()) else 0
        apply_t = t + 1 + draw(st.integers(0, latency)) + late if applied else None
        events.append(Event(f"e{i}", f"k{k}", seqs[k], t, outcome,
                            None if outcome == "none" else t + latency + 3, apply_t))
        seqs[k] += 1
    # sink order follows seq within a key (the pipeline keeps per-key order)
    for k in range(n_keys):
        evs = [e for e in events if e.key == f"k{k}" and e.apply_t is not None]
        times = sorted(e.apply_t for e in evs)  # type: ignore[misc]
        for e, at in zip(evs, times):
            e.apply_t = at
    end = max(max((e.apply_t or 0) for e in events), max((e.complete_t or 0) for e in events)) + 20
    obs = sorted(set(draw(st.lists(st.integers(1, max(1, end // 10)), max_size=6))))
    observe_ts = [x * 10 + 5 for x in obs]
    full_ts = [x for x in observe_ts if draw(st.booleans())]
    return RunModel(events, observe_ts, full_ts, end - end % 10 + 15)
