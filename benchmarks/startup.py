"""Seconds from nothing to ready, per target and for the usual sets, on this machine.

    .venv/bin/python benchmarks/startup.py [--repeat N] [--compare-only]

Goals (issue "Foundation"): {Kafka 1 node + Redis + Postgres + Toxiproxy} <= 10 s,
{3-node Kafka} <= 25 s on 2 cores. Figures are medians of --repeat runs, measured in one go.

Then the same set on the `local` and the `docker` runtime side by side, runs alternating
(local, docker, local, ...) so both see the same load; goal (issue 12): docker <= 2x local.
Timed from the runtime's creation (docker: the run's network) to every node serving;
the images must exist already (`onceproof setup --images`). `--compare-only`: only that."""
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--compare-only", action="store_true", help="only local vs docker")
    args = ap.parse_args()
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
