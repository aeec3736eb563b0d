"""`onceproof explore`'s costs, on this machine, measured in one go.

    .venv/bin/python benchmarks/explore.py [--schedules 3] [--run-duration 15s]
                                           [--budget 8m] [--repeat 1] [--skip-search]

1. Schedules per minute with the targets kept up between runs (a Session: data reset between
   examples) vs started and stopped for every run (what `onceproof run` does): the same
   `--schedules` schedules, drawn from plans/at-least-once.yaml's default space, run both ways.
2. Time to a minimal plan for each broken reference pipeline (at-least-once: duplicate,
   commit-before-process: lost) under the default space (the plans have no `explore:`
   section): seconds from the start of `explore` (targets included) to the first failure, to
   the first failing schedule of <= 2 faults and to the last shrink step, its size, and the
   minimal plan's reproduction rate (explore's --confirm runs); median of --repeat searches.
Figures print side by side; run folders go to a temporary folder, removed at the end."""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from onceproof.explore.driver import explore
from onceproof.explore.replay import plan_for
from onceproof.explore.space import Space
from onceproof.plan import load_plan, parse_duration
from onceproof.runner import execute
from onceproof.session import Session

ROOT = Path(__file__).resolve().parents[1]
BROKEN = {"at-least-once": "duplicate", "commit-before-process": "lost"}


def _schedules(n: int, run_s: float) -> list:
    """`n` schedules of the default space, drawn by Hypothesis (seeded)."""
    from hypothesis import HealthCheck, given, seed, settings

    plan = load_plan(ROOT / "plans/at-least-once.yaml")
    out: list = []

    @seed(11)
    @settings(database=None, deadline=None, max_examples=n * 5, suppress_health_check=list(HealthCheck))
    @given(Space(None, plan.target_names(), run_s).strategy())
    def draw(s) -> None:  # noqa: ANN001
        if len(out) < n and len(s) >= 2 and s not in out:
            out.append(s)

    draw()
    return out


def per_minute(n: int, run_s: float, work: Path) -> None:
    plan = load_plan(ROOT / "plans/at-least-once.yaml")
    schedules = _schedules(n, run_s)
    t = time.monotonic()
    with Session(plan, work / "session-logs") as session:
        for i, s in enumerate(schedules):
            session.execute(plan_for(plan, s, run_s), work / f"reused-{i}")
    reused = time.monotonic() - t
    t = time.monotonic()
    for i, s in enumerate(schedules):
        execute(plan_for(plan, s, run_s), work / f"restarted-{i}")
    restarted = time.monotonic() - t
    print(f"\nschedules per minute ({n} schedules, {run_s:g}s of load each, plans/at-least-once.yaml):")
    print(f"  {'targets kept up (Session)':32} {n / reused * 60:6.2f}/min  ({reused / n:5.1f} s per schedule, "
          "targets start included)")
    print(f"  {'targets restarted per run':32} {n / restarted * 60:6.2f}/min  ({restarted / n:5.1f} s per schedule)")
    print(f"  ratio kept-up / restarted: {restarted / reused:.2f}x")


def time_to_minimal(budget: str, run_s: float, repeat: int, work: Path) -> None:
    print(f"\ntime to a minimal plan (budget {budget}, {run_s:g}s of load per run, median of {repeat}):")
    for name, anomaly in BROKEN.items():
        times, sizes, tried, firsts, small = [], [], [], [], []
        for r in range(repeat):
            t = time.monotonic()
            res = explore(ROOT / f"plans/{name}.yaml", budget=budget, run_duration=run_s,
                          out=work / f"{name}-{r}", seed=100 + r)
            overhead = time.monotonic() - t - res.search.seconds  # targets start/stop, reproduction runs

            def at(index: int) -> float:
                return sum(e.seconds for e in res.search.examples if e.index <= index)

            if res.search.minimal is None:
                times.append(float("inf"))
                firsts.append(float("inf"))
                small.append(float("inf"))
                sizes.append(-1)
            else:
                last = res.search.steps[-1]
                times.append(at(last.index))
                firsts.append(at(res.search.steps[0].index))
                small.append(next((at(e.index) for e in res.search.steps if len(e.schedule) <= 2), float("inf")))
                sizes.append(len(last.schedule))
            tried.append(len(res.search.examples))
            repro = (res.summary["minimal"] or {}).get("reproduction") or {}
            print(f"  {name:24} run {r + 1}: {res.summary['anomaly'] or 'nothing found'}; first failure at "
                  f"{firsts[-1]:.0f} s, <= 2 faults at {small[-1]:.0f} s, minimal {sizes[-1]} fault(s) at "
                  f"{times[-1]:.0f} s (search time; + {overhead:.0f} s targets and reproduction); "
                  f"{tried[-1]} schedules; ended {res.search.ended}; reproduced "
                  f"{repro.get('failed', '-')}/{repro.get('runs', '-')}; minimal: "
                  f"{[f.label() for f in res.minimal or ()]}")
        print(f"  {name:24} median of {repeat}: first failure {statistics.median(firsts):.0f} s, <= 2 faults "
              f"{statistics.median(small):.0f} s, minimal plan of {statistics.median(sizes):g} fault(s) "
              f"{statistics.median(times):.0f} s ({anomaly} sought)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--schedules", type=int, default=3)
    ap.add_argument("--run-duration", default="15s")  # explore's own default (10 s hid the Kafka partition's duplicates)
    ap.add_argument("--budget", default="8m")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--skip-search", action="store_true", help="only part 1")
    args = ap.parse_args()
    run_s = parse_duration(args.run_duration)
    with tempfile.TemporaryDirectory(prefix="onceproof-bench-explore-") as tmp:
        per_minute(args.schedules, run_s, Path(tmp))
        if not args.skip_search:
            time_to_minimal(args.budget, run_s, args.repeat, Path(tmp))


if __name__ == "__main__":
    main()
