"""A synthetic run folder, shaped like the ones `onceproof run` writes (plan.yaml,
history.jsonl, results.json, junit.xml, logs/), for testing and benchmarking the report
without starting servers.

The story it tells: an open-loop load of `rate` events per second for `duration_s`, two
pipeline replicas (events of even key hash on replica 0), incremental sink observations
every `observe_every_s`, and three faults:
- f1 kill pipeline-0 (restarted at heal): replica 0's events wait for the restart, and the
  ones it applied in the second before the kill are applied again after it (duplicates:
  it committed its offsets after applying);
- f2 partition kafka-1: sends time out (`info`) or fail, the rest wait for the heal;
- f3 latency postgres: slow applies, and two acknowledged events are never applied (lost).
Some keys and one payload contain `<script>alert(1)</script>`.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import yaml

NS = 1_000_000_000
HOSTILE = "<script>alert(1)</script>"


def default_faults(duration_s: float) -> list[dict[str, Any]]:
    d = duration_s
    return [
        {"fault": "f1", "kind": "kill", "targets": ["pipeline-0"], "applied_s": 0.25 * d, "healed_s": 0.35 * d},
        {"fault": "f2", "kind": "partition", "targets": ["kafka-1"], "applied_s": 0.5 * d,
         "healed_s": 0.62 * d},
        {"fault": "f3", "kind": "latency", "targets": ["postgres"], "applied_s": 0.75 * d,
         "healed_s": 0.85 * d},
    ]


def write_run(out: Path, *, rate: int = 200, duration_s: float = 20.0, seed: int = 7,
              observe_every_s: float = 0.25, n_keys: int = 16, faults: list[dict[str, Any]] | None = None,
              linearizable: bool = False, examples: int = 10, write_results: bool = True) -> dict[str, Any]:
    """Write a run folder into `out`; returns the results dict (also in results.json)."""
    out = Path(out)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    faults = default_faults(duration_s) if faults is None else faults
    fw = {f["kind"]: f for f in faults}
    kill, part, slow = fw.get("kill"), fw.get("partition"), fw.get("latency")
    keys = [f"k{i}" if i % 5 else f"k{i}{HOSTILE}" for i in range(n_keys)]
    quiesce_s = 2.0
    end_s = duration_s + quiesce_s
    n = int(rate * duration_s)
    recs: list[tuple[int, str, str, str, Any]] = []  # (time ns, process, type, f, value)
    add = recs.append
    run_id = f"20261128-031500-{seed:06x}"
    plan = {"name": "kafka-to-postgres", "seed": seed, "runtime": "local",
            "targets": {"kafka": {"nodes": 1}, "postgres": {}},
            "pipeline": {"command": ["python", "-m", "onceproof.targets.pipelines.kafka_to_postgres"], "replicas": 2,
                         "env": {"NOTE": HOSTILE}},
            "workload": {"source": "kafka:onceproof.events", "sink": "postgres:onceproof_effects",
                         "rate": rate, "keys": n_keys, "duration_s": duration_s},
            "faults": [{"name": f["fault"], "kind": f["kind"], "targets": f["targets"],
                        "at_s": f["applied_s"], "for_s": round(f["healed_s"] - f["applied_s"], 3)}
                       for f in faults],
            "checks": {"exactly-once": {}}, "quiesce": {"timeout_s": quiesce_s}}
    add((0, "harness", "info", "start", {"run_id": run_id, "plan": plan["name"], "seed": seed, "rate": rate,
                                         "duration_s": duration_s, "order": None}))
    add((1000, "harness", "info", "load-start", None))
    for f in faults:
        a, h = int(f["applied_s"] * NS), int(f["healed_s"] * NS)
        v = {"fault": f["fault"], "kind": f["kind"], "targets": f["targets"]}
        add((a, "nemesis", "invoke", "apply", v))
        add((a + 3_000_000, "nemesis", "ok", "apply", v))
        add((h, "nemesis", "invoke", "heal", v))
        add((h + 5_000_000, "nemesis", "ok", "heal", v))

    def within(f: dict[str, Any] | None, t: float, before: float = 0.0) -> bool:
        return f is not None and f["applied_s"] - before <= t < f["healed_s"]

    applies: list[tuple[int, int, list[Any]]] = []  # (time ns, event no, effect)
    sends: dict[str, str] = {}  # id -> completion type
    lost_ids: list[str] = []
    per_key_seq = [0] * n_keys
    for i in range(n):
        t = i / rate + rng.random() * 0.5 / rate
        kno = rng.randrange(n_keys)
        key, seq = keys[kno], per_key_seq[kno]
        per_key_seq[kno] += 1
        eid = f"e-{i:06d}"
        replica = kno % 2
        value: dict[str, Any] = {"id": eid, "key": key, "seq": seq}
        if i == 3:
            value["payload"] = f"hello {HOSTILE}"
        t_ns = int(t * NS)
        add((t_ns, "load", "invoke", "send", value))
        ack = t + 0.002 + rng.random() * 0.004
        ctype = "ok"
        apply_at: float | None = t + 0.02 + rng.random() * 0.06
        if within(part, t):
            r = rng.random()
            if r < 0.1:
                ctype, ack, apply_at = "fail", t + 0.05, None
            elif r < 0.3:
                ctype, ack = "info", t + 1.0
                apply_at = part["healed_s"] + rng.random() * 0.5 if rng.random() < 0.5 else None
            else:
                ack = part["healed_s"] + 0.01 + rng.random() * 0.05  # type: ignore[index]
                apply_at = ack + 0.02 + rng.random() * 0.3
        if apply_at is not None and within(slow, apply_at):
            apply_at += 0.3 + rng.random() * 0.4
            if len(lost_ids) < 2 and ctype == "ok":
                lost_ids.append(eid)
                apply_at = None
        add((int(ack * NS), "load", ctype, "send", value))
        sends[eid] = ctype
        if apply_at is None:
            continue
        if replica == 0 and kill is not None:
            if within(kill, apply_at):
                apply_at = kill["healed_s"] + 0.5 + rng.random() * 0.5
            elif kill["applied_s"] - 1.0 <= apply_at < kill["applied_s"]:
                again = kill["healed_s"] + 0.5 + rng.random() * 0.5  # re-read after the restart
                applies.append((int(again * NS), i, [eid, key, seq, 0]))
        applies.append((int(apply_at * NS), i, [eid, key, seq, replica]))
    add((int(duration_s * NS), "harness", "info", "load-end", None))
    add((int(duration_s * NS) + 1000, "harness", "info", "heal-all", None))
    add((int(duration_s * NS) + 2000, "harness", "info", "quiesce-start", None))
    applies.sort()

    # incremental observations, then a final read of everything
    step = int(observe_every_s * NS)
    j = 0
    t_obs = step
    while t_obs <= end_s * NS - step:
        batch = []
        while j < len(applies) and applies[j][0] <= t_obs:
            batch.append(applies[j][2])
            j += 1
        add((t_obs - 2_000_000, "observer", "invoke", "observe", None))
        add((t_obs, "observer", "ok", "observe", {"full": False, "events": batch}))
        t_obs += step
    t_final = int(end_s * NS)
    add((t_final - 100, "harness", "info", "quiesce-end", None))
    add((t_final, "observer", "invoke", "final-read", None))
    add((t_final + 50_000_000, "observer", "ok", "final-read",
         {"full": True, "events": [a[2] for a in applies]}))
    add((t_final + 60_000_000, "harness", "info", "end", None))

    recs.sort(key=lambda r: r[0])
    with open(out / "history.jsonl", "wb") as fh:
        buf = []
        for idx, (t_ns, proc, typ, f, v) in enumerate(recs):
            buf.append(orjson.dumps({"index": idx, "time": t_ns, "process": proc, "type": typ, "f": f,
                                     "value": v}))
            if len(buf) >= 50_000:
                fh.write(b"\n".join(buf) + b"\n")
                buf = []
        if buf:
            fh.write(b"\n".join(buf) + b"\n")

    (out / "plan.yaml").write_text(yaml.safe_dump(plan, sort_keys=False))
    for node in ("kafka-1", "postgres", "pipeline-0", "pipeline-1"):
        (out / "logs" / f"{node}.log").write_text(f"{node} started\nsaw {HOSTILE}\n")

    # results.json: what the runner + checker would write for this history
    applied_count: dict[str, int] = {}
    for _, _, eff in applies:
        applied_count[eff[0]] = applied_count.get(eff[0], 0) + 1
    dup_ids = sorted(e for e, c in applied_count.items() if c > 1)
    lost = sorted(e for e, c in sends.items() if c == "ok" and e not in applied_count)
    counts = {"lost": len(lost), "duplicate": len(dup_ids), "phantom": 0, "premature": 0, "flicker": 0,
              "reorder": 0, "state-mismatch": 0}
    whys = {e: f"applied more than once: {applied_count[e]} times in the final read" for e in dup_ids[:examples]}
    whys.update({e: "acknowledged to the producer, never applied by the end" for e in lost[:examples]})
    found = _examples(recs, whys)
    ex = {"duplicate": [found[e] for e in dup_ids[:examples]], "lost": [found[e] for e in lost[:examples]]}
    oks = sum(1 for c in sends.values() if c == "ok")
    fails = sum(1 for c in sends.values() if c == "fail")
    infos = sum(1 for c in sends.values() if c == "info")
    checker = {"valid": not any(counts.values()), "anomalies": counts, "examples": ex,
               "stats": {"sends": {"ok": oks, "fail": fails, "info": infos}, "applied": len(applied_count),
                         "latency_ms": {"p50": 45.0, "p90": 70.0, "p99": 900.0, "max": 2100.0}},
               "notes": []}
    results: dict[str, Any] = {
        "run_id": run_id, "name": plan["name"], "seed": seed, "valid": checker["valid"],
        "exit_code": 0 if checker["valid"] else 1, "started_at": "2026-11-28T03:15:00Z",
        "duration_s": round(end_s + 0.06, 3), "plan": plan, "checkers": {"exactly-once": checker},
        "workload": {"asked_rate": rate, "achieved_rate": round(n / duration_s, 1), "sent": n, "ok": oks,
                     "fail": fails, "info": infos},
        "faults": faults,
        "targets": {"kafka-1": {"address": "127.0.0.1:4001", "log": "logs/kafka-1.log"},
                    "postgres": {"address": "127.0.0.1:4002", "log": "logs/postgres.log"}},
        "pipeline": {"command": plan["pipeline"]["command"], "replicas": 2,
                     "logs": ["logs/pipeline-0.log", "logs/pipeline-1.log"]},
        "errors": [], "notes": []}
    if linearizable:
        results["checkers"]["linearizable"] = _linearizable(rng)
    if write_results:
        (out / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
        failures = sum(counts.values())
        (out / "junit.xml").write_text(
            '<?xml version="1.0"?>\n<testsuite name="onceproof" tests="1" failures="%d">'
            '<testcase name="exactly-once"/></testsuite>\n' % (1 if failures else 0))
    return results


def _examples(recs: list[tuple[int, str, str, str, Any]], whys: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The records of each wanted event, observation values trimmed to it (as the checker does)."""
    out = {e: {"id": e, "key": None, "seq": None, "why": why, "records": []} for e, why in whys.items()}
    for idx, (t, proc, typ, f, v) in enumerate(recs):
        if f == "send" and v["id"] in out:
            ex = out[v["id"]]
            ex["key"], ex["seq"] = v["key"], v["seq"]
            ex["records"].append({"index": idx, "time": t, "process": proc, "type": typ, "f": f, "value": v})
        elif f in ("observe", "final-read") and typ == "ok":
            mine: dict[str, list[Any]] = {}
            for e in v["events"]:
                if e[0] in out:
                    mine.setdefault(e[0], []).append(e[:3])
            for e, effects in mine.items():
                out[e]["records"].append({"index": idx, "time": t, "process": proc, "type": typ, "f": f,
                                          "value": {"full": v["full"], "events": effects,
                                                    "events_total": len(v["events"]), "trimmed": True}})
    return out


def _linearizable(rng: random.Random) -> dict[str, Any]:
    """A small register history over 4 processes, the last few operations unplaceable."""
    ops = []
    t = 0
    for i in range(60):
        p = i % 4
        call = t + rng.randrange(0, 20_000_000)
        ret = call + rng.randrange(5_000_000, 60_000_000)
        t += 10_000_000
        f = "write" if i % 3 == 0 else "read"
        ops.append({"id": i, "process": p, "call": call, "return": ret,
                    "input": {"f": f, "value": i if f == "write" else None},
                    "output": {"value": HOSTILE if i == 50 else i // 3}})
    return {"valid": False, "partitions": 1, "longest_prefix": list(range(48)), "unplaced": [50, 53],
            "operations": ops}
