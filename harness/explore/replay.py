"""The judge `explore` gives its search: a schedule becomes a normal plan (the base plan with
`faults:` replaced, the load shortened, as `plan_for` writes it), run on the engine up to
`replays` times; it fails if at least `need` replays end invalid with the anomaly sought.
The folders of runs that did not end invalid are removed once judged (EngineJudge._drop says
why); `keep_passing` keeps them.

Why `need` = 1 of `replays` = 1 by default (`--runs` raises it): the checker has no false
alarms to filter out (an anomaly is proof the schedule CAN break the pipeline; a correct
pipeline is never accused, tests/ prove it per anomaly), so k > 1 is never needed; n > 1 only
keeps the shrinker from dropping a candidate that fails sometimes, and costs n runs on every
candidate that really passes. Measured here (2 shared cores): failures whose mechanism is a
fault that opens the window itself reproduce every time, so n = 1 loses nothing on them:
commit-before-process's minimal `kill postgres` failed again in 3 of 3 reproduction runs,
at-least-once's `pause postgres` + `partition kafka-1` failed in 5 of its 5 shrink variants that
kept the pause over the partition's start, and `run plans/at-least-once.yaml --runs 3` caught
`duplicate` 3 of 3; in an explore with 2 replays no shrink candidate's second replay changed
its verdict. Failures that need a kill to land in a window of tens of milliseconds are the
other kind: at-least-once failed once under 3 latencies and a replica kill, and every one of
the 6 ddmin candidates (each a subset) passed its one run. With a per-run rate p ~ 1/4, n = 3
would still drop such a candidate 42% of the time at 3x the cost, so n stays 1 and the search
relies on finding the deterministic mechanism (which the default space contains), and the
reproduction rate explore reports at the end (driver.py, --confirm) tells the user which kind
they got. Replays stop early: at the `need`-th
failure, or when `need` can no longer be reached. Before the first failure (Hypothesis's
generation, nothing sought yet) a schedule is run once: a miss there only moves the search on
to the next schedule, while in shrinking a miss would throw away a smaller failing plan."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from onceproof.explore.search import Judgement
from onceproof.explore.space import Schedule, schedule_entries
from onceproof.plan import Plan
from onceproof.repeat import anomalies_of, derive_plan, derive_seed

__all__ = ["EngineJudge", "plan_for"]


def plan_for(base: Plan, schedule: Schedule, run_duration_s: float, seed: int | None = None) -> Plan:
    """The plan that runs `schedule`: `base` with its faults replaced by the schedule's, a load
    of `run_duration_s` seconds, and `seed` (default: the base plan's). Raises PlanError."""
    changes: dict[str, Any] = {"faults": schedule_entries(schedule), "workload.duration": run_duration_s}
    if seed is not None:
        changes["seed"] = seed
    return derive_plan(base, changes, "<explored schedule>")


@dataclass
class EngineJudge:
    """Runs each schedule with `execute(plan, out_dir) -> RunResult` (a Session's, so the
    targets stay up) into `out_dir/examples/<example>-<replay>`; `on_run(folder, result)`
    after each run; `stopped()` says whether to give up (Ctrl-C)."""

    base: Plan
    execute: Callable[[Plan, Path], Any]
    out_dir: Path
    run_duration_s: float
    replays: int = 1
    need: int = 1
    on_run: Callable[[Path, Any], None] | None = None
    keep_passing: bool = False
    count: int = 0  # schedules judged
    runs: int = 0
    removed: int = 0  # run folders removed (see `_keep`)
    removed_bytes: int = 0

    def __call__(self, schedule: Schedule, sought: str | None) -> Judgement:
        self.count += 1
        found: list[dict[str, Any]] = []
        hits, last_failing, anomaly, cut_short = 0, None, sought, False
        replays = self.replays if sought is not None else 1  # see the module's docstring
        for j in range(1, replays + 1):
            plan = plan_for(self.base, schedule, self.run_duration_s, derive_seed(self.base.seed, j))
            folder = self.out_dir / "examples" / f"{self.count:04d}-{j}"
            result = self.execute(plan, folder)
            self.runs += 1
            kinds = anomalies_of(result.results)
            found.append({"folder": str(folder.relative_to(self.out_dir)), "valid": result.valid, "anomalies": kinds,
                          "seconds": result.results.get("duration_s")})
            if self.on_run:
                self.on_run(folder, result)
            if not self.keep_passing and result.valid is not False and not result.results.get("interrupted"):
                self._drop(folder, found[-1], result.results)
            if result.results.get("interrupted"):
                cut_short = True
                break
            hit_kind = _hit(result.valid, kinds, sought)
            if hit_kind:
                hits += 1
                anomaly = anomaly or hit_kind
                last_failing = folder
            if hits >= min(self.need, replays) or hits + (replays - j) < min(self.need, replays):
                break
        fails = hits >= min(self.need, replays)
        return Judgement(fails, anomaly if fails else None, found,
                         {"last_failing": str(last_failing) if last_failing else None, "cut_short": cut_short,
                          "hits": hits})


    def _drop(self, folder: Path, entry: dict[str, Any], results: dict[str, Any]) -> None:
        """Remove the folder of a run that did not fail (valid or unknown): over a long budget the
        examples would fill the disk (~10 MB a run of 10 s), and what a user needs of them is in
        explore.json / explore.html (the schedule, the verdict, the anomalies, and for an unknown
        verdict the run's first error, kept in `entry["errors"]`). Failing runs are kept."""
        import shutil

        why = [str(x) for x in results.get("errors") or []][:2]
        why += [f"{name}: {c['reason']}" for name, c in (results.get("checkers") or {}).items()
                if isinstance(c, dict) and c.get("valid") is not True and c.get("reason")][:2]
        if why:
            entry["errors"] = [x[:300] for x in why]
        self.removed_bytes += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
        shutil.rmtree(folder, ignore_errors=True)
        self.removed += 1
        entry["folder"] = None


def _hit(valid: Any, kinds: dict[str, int], sought: str | None) -> str | None:
    """The anomaly a run failed with: the one sought if it is among the run's; before any is
    sought, the run's most frequent one (None: the run is not invalid with an anomaly)."""
    if valid is not False or not kinds:
        return None
    if sought is not None:
        return sought if sought in kinds else None
    return max(sorted(kinds), key=lambda k: kinds[k])
