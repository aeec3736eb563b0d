"""Seconds from nothing to ready, per target and for the usual sets, on this machine.

    .venv/bin/python benchmarks/startup.py [--repeat N] [--compare-only]

Goals (issue "Foundation"): {Kafka 1 node + Redis + Postgres + Toxiproxy} <= 10 s,
{3-node Kafka} <= 25 s on 2 cores. Figures are medians of --repeat runs, measured in one go.

Then the same set on the `local` and the `docker` runtime side by side, runs alternating
(local, docker, local, ...) so both see the same load; goal (issue 12): docker <= 2x local.
Timed from the runtime's creation (docker: the run's network) to every node serving;
the images must exist already (`onceproof setup --images`). `--compare-only`: only that.

`--cds`: only a Kafka broker's start with and without its class-data-sharing archive
(targets/kafka/cds.py), alternating runs: seconds to ready and the JVM's CPU seconds by then."""
from __future__ import annotations

import argparse
import statistics
import time

from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.local import LocalRuntime
from onceproof.targets.runtime import make_runtime

SETS = {
    "redis (+toxiproxy)": TargetsSpec(redis="aof-everysec"),
    "postgres (+toxiproxy)": TargetsSpec(postgres=True),
    "kafka 1 node (+toxiproxy)": TargetsSpec(kafka_nodes=1),
    "kafka 1 + redis + postgres + toxiproxy": TargetsSpec(kafka_nodes=1, redis="aof-everysec", postgres=True),
    "kafka 3 nodes (+toxiproxy)": TargetsSpec(kafka_nodes=3),
}
GOALS = {"kafka 1 + redis + postgres + toxiproxy": 10.0, "kafka 3 nodes (+toxiproxy)": 25.0}


def measure(spec: TargetsSpec) -> tuple[float, float]:
    rt = LocalRuntime()
    d = Deployment.create(rt, spec)
    t = time.monotonic()
    try:
        d.start(timeout=120)
        ready = time.monotonic() - t
    finally:
        t2 = time.monotonic()
        d.stop()
        stop = time.monotonic() - t2
    return ready, stop


COMPARED = "kafka 1 + redis + postgres + toxiproxy"


def measure_on(kind: str, spec: TargetsSpec) -> float:
    """Seconds from creating a `kind` runtime to every node of `spec` serving."""
    t = time.monotonic()
    rt = make_runtime(kind)
    d = Deployment.create(rt, spec)
    try:
        d.start(timeout=120)
        return time.monotonic() - t
    finally:
        d.stop()


def compare(repeat: int) -> None:
    times: dict[str, list[float]] = {"local": [], "docker": []}
    for _ in range(repeat):
        for kind in times:
            times[kind].append(measure_on(kind, SETS[COMPARED]))
    local, docker = (statistics.median(times[k]) for k in ("local", "docker"))
    print(f"\n{COMPARED}, seconds to ready (median of {repeat}, alternating runs)")
    print(f"{'runtime':<10} {'median s':>9} {'min':>6} {'max':>6}")
    for kind, xs in times.items():
        print(f"{kind:<10} {statistics.median(xs):>9.2f} {min(xs):>6.2f} {max(xs):>6.2f}")
    ratio = docker / local
    print(f"docker / local = {ratio:.2f}x (goal <= 2x: {'ok' if ratio <= 2 else 'MISSED'})", flush=True)


PER_TARGET = {"redis": TargetsSpec(redis="none"), "postgres": TargetsSpec(postgres=True),
              "kafka 1": TargetsSpec(kafka_nodes=1)}


def compare_per_target(repeat: int) -> None:
    """Each target alone (with Toxiproxy, as every deployment) on both runtimes (alternating runs): where the docker runtime's extra
    time goes (a container's own cost, or the server in it)."""
    print(f"\n{'target':<10} {'local s':>8} {'docker s':>9} {'ratio':>6}   (median of {repeat}, alternating runs)")
    for name, spec in PER_TARGET.items():
        times: dict[str, list[float]] = {"local": [], "docker": []}
        for _ in range(repeat):
            for kind in times:
                times[kind].append(measure_on(kind, spec))
        local, docker = (statistics.median(times[k]) for k in ("local", "docker"))
        print(f"{name:<10} {local:>8.2f} {docker:>9.2f} {docker / local:>5.1f}x", flush=True)


def _jvm_cpu_s(pid: int) -> float:
    """utime + stime of a process so far, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    import os

    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def compare_cds(repeat: int) -> None:
    from onceproof.targets.kafka import cds

    if not cds.jvm_options():
        raise SystemExit("no class-data-sharing archive: run `onceproof setup` first")
    real = cds.jvm_options
    times: dict[str, list[tuple[float, float]]] = {"without archive": [], "with archive": []}
    for _ in range(repeat):
        for label in times:
            cds.jvm_options = real if label == "with archive" else (lambda: [])  # type: ignore[assignment]
            d = Deployment.create(LocalRuntime(), TargetsSpec(kafka_nodes=1))
            try:
                node = d.servers()[0]
                t = time.monotonic()
                node.start()
                times[label].append((time.monotonic() - t, _jvm_cpu_s(node._popen.pid)))  # type: ignore[union-attr]
            finally:
                d.stop()
    cds.jvm_options = real  # type: ignore[assignment]
    print(f"\nkafka broker start (median of {repeat}, alternating runs)")
    print(f"{'':<16} {'ready s':>8} {'JVM CPU s':>10}")
    for label, xs in times.items():
        print(f"{label:<16} {statistics.median(x for x, _ in xs):>8.2f} {statistics.median(c for _, c in xs):>10.2f}")
    (w, wc), (o, oc) = ((statistics.median(x for x, _ in xs), statistics.median(c for _, c in xs))
                        for xs in (times["with archive"], times["without archive"]))
    print(f"with / without: {w / o:.2f}x wall, {wc / oc:.2f}x CPU", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare-only", action="store_true", help="only local vs docker")
    ap.add_argument("--cds", action="store_true", help="only a broker with vs without its CDS archive")
    ap.add_argument("--per-target", action="store_true", help="only each target alone, local vs docker")
    args = ap.parse_args()
    if args.per_target:
        compare_per_target(args.repeat)
        return
    if args.cds:
        compare_cds(args.repeat)
        return
    if args.compare_only:
        compare(args.repeat)
        return
    print(f"{'set':<42} {'ready (median s)':>17} {'min':>6} {'max':>6} {'teardown s':>11} {'goal':>6}")
    for name, spec in SETS.items():
        runs = [measure(spec) for _ in range(args.repeat)]
        ready = [r for r, _ in runs]
        goal = GOALS.get(name)
        verdict = "" if goal is None else ("<= %.0f ok" % goal if statistics.median(ready) <= goal else "> %.0f MISSED" % goal)
        print(f"{name:<42} {statistics.median(ready):>17.2f} {min(ready):>6.2f} {max(ready):>6.2f} "
              f"{statistics.median([s for _, s in runs]):>11.2f} {verdict:>6}", flush=True)
    compare(args.repeat)


if __name__ == "__main__":
    main()
