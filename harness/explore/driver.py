"""The explore job, shared by `onceproof explore` and `onceproof.explore(...)` in pytest: the
plan's targets started once (a Session), the search run with the engine judge, then the out
folder written: minimal.yaml (a normal plan: `onceproof run minimal.yaml` reproduces),
minimal-run/ (the last failing replay's run folder, with its report), explore.json and
explore.html (examples tried, verdicts, shrink steps). Written also after Ctrl-C, with the
best plan found so far. No run logic here: runs are `runner.execute` calls."""
from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from onceproof.errors import ExitCode
from onceproof.explore.replay import EngineJudge
from onceproof.explore.search import Search, SearchResult
from onceproof.explore.space import Schedule, Space, schedule_entries
from onceproof.plan import Plan, load_plan, parse_duration, parse_plan_yaml, read_plan_text

__all__ = ["ExploreResult", "explore", "OUT_FILES"]

OUT_FILES = ("minimal.yaml", "explore.json", "explore.html")
OUT_DIRS = ("examples", "minimal-run", "targets-logs", "reproduction")
CONFIRM = 3  # the minimal plan's reproduction runs (the README's measurements say why 3)
TEARDOWN_S = 10.0  # held back from the budget (at most a tenth of it) for stopping the targets, the outputs


@dataclass
class ExploreResult:
    """What an explore ends with: the out folder, the search's result, the minimal plan file
    (None: nothing failed), the minimal schedule's reproduction (failing replays, replays), the
    exit code (1: a failing schedule found; 0: the budget ran out without one; 3: no run gave a
    verdict) and explore.json's dict."""

    out_dir: Path
    search: SearchResult
    minimal_plan: Path | None
    reproduced: tuple[int, int]  # the reproduction runs' (failing with the anomaly, done), else the search's replays
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def minimal(self) -> Schedule | None:
        return self.search.minimal.schedule if self.search.minimal else None


class ExploreFolderError(ValueError):
    """The out folder holds files an explore did not write (bad input, exit 2)."""


def check_out(out: Path) -> None:
    """Raise ExploreFolderError unless `out` is absent, empty or a previous explore's folder."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExploreFolderError(f"--out {out}: not a folder; give a new or empty folder")
    foreign = [e.name for e in os.scandir(out) if e.name not in (*OUT_FILES, *OUT_DIRS)]
    if foreign:
        raise ExploreFolderError(f"--out {out}: the folder holds {', '.join(sorted(foreign)[:5])}, which explore "
                                 "did not write; give a new or empty folder")


def _plan_and_raw(plan: str | Path | Plan | dict[str, Any], overrides: dict[str, Any]) -> tuple[Plan, dict[str, Any]]:
    """The validated plan and the raw data minimal.yaml is written from: the user's own file
    (their values as they wrote them), else the plan's resolved form (secrets redacted)."""
    from onceproof.plan import apply_overrides, validate_plan

    if isinstance(plan, Plan):
        return plan, plan.resolved()
    if isinstance(plan, dict):
        data = dict(plan)
        apply_overrides(data, overrides)
        return validate_plan(data), dict(data)
    loaded = load_plan(plan, overrides)
    raw, _ = parse_plan_yaml(read_plan_text(plan), str(plan))
    apply_overrides(raw, overrides)
    return loaded, raw


def explore(plan: str | Path | Plan | dict[str, Any], *, budget: str | float = "15m", replays: int = 1,
            need: int = 1, run_duration: str | float = "15s", seed: int | None = None,
            out: str | Path | None = None, on_event: Callable[[str, Search], None] | None = None,
            on_progress: Callable[[Any], None] | None = None,
            search_holder: list[Search] | None = None, session: Any = None, confirm: int = CONFIRM,
            keep_passing: bool = False) -> ExploreResult:
    """Search `plan`'s fault space (its `explore:` section, or kill, pause, partition, latency
    and clock-skew over every node, up to 6 faults) for `budget` (a duration, e.g. "10m"):
    each schedule run for `run_duration` of load, judged failing when `need` of up to
    `replays` replays end invalid with the same anomaly kind (explore/replay.py says why 1 of
    1); dense schedules are tried first and the first failure is shrunk by delta debugging, then
    Hypothesis (explore/search.py). `seed`: Hypothesis's seed and the base seed
    of the runs (default: the plan's). `out`: the folder (default runs/<name>-explore-<time>).
    `on_event(kind, search)` after each example and at the end; `on_progress` gets the engine's
    Progress. `session`: a `session.Session` already up to run on (its targets must fit the
    plan's, see Session.compatible), else the plan's targets are started for this explore.
    `confirm`: once the search ends with a failure, minimal.yaml is run that many more times
    (`onceproof run --runs` machinery, into reproduction/) and its reproduction rate reported;
    the search holds back the time they take (its median run's, times `confirm`) from the
    budget. `keep_passing`: keep the folders of runs that did not fail (removed by default: see
    replay.EngineJudge._drop).
    The budget bounds the whole call, from its start: starting the targets, the search, the
    reproduction runs, stopping the targets. No run starts once it is spent (nor one with less
    than half a usual judgement's length left, nor, once a failure is found, one that would eat
    into the time held back for the reproduction runs; a reproduction run needs a usual run's
    length), so the
    call ends within `budget` plus at most one run's bounded length (its load, quiesce.max and
    its check) and the targets' stop (TEARDOWN_S is held back for it).
    Raises PlanError / ValueError / ExploreFolderError on bad input."""
    from onceproof.session import Session

    t_start = time.monotonic()  # the budget bounds the whole call, the targets' start and stop included
    budget_s = parse_duration(budget) if not isinstance(budget, (int, float)) else float(budget)
    run_s = parse_duration(run_duration) if not isinstance(run_duration, (int, float)) else float(run_duration)
    if budget_s <= 0 or run_s <= 0:
        raise ValueError("budget and run duration must be above zero")
    if not 1 <= need <= replays:
        raise ValueError(f"need {need} of {replays} replays: expected 1 <= need <= replays")
    if confirm < 0:
        raise ValueError(f"confirm {confirm}: expected 0 or more reproduction runs")
    overrides = {"seed": seed} if seed is not None else {}
    base, raw = _plan_and_raw(plan, overrides)
    space = Space(base.explore, base.target_names(), run_s)
    out_dir = Path(out) if out else Path("runs") / f"{base.name}-explore-{time.strftime('%Y%m%d-%H%M%S')}"
    check_out(out_dir)
    for d in OUT_DIRS:
        if (out_dir / d).is_dir() and not (out_dir / d).is_symlink():
            shutil.rmtree(out_dir / d)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    search: Search | None = None
    result: SearchResult | None = None
    judge: EngineJudge | None = None
    repro: Any = None
    try:
        if session is not None and not session.compatible(base):
            raise ValueError("the session's targets do not fit this plan's")
        own_session = session is None
        with contextlib.nullcontext(session) if session is not None else Session(base, out_dir / "targets-logs") \
                as session:
            def run_one(p: Plan, folder: Path) -> Any:
                return session.execute(p, folder, on_progress=on_progress)

            def on_run(folder: Path, r: Any) -> None:
                if r.results.get("interrupted") and search is not None:
                    search.stop()

            one_run = [0.0]  # a usual run's seconds, its reset included (0: none judged yet)

            def on_example(kind: str, s: Search) -> None:
                if kind == "example":  # the folder is up to date after every schedule, even if we die
                    runs = sorted(r["seconds"] for e in s.examples for r in e.judgement.replays if r.get("seconds"))
                    if runs:  # time for the reproduction runs: a run's median (+ its reset), times confirm
                        one_run[0] = runs[len(runs) // 2] + 5.0
                        s.reserve_s = confirm * one_run[0]
                        s.run_estimate_s = sorted(e.seconds for e in s.examples)[len(s.examples) // 2]
                    _write_outputs(base, raw, space, _so_far(s, "running"), out_dir, started, budget_s, run_s,
                                   replays, need, judge)
                if on_event is not None:
                    on_event(kind, s)

            judge = EngineJudge(base, run_one, out_dir, run_s, replays, need, on_run, keep_passing)
            # rounds of few examples each: see Search.run (a run judges one in ~20 s here)
            deadline = t_start + budget_s - (min(TEARDOWN_S, budget_s / 10) if own_session else 0.0)
            search = Search(space, judge, max(0.0, deadline - time.monotonic()), seed=base.seed,
                            on_event=on_example, max_examples=max(10, int(budget_s // 30)))
            if search_holder is not None:
                search_holder.append(search)
            result = search.run()
            if result.minimal is not None and result.ended != "stopped" and confirm:
                repro = _reproduce(base, result, run_s, confirm, out_dir, session, on_progress,
                                   may_start=lambda i: time.monotonic() + one_run[0] <= deadline)
                if repro.get("interrupted"):  # Ctrl-C during the reproduction: the explore was stopped
                    result.ended = "stopped"
    except KeyboardInterrupt:
        if search is not None:
            search.stop()
    if result is None:  # stopped while the targets started or stopped: what was judged stands
        result = _so_far(search)
    return _write_outputs(base, raw, space, result, out_dir, started, budget_s, run_s, replays, need, judge, repro)


def _reproduce(base: Plan, result: SearchResult, run_s: float, confirm: int, out_dir: Path, session: Any,
               on_progress: Callable[[Any], None] | None,
               may_start: Callable[[int], bool] | None = None) -> dict[str, Any]:
    """Run the minimal plan `confirm` times (seeds: the plan's, then derived, as `onceproof run
    minimal.yaml --runs N` would) on the session into out_dir/reproduction, each only if
    `may_start(i)` (the budget); returns {"runs", "failed" (with the anomaly sought), "rate",
    "folder", "verdicts", "interrupted", "skipped" (runs not started: the budget)}. The
    minimal's shrink replays do not count: they were chosen for failing."""
    from onceproof.explore.replay import plan_for
    from onceproof.repeat import anomalies_of, run_many

    assert result.minimal is not None
    folder = out_dir / "reproduction"
    if folder.is_dir() and not folder.is_symlink():
        shutil.rmtree(folder)
    rr = run_many(plan_for(base, result.minimal.schedule, run_s), confirm, folder, session=session,
                  on_progress=on_progress, may_start=may_start)
    done = [r for r in rr.runs if not r.results.get("interrupted")]  # an interrupted run proves nothing
    failed = sum(1 for r in done if r.valid is False and result.anomaly in anomalies_of(r.results))
    return {"runs": len(done), "failed": failed, "rate": round(failed / len(done), 3) if done else None,
            "folder": "reproduction/summary.html", "verdicts": [r.valid for r in done],
            "interrupted": rr.interrupted, "skipped": 0 if rr.interrupted else confirm - len(rr.runs)}


def _so_far(search: Search | None, ended: str = "stopped") -> SearchResult:
    """The search's result so far: while it runs ("running"), or cut short outside a run
    (Ctrl-C while the targets start or stop: "stopped")."""
    if search is None:
        return SearchResult([], [], None, None, ended, 0.0)
    spent = time.monotonic() - search.t0 if search.t0 else 0.0
    return SearchResult(list(search.examples), list(search.steps), search.minimal, search.anomaly, ended,
                        round(spent, 3))


def _write_outputs(base: Plan, raw: dict[str, Any], space: Space, result: SearchResult, out_dir: Path,
                   started: str, budget_s: float, run_s: float, replays: int, need: int,
                   judge: EngineJudge | None = None, repro: dict[str, Any] | None = None) -> ExploreResult:
    from onceproof.explore.page import write_page
    from onceproof.repeat import _atomic

    minimal_plan = None
    reproduced = (0, 0)
    minimal = result.minimal
    if minimal is not None:
        data = dict(raw)
        data["faults"] = schedule_entries(minimal.schedule)
        data.setdefault("workload", {})
        if isinstance(data["workload"], dict):
            data["workload"]["duration"] = f"{run_s:g}s"
        data["seed"] = base.seed
        rate = (f"; then {repro['failed']} of {repro['runs']} reproduction runs failed with it" if repro else "")
        if repro and repro.get("interrupted"):
            rate += " (the reproduction was interrupted)"
        if repro and repro.get("skipped"):
            rate += f" ({repro['skipped']} not run: the budget was spent)"
        if len(result.steps) <= 1 and result.ended == "budget":
            rate += ";\n# NOT shrunk: the budget ran out right after the first failure (give a larger --budget)"
        header = (f"# found by `onceproof explore` on {started}: the smallest schedule that made {base.name!r} fail "
                  f"with {result.anomaly}\n# ({len(minimal.schedule)} fault(s); it failed in "
                  f"{minimal.judgement.detail.get('hits')} of {len(minimal.judgement.replays)} replay(s){rate})\n")
        minimal_plan = out_dir / "minimal.yaml"
        _atomic(minimal_plan, (header + yaml.safe_dump(data, sort_keys=False)).encode())
        reproduced = (repro["failed"], repro["runs"]) if repro and repro["runs"] else \
            (int(minimal.judgement.detail.get("hits") or 0), len(minimal.judgement.replays))
        last = minimal.judgement.detail.get("last_failing")
        copied = out_dir / "minimal-run"
        marker = copied / ".copied-from"
        if last and Path(last).is_dir() and not (marker.is_file() and marker.read_text() == str(last)):
            if copied.is_dir() and not copied.is_symlink():
                shutil.rmtree(copied)
            shutil.copytree(last, copied, symlinks=True)
            marker.write_text(str(last))
    verdicts = [r.get("valid") for e in result.examples for r in e.judgement.replays]
    # nothing found proves something only if the search ran its course (a stop is no verdict)
    exit_code = ExitCode.INVALID if minimal is not None else ExitCode.VALID if any(v is True for v in verdicts) \
        and result.ended != "stopped" else ExitCode.UNKNOWN
    summary = {
        "name": base.name, "seed": base.seed, "started_at": started, "budget_s": budget_s, "run_duration_s": run_s,
        "replays": replays, "need": need, "ended": result.ended, "seconds": result.seconds,
        "space": {"kinds": space.kinds, "nodes": space.nodes, "max_faults": space.spec.max_faults,
                  "from_s": space.spec.from_s, "until_s": space.until_s, "shortest_s": space.spec.shortest,
                  "longest_s": space.longest},
        "schedules_tried": len(result.examples), "runs": len(verdicts), "failures": result.failures,
        "anomaly": result.anomaly, "exit_code": int(exit_code),
        "minimal": None if minimal is None else {"faults": schedule_entries(minimal.schedule),
                                                 "reproduced": list(reproduced), "plan": "minimal.yaml",
                                                 "run": "minimal-run/report.html", "reproduction": repro},
        "disk": {"removed_runs": judge.removed if judge else 0,
                 "removed_mb": round(judge.removed_bytes / 1e6, 1) if judge else 0.0,
                 "kept_runs": sum(1 for e in result.examples for r in e.judgement.replays if r.get("folder"))},
        "examples": [{"index": e.index, "phase": e.phase, "fails": e.judgement.fails,
                      "anomaly": e.judgement.anomaly, "faults": [f.label() for f in e.schedule],
                      "replays": e.judgement.replays, "seconds": e.seconds} for e in result.examples],
        "steps": [e.index for e in result.steps],
    }
    import orjson

    _atomic(out_dir / "explore.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    write_page(out_dir / "explore.html", summary)
    return ExploreResult(out_dir, result, minimal_plan, reproduced, int(exit_code), summary)

