"""pytest front-end: the `onceproof` fixture runs a plan and returns its result.

    def test_my_pipeline_is_exactly_once(onceproof):
        result = onceproof("plans/my-pipeline.yaml", duration="20s", seed=3)
        assert result.valid is True, result.summary()

    def test_my_pipeline_over_five_runs(onceproof):
        result = onceproof("plans/my-pipeline.yaml", runs=5)   # aggregate verdict, summary.json
        assert result.valid is True, result.summary()

    def test_no_schedule_breaks_it(onceproof):
        found = onceproof.explore("plans/my-pipeline.yaml", budget="5m")
        assert found.minimal is None, found.minimal_plan
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest



class PlanRun:
    def __init__(self, result: Any) -> None:
        self.result = result
        self.valid = result.valid
        self.exit_code = result.exit_code
        self.out_dir: Path = result.out_dir
        self.results: dict[str, Any] = result.results

    def anomalies(self, checker: str = "exactly-once") -> dict[str, int]:
        return {k: v for k, v in (self.results["checkers"].get(checker, {}).get("anomalies") or {}).items() if v}

    def summary(self) -> str:
        from onceproof.errors import verdict_word  # here: loading the plugin imports nothing of ours

        parts = [f"verdict={verdict_word(self.valid)}", f"anomalies={self.anomalies()}"]
        if self.valid is not True:  # why there is no verdict, or what the checkers found unsure
            reasons = [str(c["reason"]) for c in (self.results.get("checkers") or {}).values()
                       if isinstance(c, dict) and c.get("reason")]
            if reasons:
                parts.append(f"reason={'; '.join(reasons)}")
        if self.results.get("errors"):
            parts.append(f"errors={self.results['errors']}")
        notes = self.results.get("notes") or []
        if self.valid == "unknown" and notes:  # e.g. the pipeline's replicas died at start-up
            parts.append(f"notes={notes[:3]}")
        parts.append(f"report={self.out_dir / 'report.html'}")
        return " ".join(parts)


class RepeatRun:
    """The result of `onceproof(plan, runs=N)`: the aggregate verdict, each run's PlanRun, and
    summary.json's dict (catch rate per anomaly)."""

    def __init__(self, result: Any) -> None:
        self.result = result
        self.valid = result.valid
        self.exit_code = result.exit_code
        self.out_dir: Path = result.out_dir
        self.runs = [PlanRun(r) for r in result.runs]
        self.summary_data: dict[str, Any] = result.summary

    def summary(self) -> str:
        return (f"aggregate={self.valid} catch_rate={self.summary_data.get('catch_rate')} "
                f"summary={self.out_dir / 'summary.html'}")


@pytest.fixture
def onceproof(tmp_path: Path) -> Callable[..., PlanRun]:
    """Run a plan (path or dict) against real targets; results go under the test's tmp_path."""
    from onceproof.plan import PlanError, apply_overrides, load_plan, parse_duration, validate_plan
    from onceproof.runner import execute

    counter = [0]

    def run(plan: str | Path | dict[str, Any], *, duration: str | float | None = None, seed: int | None = None,
            out: Path | None = None, runs: int | None = None) -> Any:
        overrides: dict[str, Any] = {}
        if duration is not None:
            overrides["workload.duration"] = parse_duration(duration)
        if seed is not None:
            overrides["seed"] = seed
        try:
            if isinstance(plan, dict):
                data = dict(plan)
                apply_overrides(data, overrides)
                resolved = validate_plan(data)
            else:
                resolved = load_plan(plan, overrides)
        except PlanError as e:  # a bad plan is the test's input: its message, not plan.py's traceback
            pytest.fail(str(e), pytrace=False)
        from onceproof.stages import missing_program

        if (missing := missing_program(resolved)) is not None:
            pytest.fail(missing, pytrace=False)
        counter[0] += 1
        if runs is not None:  # `onceproof run --runs N`: a RepeatRun
            from onceproof.repeat import run_many

            return RepeatRun(run_many(resolved, runs, out or tmp_path / f"runs-{counter[0]}"))
        return PlanRun(execute(resolved, out or tmp_path / f"run-{counter[0]}"))

    def explore(plan: str | Path | dict[str, Any], *, budget: str | float = "15m", out: Path | None = None,
                **kw: Any) -> Any:
        """`onceproof explore` (onceproof.explore.driver.explore's keywords); its ExploreResult."""
        from onceproof.explore.driver import explore as search

        counter[0] += 1
        return search(plan, budget=budget, out=out or tmp_path / f"explore-{counter[0]}", **kw)

    run.explore = explore  # type: ignore[attr-defined]
    return run
