"""The search: Hypothesis generates schedules from a Space, a `judge` says whether each one
fails, and when one does Hypothesis's shrinker looks for a smaller one that still fails.
Nothing here runs anything: `judge` is a function of the schedule (the real one replays it
on the engine, explore/replay.py; the unit tests give a pure function).

How Hypothesis is driven: a `@given(space.strategy())` test built here and called directly,
with `database=None` (nothing saved between calls), `deadline=None` (a run takes seconds),
every health check off, phases generate and shrink, and `@seed` (the same seed, the same
examples for the same verdicts). The test raises `ScheduleFails` when the judge says the
schedule fails, so the shrinker's order is Hypothesis's: fewer faults first, then each fault
simpler (see space.py). Each schedule is judged once (a cache), so Hypothesis's replays of an
example it has seen cost nothing and are never flaky.

The budget: once it is spent (or `stop()` was called, e.g. on Ctrl-C) every further example
is passed over without a run; the shrinker then ends at once and the smallest failing
schedule found so far is the result."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from onceproof.explore.space import Schedule, Space

__all__ = ["Example", "Judgement", "Search", "SearchResult", "ScheduleFails"]


@dataclass
class Judgement:
    """What the judge says of a schedule: `fails` (it failed with the kind sought), `anomaly`
    (the anomaly kind it failed with, or None), `replays` (each replay's verdict and anomaly
    kinds), and anything else the judge wants in the report (`detail`: e.g. run folders)."""

    fails: bool
    anomaly: str | None = None
    replays: list[dict[str, Any]] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass
class Example:
    """One schedule judged: its index, the phase (generate / shrink), the judgement, seconds."""

    index: int
    schedule: Schedule
    phase: str
    judgement: Judgement
    seconds: float


@dataclass
class SearchResult:
    """The search's outcome: every example judged, the shrink steps (each failing schedule
    the shrinker accepted, first failure first), the minimal failing schedule (None: none
    failed), the anomaly sought, why it ended ("shrunk", "budget", "stopped", "exhausted"),
    and seconds spent."""

    examples: list[Example]
    steps: list[Example]
    minimal: Example | None
    anomaly: str | None
    ended: str
    seconds: float

    @property
    def failures(self) -> int:
        return sum(e.judgement.fails for e in self.examples)


class _Spent(Exception):
    """Raised inside the Hypothesis test once the budget is spent before any failure: the only
    way to end Hypothesis's generation early (its shrinking of it costs no run)."""


class ScheduleFails(Exception):
    """Raised inside the Hypothesis test when a schedule fails (so Hypothesis shrinks it)."""


Judge = Callable[[Schedule, "str | None"], Judgement]


class Search:
    """One search over `space` with `judge(schedule, anomaly_sought) -> Judgement` (anomaly
    sought: None until the first failure, then its kind: a later schedule must fail with the
    same one), for at most `budget_s` seconds, Hypothesis seeded with `seed`.
    `on_event(kind, search)` is called after each example ("example") and at the end ("end").
    `run()` returns a SearchResult; `stop()` (any thread) ends the search as soon as the
    current example is judged."""

    def __init__(self, space: Space, judge: Judge, budget_s: float, seed: int = 0,
                 on_event: Callable[[str, "Search"], None] | None = None, max_examples: int = 100_000) -> None:
        self.space, self.judge, self.budget_s, self.seed = space, judge, budget_s, seed
        self.on_event = on_event or (lambda kind, s: None)
        self.max_examples = max_examples
        self.examples: list[Example] = []
        self.steps: list[Example] = []
        self.anomaly: str | None = None
        self.t0 = 0.0
        self._cache: dict[Schedule, Judgement] = {}
        self._stopped = threading.Event()
        self._ended = ""

    # --- state the front-ends show ---------------------------------------------------
    @property
    def time_left(self) -> float:
        return max(0.0, self.budget_s - (time.monotonic() - self.t0)) if self.t0 else self.budget_s

    @property
    def minimal(self) -> Example | None:
        """The smallest failing schedule so far (the shrinker's last accepted step)."""
        return self.steps[-1] if self.steps else None

    def stop(self) -> None:
        self._stopped.set()

    @property
    def spent(self) -> bool:
        return self._stopped.is_set() or self.time_left <= 0

    # --- the Hypothesis test ---------------------------------------------------------
    def _examine(self, schedule: Schedule) -> None:
        judgement = self._cache.get(schedule)
        if judgement is None:
            judgement = self._judge(schedule)
        if judgement is None and not self.steps:
            raise _Spent()  # nothing failed and no time left: end the generation (Hypothesis has no "stop")
        if judgement is not None and judgement.fails:
            raise ScheduleFails(schedule)  # one place only: Hypothesis tells bugs apart by where they are raised

    def _round(self, seed: int) -> str:
        """One run of the Hypothesis test; "shrunk" if it found (and shrank) a failure."""
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hseed

        @hseed(seed)
        @settings(database=None, deadline=None, max_examples=self.max_examples, derandomize=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
                  report_multiple_bugs=False, print_blob=False, verbosity=_quiet())
        @given(self.space.strategy())
        def test(schedule: Schedule) -> None:
            self._examine(schedule)

        try:
            test()
        except ScheduleFails as e:  # Hypothesis's minimal example, replayed last (from the cache)
            final = next((x for x in self.examples if x.schedule == e.args[0]), None)
            if final is not None and final is not self.minimal:
                self.steps.append(final)
            return "shrunk"
        except _Spent:
            pass
        except KeyboardInterrupt:
            self._stopped.set()
        except BaseException as e:  # noqa: BLE001 - Hypothesis's own errors: the result so far stands
            if _is_flaky(e) or isinstance(e, ExceptionGroup):
                return "shrunk" if self.steps else "exhausted"
            raise
        return "exhausted"

    def _judge(self, schedule: Schedule) -> Judgement | None:
        if self.spent:
            return None  # the budget is spent: pass over it without a run, the shrinker ends
        t = time.monotonic()
        judgement = self.judge(schedule, self.anomaly)
        if self.spent and not judgement.fails and judgement.detail.get("cut_short"):
            return None  # interrupted mid-run: no verdict, do not remember it
        self._cache[schedule] = judgement
        example = Example(len(self.examples) + 1, schedule, "shrink" if self.steps else "generate", judgement,
                          round(time.monotonic() - t, 3))
        self.examples.append(example)
        if judgement.fails:
            if self.anomaly is None:
                self.anomaly = judgement.anomaly
            self.steps.append(example)  # the shrinker tries only schedules simpler than its current one
        self.on_event("example", self)
        return judgement

    def run(self) -> SearchResult:
        """Generate, judge, shrink; until the shrinker is done, the budget is spent, or stop().
        Hypothesis is run in rounds of `max_examples` (each round seeded `seed + round`, the
        judgements cached across rounds) until one finds a failure or the budget is spent: a
        small `max_examples` keeps Hypothesis from spending its first examples (up to 50 when
        max_examples is large) on near-minimal schedules, which a run costs seconds to judge."""
        self.t0 = time.monotonic()
        ended, round_ = "exhausted", 0
        while ended == "exhausted" and not self.spent:
            ended = self._round(self.seed + round_)
            round_ += 1
        if self._stopped.is_set():
            ended = "stopped"
        elif self.time_left <= 0:
            ended = "budget"
        self._ended = ended
        self.on_event("end", self)
        return SearchResult(list(self.examples), list(self.steps), self.minimal, self.anomaly, ended,
                            round(time.monotonic() - self.t0, 3))


def _is_flaky(e: BaseException) -> bool:
    from hypothesis.errors import Flaky

    return isinstance(e, Flaky)


def _quiet() -> Any:
    from hypothesis import Verbosity

    return Verbosity.quiet
