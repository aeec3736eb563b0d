"""pytest front-end: the `onceproof` fixture runs a plan and returns its result.

    def test_my_pipeline_is_exactly_once(onceproof):
        result = onceproof("plans/my-pipeline.yaml", duration="20s", seed=3)
        assert result.valid is True, result.summary()
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
        return (f"verdict={self.valid} anomalies={self.anomalies()} errors={self.results.get('errors')} "
                f"report={self.out_dir / 'report.html'}")


@pytest.fixture
def onceproof(tmp_path: Path) -> Callable[..., PlanRun]:
    """Run a plan (path or dict) against real targets; results go under the test's tmp_path."""
    from onceproof.plan import apply_overrides, load_plan, parse_duration, validate_plan
    from onceproof.runner import execute

    counter = [0]

    def run(plan: str | Path | dict[str, Any], *, duration: str | float | None = None, seed: int | None = None,
            out: Path | None = None) -> PlanRun:
        overrides: dict[str, Any] = {}
        if duration is not None:
            overrides["workload.duration"] = parse_duration(duration)
        if seed is not None:
            overrides["seed"] = seed
        if isinstance(plan, dict):
            data = dict(plan)
            apply_overrides(data, overrides)
            resolved = validate_plan(data)
        else:
            resolved = load_plan(plan, overrides)
        counter[0] += 1
        return PlanRun(execute(resolved, out or tmp_path / f"run-{counter[0]}"))

    return run
