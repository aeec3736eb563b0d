"""Seconds from nothing to ready, per target and for the usual sets, on this machine.

    .venv/bin/python benchmarks/startup.py [--repeat N]

Goals (issue "Foundation"): {Kafka 1 node + Redis + Postgres + Toxiproxy} <= 10 s,
{3-node Kafka} <= 25 s on 2 cores. Figures are medians of --repeat runs, measured in one go."""
from __future__ import annotations

import argparse
import statistics
import time

from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.local import LocalRuntime

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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    print(f"{'set':<42} {'ready (median s)':>17} {'min':>6} {'max':>6} {'teardown s':>11} {'goal':>6}")
    for name, spec in SETS.items():
        runs = [measure(spec) for _ in range(args.repeat)]
        ready = [r for r, _ in runs]
        goal = GOALS.get(name)
        verdict = "" if goal is None else ("<= %.0f ok" % goal if statistics.median(ready) <= goal else "> %.0f MISSED" % goal)
        print(f"{name:<42} {statistics.median(ready):>17.2f} {min(ready):>6.2f} {max(ready):>6.2f} "
              f"{statistics.median([s for _, s in runs]):>11.2f} {verdict:>6}", flush=True)


if __name__ == "__main__":
    main()
