"""Benchmark: the exactly-once check of 1M- and 10M-record histories, from the file on disk.

Generates histories with realistic noise (interleaved sends, client retries that
show up as duplicates, info outcomes applied or not, late effects, incremental
observations and a final read), then, for each size, prints side by side:
the time of `checkers.exactly_once.check(read_history(path))` (in a fresh process, so
that its peak RSS is its own), that peak RSS, and a raw pass over the same bytes
(read the file in chunks and count its lines); with --spark, the same check on Spark in
local mode and whether its result is identical. Histories are generated once and kept in
--cache. Goals at every size (20M, 100M, 200M records): peak RSS <= 2 GiB (the budget),
check <= 10x the raw pass.

    .venv/bin/python benchmarks/check_exactly_once.py              # 1M and 10M
    nice .venv/bin/python benchmarks/check_exactly_once.py --events 20000000 --events 100000000 --spark
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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


def raw_pass(path: str) -> tuple[float, float]:
    """(wall s, CPU s) of reading the file in 16 MiB chunks and counting its lines."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            n += chunk.count(b"\n")
    return time.perf_counter() - t0, time.process_time() - c0


# in a fresh interpreter, the way a user runs it (`onceproof check --json --memory M`); the peak
# RSS is the child's VmHWM (ru_maxrss would also count the parent's peak before the exec)
_CHILD = """
import resource, sys, time
t0 = time.perf_counter()
from onceproof.cli import main
code = main(sys.argv[1:])
hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]
ru = resource.getrusage(resource.RUSAGE_SELF)
print('BENCH', time.perf_counter() - t0, int(hwm) * 1024, ru.ru_utime + ru.ru_stime, file=sys.stderr)
"""


def measure(path: str, memory: str, engine: str = "local") -> dict[str, object]:
    cmd = [sys.executable, "-c", _CHILD, "check", "--json", "--memory", memory, path]
    if engine != "local":
        cmd[5:5] = ["--engine", engine]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(proc.stderr)
    out = orjson.loads(proc.stdout.strip().splitlines()[-1])
    _, secs, rss, cpu = proc.stderr.strip().splitlines()[-1].split()
    r = out["checkers"]["exactly-once"]
    return {"total": float(secs), "rss": int(rss), "cpu": float(cpu), "valid": out["valid"], "anomalies": r["anomalies"],
            "records": out["stats"]["records"], "result": out}


def cached(cache: Path, n: int, seed: int) -> tuple[str, dict[str, int]]:
    """The history of `n` records (generated once, kept in `cache` with what was injected)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"history-{n}-{seed}.jsonl"
    meta = cache / f"history-{n}-{seed}.json"
    if not (path.exists() and meta.exists()):
        need = n * 160 * 1.3  # the file and a partitioned check's spill
        free = shutil.disk_usage(cache).free
        if free - need < 10 << 30:
            raise SystemExit(f"{n:,} records need about {need / 2**30:.0f} GiB and {free / 2**30:.0f} GiB is free "
                             f"in {cache}: free some space or choose a smaller size")
        t0 = time.perf_counter()
        injected = generate(str(path) + ".part", n, seed=seed)
        injected["generate_s"] = round(time.perf_counter() - t0)
        os.replace(str(path) + ".part", path)
        meta.write_bytes(orjson.dumps(injected))
    return str(path), orjson.loads(meta.read_bytes())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, action="append",
                    help="history size in records (repeatable; default 1M and 10M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--memory", default="2GiB", help="the check's memory budget (default 2GiB)")
    ap.add_argument("--spark", action="store_true", help="also time `onceproof check --engine spark`")
    ap.add_argument("--generate-only", action="store_true", help="only fill the cache")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("ONCEPROOF_HOME") or "/work") / "bench-cache",
                    help="where generated histories are kept (default $ONCEPROOF_HOME/bench-cache)")
    args = ap.parse_args(argv)
    sizes = args.events or [1_000_000, 10_000_000]
    rows = []
    for n in sizes:
        path, injected = cached(args.cache, n, args.seed)
        if args.generate_only:
            print(f"{n:,} records: {path} ({os.path.getsize(path) / 2**30:.1f} GiB)", flush=True)
            continue
        size = os.path.getsize(path)
        raw, raw_cpu = min(raw_pass(path) for _ in range(2))
        m = measure(path, args.memory)
        m["raw_cpu"] = raw_cpu
        spark = measure(path, args.memory, "spark") if args.spark else None
        if spark is not None:
            a = dict(m["result"]["checkers"]["exactly-once"])  # type: ignore[index]
            b = dict(spark["result"]["checkers"]["exactly-once"])  # type: ignore[index]
            spark["same"] = orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS)
        rows.append((n, injected, size, raw, m, spark))
        _table(rows, args.memory)
    return 0


def _table(rows: list[Any], memory: str) -> None:
    print()
    print(f"{'records':>12} {'file GiB':>8} {'raw pass s':>10} {'check s':>8} {'x raw':>6} {'raw cpu s':>9} "
          f"{'check cpu s':>11} {'x raw cpu':>9} {'peak RSS MiB':>12} "
          f"{'spark s':>8} {'same':>5} {'verdict':>8}  anomalies (injected: dup/late/info/fail)")
    for _n, inj, size, raw, m, spark in rows:
        anomalies = {k: v for k, v in m["anomalies"].items() if v}
        print(f"{m['records']:>12,} {size / 2**30:>8.2f} {raw:>10.2f} {m['total']:>8.1f} {m['total'] / raw:>6.1f} "
              f"{m['raw_cpu']:>9.2f} {m['cpu']:>11.1f} {m['cpu'] / m['raw_cpu']:>9.1f} "
              f"{m['rss'] / 2**20:>12.0f} {spark['total'] if spark else float('nan'):>8.1f} "
              f"{str(spark['same']) if spark else '-':>5} {str(m['valid']):>8}  "
              f"{anomalies} ({inj['duplicates']}/{inj['late']}/{inj['info']}/{inj['fail']})")
    budget = _bytes(memory)
    ok = all(r[4]["rss"] <= budget and r[4]["total"] <= 10 * r[3] for r in rows)
    print(f"\ngoal (peak RSS <= {memory}, check <= 10x raw pass, at every size): {'met' if ok else 'NOT met'}",
          flush=True)


def _bytes(text: str) -> int:
    from onceproof.checkers.partitioned import parse_size

    return parse_size(text)


if __name__ == "__main__":
    sys.exit(main())
