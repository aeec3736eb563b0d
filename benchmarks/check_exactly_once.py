"""Benchmark: the exactly-once check of 1M- and 10M-record histories, from the file on disk.

Generates histories (benchmarks/gen_history.c) with realistic noise (interleaved sends, client retries that
show up as duplicates, info outcomes applied or not, late effects, incremental
observations and a final read), then, for each size, prints side by side:
the time of `checkers.exactly_once.check(read_history(path))` (in a fresh process, so
that its peak RSS is its own), that peak RSS, and a raw pass over the same bytes
(read the file in chunks and count its lines); with --spark, the same check on Spark in
local mode and whether its result is identical; and where the local check's time goes (wall and
CPU seconds of its phases: the spill pass, the partitions' checks, the merge). Histories are generated once and kept in
--cache. Goals at every size (20M, 100M, 200M records): peak RSS <= 2 GiB (the budget),
check <= 10x the raw pass.

    .venv/bin/python benchmarks/check_exactly_once.py              # 1M and 10M
    nice .venv/bin/python benchmarks/check_exactly_once.py --events 20000000 --events 100000000 --spark
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from onceproof import home

ROOT = Path(__file__).resolve().parent.parent


def generate(path: str, n_records: int, seed: int = 1, keys: int = 1000) -> dict[str, int]:
    """Write a history of about `n_records` records with benchmarks/gen_history.c (compiled once
    with the system's C compiler into the cache folder); return what was injected (its counts:
    ok/fail/info sends, duplicates, lost, phantom, late effects, records). Raises SystemExit
    when there is no C compiler or the generator fails."""
    src = ROOT / "benchmarks" / "gen_history.c"
    exe = Path(path).parent / "gen_history"
    if not exe.exists() or exe.stat().st_mtime < src.stat().st_mtime:
        cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
        if cc is None:
            raise SystemExit("the history generator needs a C compiler (cc or gcc, or set CC)")
        subprocess.run([cc, "-O2", "-o", str(exe) + ".tmp", str(src)], check=True)
        os.replace(str(exe) + ".tmp", exe)
    proc = subprocess.run([str(exe), path, str(n_records), str(seed), str(keys), path + ".sink"],
                          capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(f"gen_history failed ({proc.returncode}): {proc.stderr.strip()}")
    injected: dict[str, int] = orjson.loads(proc.stdout)
    return injected


def expected(injected: dict[str, int]) -> dict[str, int]:
    """The anomaly counts the check must find in a generated history (none but those injected:
    no progress records, so an ok send never applied is lost; no per-key order asked)."""
    return {"lost": injected["lost"], "duplicate": injected["duplicates"], "phantom": injected["phantom"],
            "premature": 0, "flicker": 0, "reorder": 0, "state-mismatch": 0}


def raw_pass(path: str) -> tuple[float, float]:
    """(wall s, CPU s) of reading the file in 16 MiB chunks and counting its lines."""
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(16 << 20):
            n += chunk.count(b"\n")
    return time.perf_counter() - t0, time.process_time() - c0


# in a fresh interpreter, the way a user runs it (`onceproof check --json --memory M`); the peak
# RSS is the child's VmHWM (ru_maxrss would also count the parent's peak before the exec) plus,
# per partition worker, the largest growth of a worker's resident set over the pages it shares
# with the child (a bound on the workers' sum); CPU: the child's and its workers'
_CHILD = """
import resource, sys, time
t0 = time.perf_counter()
from onceproof.cli import main
from onceproof.checkers import partitioned
code = main(sys.argv[1:])
hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]
ru = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
rss = int(hwm) * 1024 + partitioned.WORKER_PEAK * partitioned.default_workers()
cpu = ru.ru_utime + ru.ru_stime + kids.ru_utime + kids.ru_stime
print('BENCH', time.perf_counter() - t0, rss, cpu, file=sys.stderr)
print('PHASES', ' '.join(f'{k}={w:.3f},{c:.3f}' for k, (w, c) in partitioned.PHASES.items()), file=sys.stderr)
"""


def measure(path: str, memory: str, engine: str = "local") -> dict[str, object]:
    cmd = [sys.executable, "-c", _CHILD, "check", "--json", "--memory", memory, path]
    if engine != "local":
        cmd[5:5] = ["--engine", engine]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    if proc.returncode not in (0, 1, 3):
        raise SystemExit(proc.stderr)
    out = orjson.loads(proc.stdout.strip().splitlines()[-1])
    lines = proc.stderr.strip().splitlines()
    _, secs, rss, cpu = lines[-2].split()
    phases = {k: tuple(float(x) for x in v.split(",")) for k, v in (p.split("=") for p in lines[-1].split()[1:])}
    r = out["checkers"]["exactly-once"]
    return {"total": float(secs), "rss": int(rss), "cpu": float(cpu), "valid": out["valid"], "anomalies": r["anomalies"],
            "records": out["stats"]["records"], "result": out, "phases": phases}


def cached(cache: Path, n: int, seed: int) -> tuple[str, dict[str, int]]:
    """The history of `n` records (generated once, kept in `cache` with what was injected)."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"history-c{n}-{seed}.jsonl"  # "c": written by gen_history.c
    meta = cache / f"history-c{n}-{seed}.json"
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
    ap.add_argument("--cache", type=Path, default=home.home() / "bench",
                    help="where generated histories are kept (default $ONCEPROOF_HOME/bench, i.e. ~/.cache/onceproof/bench)")
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
        m["expected"] = m["anomalies"] == expected(injected)
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
          f"{'spill s':>7} {'spill cpu':>9} {'parts s':>7} {'parts cpu':>9} {'merge s':>7} "
          f"{'spark s':>8} {'same':>5} {'verdict':>8} {'as injected':>11}  anomalies found")
    for _n, _inj, size, raw, m, spark in rows:
        anomalies = {k: v for k, v in m["anomalies"].items() if v}
        print(f"{m['records']:>12,} {size / 2**30:>8.2f} {raw:>10.2f} {m['total']:>8.1f} {m['total'] / raw:>6.1f} "
              f"{m['raw_cpu']:>9.2f} {m['cpu']:>11.1f} {m['cpu'] / m['raw_cpu']:>9.1f} "
              f"{m['rss'] / 2**20:>12.0f} {_ph(m, 'spill', 0):>7.1f} {_ph(m, 'spill', 1):>9.1f} "
              f"{_ph(m, 'check', 0):>7.1f} {_ph(m, 'check', 1):>9.1f} {_ph(m, 'merge', 0):>7.2f} "
              f"{spark['total'] if spark else float('nan'):>8.1f} "
              f"{str(spark['same']) if spark else '-':>5} {str(m['valid']):>8} {str(m['expected']):>11}  {anomalies}")
    for _n, _inj, _size, _raw, _m, spark in rows:
        if spark:  # where the Spark job's time goes (scan: pass 1 on the executors; fold: the driver)
            print(f"spark: {spark['records']:,} records: " + ", ".join(
                f"{k} {w:.1f} s" for k, (w, _c) in spark["phases"].items())
                + f"; driver peak RSS {spark['rss'] / 2**20:.0f} MiB")
    budget = _bytes(memory)
    ok = all(r[4]["rss"] <= budget and r[4]["total"] <= 10 * r[3] and r[4]["expected"]
             and (r[5] is None or r[5]["same"]) for r in rows)
    print(f"\ngoal (peak RSS <= {memory}, check <= 10x raw pass, anomalies as injected, Spark the same, at every size): {'met' if ok else 'NOT met'}",
          flush=True)


def _ph(m: dict[str, Any], name: str, i: int) -> float:
    """A phase's wall (i=0) or CPU (i=1) seconds in a measured check; NaN when it did not run
    (a history that fits in memory is checked without partitions)."""
    got = m["phases"].get(name)
    return float(got[i]) if got else float("nan")


def _bytes(text: str) -> int:
    from onceproof.checkers.partitioned import parse_size

    return parse_size(text)


if __name__ == "__main__":
    sys.exit(main())
