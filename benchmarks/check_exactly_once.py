"""Benchmark: the exactly-once check of 1M- and 10M-record histories, from the file on disk.

Generates histories with realistic noise (interleaved sends, client retries that
show up as duplicates, info outcomes applied or not, late effects, incremental
observations and a final read), then, for each size, prints side by side:
the time of `checkers.exactly_once.check(read_history(path))` (in a fresh process, so
that its peak RSS is its own), that peak RSS, and a raw pass over the same bytes
(read the file in chunks and count its lines). Goal for 10M records: <= 5 s,
<= 2 GiB, <= 10x the raw pass.

    .venv/bin/python benchmarks/check_exactly_once.py              # 1M and 10M
    .venv/bin/python benchmarks/check_exactly_once.py --events 200000
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent


def generate(path: str, n_records: int, seed: int = 1, keys: int = 1000) -> dict[str, int]:
    """Write a history of about `n_records` records; return what was injected."""
    rng = random.Random(seed)
    dumps = orjson.dumps
    out = open(path, "wb", buffering=8 << 20)
    index = 0
    lines: list[bytes] = []

    def emit(t: int, process: str, typ: str, f: str, value: object) -> None:
        nonlocal index
        lines.append(dumps({"index": index, "time": t, "process": process, "type": typ, "f": f,
                            "value": value}))
        index += 1
        if len(lines) >= 65536:
            out.write(b"\n".join(lines) + b"\n")
            lines.clear()

    n_events = max(1, (n_records - 8) * 1000 // 2004)  # 2 records per send, 2 per 1000 sends observed
    emit(0, "harness", "info", "start", {"run_id": "bench", "plan": "bench", "seed": seed, "rate": 10000,
                                          "duration_s": n_events // 10000, "order": None})
    t = 1_000_000
    seqs = [0] * keys
    inflight: list[tuple[int, dict[str, object], bool]] = []  # (completion time, value, duplicate?)
    late: list[tuple[int, list[object]]] = []
    new_effects: list[list[object]] = []
    sink: list[list[object]] = []
    injected = {"ok": 0, "fail": 0, "info": 0, "duplicates": 0, "late": 0}

    def apply(effect: list[object]) -> None:
        new_effects.append(effect)
        sink.append(effect)

    for i in range(n_events):
        t += rng.randint(50_000, 150_000)
        k = rng.randrange(keys)
        value = {"id": f"e-{i:09d}", "key": f"k{k}", "seq": seqs[k]}
        seqs[k] += 1
        emit(t, "load", "invoke", "send", value)
        inflight.append((t + rng.randint(100_000, 900_000), value, rng.random() < 0.0005))
        while inflight and (len(inflight) > 8 or inflight[0][0] <= t):
            j = rng.randrange(min(len(inflight), 4))  # completions come back out of order
            done, v, dup = inflight.pop(j)
            t = max(t, done) + 1
            r = rng.random()
            typ = "ok" if r < 0.965 else "info" if r < 0.985 else "fail"
            injected[typ] += 1
            emit(t, "load", typ, "send", v)
            effect = [v["id"], v["key"], v["seq"], rng.randrange(3)]
            if typ == "ok" or (typ == "info" and rng.random() < 0.5):
                if typ == "info" and rng.random() < 0.3:
                    late.append((t + 50_000_000, effect))
                    injected["late"] += 1
                else:
                    apply(effect)
                    if dup:
                        apply(effect)
                        injected["duplicates"] += 1
        while late and late[0][0] <= t:
            apply(late.pop(0)[1])
        if i % 1000 == 999:
            t += 1
            emit(t, "observer", "invoke", "observe", None)
            t += 1000
            emit(t, "observer", "ok", "observe", {"full": False, "events": new_effects})
            new_effects = []
    for done, v, _dup in inflight:
        t = max(t, done) + 1
        emit(t, "load", "ok", "send", v)
        injected["ok"] += 1
        apply([v["id"], v["key"], v["seq"], 0])
    for _, effect in late:
        apply(effect)
    t += 1_000_000
    emit(t, "observer", "invoke", "final-read", None)
    t += 1_000_000
    emit(t, "observer", "ok", "final-read", {"full": True, "events": sink})
    out.write(b"\n".join(lines) + b"\n")
    out.close()
    injected["records"] = index
    return injected


def raw_pass(path: str) -> float:
    t0 = time.perf_counter()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            n += chunk.count(b"\n")
    return time.perf_counter() - t0


_CHILD = """
import resource, sys, time
t0 = time.perf_counter()
from onceproof.checkers.history import read_history
from onceproof.checkers.exactly_once import check
h = read_history(sys.argv[1])
t1 = time.perf_counter()
r = check(h)
t2 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
import orjson
print(orjson.dumps({"read": t1 - t0, "check": t2 - t1, "total": t2 - t0, "rss": rss, "valid": r["valid"],
                    "anomalies": r["anomalies"], "records": len(h), "sends": r["stats"]["sends"]}).decode())
"""


def measure(path: str) -> dict[str, object]:
    # in a fresh interpreter: the peak RSS is the checker's alone, the import time is counted
    proc = subprocess.run([sys.executable, "-c", _CHILD, path], cwd=ROOT, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return orjson.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, action="append",
                    help="history size in records (repeatable; default 1M and 10M)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    sizes = args.events or [1_000_000, 10_000_000]
    rows = []
    with tempfile.TemporaryDirectory(prefix="onceproof-bench-") as tmp:
        for n in sizes:
            path = os.path.join(tmp, f"history-{n}.jsonl")
            t0 = time.perf_counter()
            injected = generate(path, n, seed=args.seed)
            gen_s = time.perf_counter() - t0
            size = os.path.getsize(path)
            raw_pass(path)  # warm the page cache the same way for both
            raw = min(raw_pass(path) for _ in range(3))
            m = measure(path)
            rows.append((n, injected, gen_s, size, raw, m))
            os.unlink(path)
    print()
    print(f"{'records':>11} {'file MiB':>9} {'raw pass s':>10} {'check s':>8} {'(read':>7} {'check)':>7} "
          f"{'x raw':>6} {'peak RSS MiB':>12} {'verdict':>8}  anomalies (injected: dup/late/info/fail)")
    for n, inj, _gen_s, size, raw, m in rows:
        anomalies = {k: v for k, v in m["anomalies"].items() if v}
        print(f"{m['records']:>11,} {size / 2**20:>9.0f} {raw:>10.3f} {m['total']:>8.2f} {m['read']:>7.2f} "
              f"{m['check']:>7.2f} {m['total'] / raw:>6.1f} {m['rss'] / 2**20:>12.0f} {str(m['valid']):>8}  "
              f"{anomalies} ({inj['duplicates']}/{inj['late']}/{inj['info']}/{inj['fail']})")
    big = [r for r in rows if r[0] >= 10_000_000]
    if big:
        m, raw = big[-1][5], big[-1][4]
        ok = m["total"] <= 5 and m["rss"] <= 2 * 2**30 and m["total"] <= 10 * raw
        print(f"\ngoal for 10M (<= 5 s, <= 2 GiB, <= 10x raw): {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
