"""The highest rate the workload sustains with full history recording, side by side with the
native tools, same message size, measured in one run on the same servers:

    .venv/bin/python benchmarks/load.py [--seconds 10] [--events 1000000] [--processes 1,2] [--only kafka]

- Kafka: onceproof's workload (idempotent producer, acks=all, every send's invoke and
  completion written to a history) vs Kafka's own org.apache.kafka.tools.ProducerPerformance
  with the same producer settings; once per `workload.processes` value asked (1: the load on
  a thread of the harness; N > 1: N load processes, harness/loadprocs.py, whose shards are then
  merged), each rate also given per process ("per core": one Python process is one core's
  worth of work) next to the tool's, and the merge's time.
- Redis: onceproof's workload (pipelined XADD batches) vs redis-benchmark running XADD
  with the same pipelining.
Goals (issue "The run"): >= 100K events/s and >= 0.5x the native tool; issue 14: >= 0.5x the
native tool per core."""
from __future__ import annotations

import argparse
import re
import resource
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from onceproof.loadprocs import ProcessWorkload, merge_shards
from onceproof.recorder import HistoryWriter
from onceproof.sources import KafkaSource, RedisSource, encode
from onceproof.workload import Workload
from onceproof.targets import kafka as kafka_mod
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.local import LocalRuntime


def ours(source, seconds: float, rate: float, tmp: Path, name: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    rate_, lines, _ = ours_cpu(source, seconds, rate, tmp, name)
    return rate_, lines


def ours_cpu(source, seconds: float, rate: float, tmp: Path, name: str) -> tuple[float, int, float]:  # type: ignore[no-untyped-def]
    """(acknowledged events/s, history lines, acknowledged events per CPU second of this
    process, every thread of it: the client library's too)."""
    history = HistoryWriter(tmp / f"{name}.jsonl")
    w = Workload(source, history, rate=rate, keys=50, seed=1, payload_bytes=16)
    t, cpu = time.monotonic(), time.process_time()
    w.run(seconds, threading.Event())
    w.finish(60)
    elapsed, cpu = time.monotonic() - t, time.process_time() - cpu
    history.close()
    lines = sum(1 for _ in open(tmp / f"{name}.jsonl", "rb"))
    return w.stats.ok / elapsed, lines, w.stats.ok / cpu


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def ours_processes(d: Deployment, n: int, seconds: float, rate: float, tmp: Path) -> tuple[float, int, float, float]:
    """N load processes on topic bench.procs{n}: (acknowledged events/s, history lines, merge
    seconds, acknowledged events per CPU second of the load processes)."""
    topic = f"bench.procs{n}"
    KafkaSource(d, topic, 3).setup()
    plan = SimpleNamespace(seed=1, workload=SimpleNamespace(
        processes=n, rate=rate, source=f"kafka:{topic}", partitions=3, format=None, keys=50, payload_bytes=16))
    run_dir = tmp / f"procs{n}"
    (run_dir / "logs").mkdir(parents=True)
    main = HistoryWriter(run_dir / "history.jsonl")
    cpu = _children_cpu()
    with ProcessWorkload(plan, d, run_dir, main.t0) as w:
        w.start()
        t = time.monotonic()
        w.run(seconds, threading.Event())
        w.finish(60)
        elapsed = time.monotonic() - t
    cpu = _children_cpu() - cpu  # the processes were reaped on the way out of the with
    main.close()
    t = time.monotonic()
    merge_shards(run_dir)
    merge_s = time.monotonic() - t
    lines = sum(1 for _ in open(run_dir / "history.jsonl", "rb"))
    (run_dir / "history.jsonl").unlink()
    return w.stats.ok / elapsed, lines, merge_s, w.stats.ok / cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1_000_000, help="asked rate (open loop); far above what fits")
    ap.add_argument("--events", type=int, default=1_000_000, help="records for the native tools")
    ap.add_argument("--processes", default="1,2", help="workload.processes values to measure on Kafka")
    ap.add_argument("--only", choices=["kafka", "redis"], help="measure one target only")
    args = ap.parse_args()
    counts = [int(x) for x in args.processes.split(",")]
    size = len(encode(("e1234567", "k12", 1234, "x" * 16)))
    rt = LocalRuntime()
    d = Deployment.create(rt, TargetsSpec(kafka_nodes=1, redis="none"))
    rows = []
    kafka_rows: list[tuple[int, float, float, int, float, float, float]] = []
    try:
        d.start()
        with tempfile.TemporaryDirectory() as tmpdir:
            tmp = Path(tmpdir)
            if args.only != "redis":
                KafkaSource(d, "bench.native", 3).setup()
                cpu = _children_cpu()
                out = subprocess.run(
                    ["java", "-Xmx1g", "-cp", kafka_mod.classpath(), "org.apache.kafka.tools.ProducerPerformance",
                     "--topic", "bench.native", "--num-records", str(args.events), "--record-size", str(size),
                     "--throughput", "-1", "--producer-props", f"bootstrap.servers={d.kafka_bootstrap('load')}",
                     "acks=all", "enable.idempotence=true", "linger.ms=5"],
                    capture_output=True, text=True, timeout=300).stdout
                # the tool's CPU seconds include the JVM's start (about 1-2 s): its per-CPU figure
                # is on the low side
                native_cpu = args.events / (_children_cpu() - cpu)
                m = re.findall(r"([\d.]+) records/sec", out)
                native = float(m[-1]) if m else float("nan")
                for n in counts:
                    if n == 1:
                        src = KafkaSource(d, "bench.ours", 3)
                        src.setup()
                        rate, lines, per_cpu = ours_cpu(src, args.seconds, args.rate, tmp, "kafka")
                        (tmp / "kafka.jsonl").unlink()
                        merge_s = 0.0
                    else:
                        rate, lines, merge_s, per_cpu = ours_processes(d, n, args.seconds, args.rate, tmp)
                    kafka_rows.append((n, rate, native, lines, merge_s, per_cpu, native_cpu))
            if args.only != "kafka":
                rsrc = RedisSource(d, "bench.ours", 1)
                rsrc.setup()
                rrate, rlines = ours(rsrc, args.seconds, args.rate, tmp, "redis")
                payload = "x" * 16
                out = subprocess.run(
                    ["redis-benchmark", "-h", "127.0.0.1", "-p", str(d.proxies["load-redis"].listen), "-n", str(args.events),
                     "-P", "100", "-c", "1", "-q", "XADD", "bench.native", "*", "id", "e1234567", "key", "k12",
                     "seq", "1234", "payload", payload], capture_output=True, text=True, timeout=600).stdout
                m = re.findall(r"([\d.]+) requests per second", out)
                rnative = float(m[-1]) if m else float("nan")
                rows.append(("redis", rrate, rnative, rlines))
    finally:
        d.stop()
    print(f"message size {size} bytes, through the load group's Toxiproxy, {args.seconds:g}s of onceproof load")
    if kafka_rows:
        print("kafka: events/s (wall clock, ratio per process) and events per CPU second (all threads; ratio per core)")
        print(f"{'processes':>9} {'onceproof ev/s':>15} {'per process':>12} {'native ev/s':>12} {'ratio/proc':>10} "
              f"{'ours ev/cpu-s':>13} {'native ev/cpu-s':>15} {'ratio/core':>10} {'history lines':>14} {'merge s':>8}")
        for n, r, native, lines, merge_s, per_cpu, native_cpu in kafka_rows:
            print(f"{n:>9} {r:>15,.0f} {r / n:>12,.0f} {native:>12,.0f} {r / n / native:>10.2f} "
                  f"{per_cpu:>13,.0f} {native_cpu:>15,.0f} {per_cpu / native_cpu:>10.2f} {lines:>14,} {merge_s:>8.1f}")
    if rows:
        print(f"{'target':<8} {'onceproof ev/s':>15} {'native ev/s':>13} {'ratio':>7} {'history lines':>14}")
        for name, r, n, lines in rows:
            print(f"{name:<8} {r:>15,.0f} {n:>13,.0f} {r / n:>7.2f} {lines:>14,}")

if __name__ == "__main__":
    main()
