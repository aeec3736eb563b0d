"""`onceproof explore`: search fault schedules for one that breaks the pipeline, then shrink it
to the smallest plan that still fails. space.py: what is searched; search.py: the search over a
judge (dense examples, Hypothesis's generation, the reduction, Hypothesis's shrink); reduce.py:
delta debugging and simplification of a failing schedule; replay.py: the judge that runs schedules on the engine;
page.py: explore.html; driver.py: the whole job, shared by the CLI and pytest."""
from __future__ import annotations

from typing import Any

__all__ = ["explore"]


def explore(plan: Any, budget: str | float = "15m", **kw: Any) -> Any:
    """Search `plan` (a path, a Plan or a plan dict) for a failing schedule and shrink it; see
    `onceproof.explore.driver.explore` for the keywords and the ExploreResult returned."""
    from onceproof.explore.driver import explore as run

    return run(plan, budget=budget, **kw)
