"""The search: dense schedules first, then Hypothesis generates schedules from a Space until a
`judge` says one fails; that failure is shrunk by delta debugging (explore/reduce.py: the fault
count first, then each fault simpler), then, budget permitting, Hypothesis searches on for a
schedule smaller still and shrinks it. Nothing here runs anything: `judge` is a function of the
schedule (the real one replays it on the engine, explore/replay.py; the unit tests give a pure
function).

Why dense first: a schedule of max_faults faults fails far more often than one of 1 (measured on
at-least-once: the first `duplicate` came at schedule 7, 6 faults, after ~4 min of Hypothesis's
small early examples), and ddmin takes a dense failure down to its 1 or 2 faults that matter in a
few runs. So the first `dense` examples are max_faults faults drawn uniformly (seeded), and
Hypothesis's generation then draws at least half of max_faults faults (its own first examples
are the simplest ones: on commit-before-process its rounds spent their runs on one kill or
pause of a replica at 0 s, before the pipeline had read anything).

How Hypothesis is driven: a `@given(space.strategy())` test built here and called directly,
with `database=None` (nothing saved between calls), `deadline=None` (a run takes seconds),
every health check off, phases generate and shrink, and `@seed` (the same seed, the same
examples for the same verdicts). During generation a failure ends Hypothesis at once (a
BaseException, which Hypothesis does not shrink) and the reduction runs; after it, Hypothesis
runs again with only schedules smaller than the minimal so far judged (the others are passed
over without a run) and its shrinker shrinks what fails. Each schedule is judged once (a cache),
so replays of a schedule already seen cost nothing and are never flaky.

The budget: once it is spent (or `stop()` was called, e.g. on Ctrl-C) every further example
is passed over without a run; the reduction and the shrinker then end at once and the smallest
failing schedule found so far is the result."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from onceproof.explore.reduce import ddmin, simplify
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
    """One schedule judged: its index, the phase (dense, generate, ddmin, simplify, shrink: the
    Hypothesis shrink after the reduction), the judgement, seconds."""

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


class _FirstFailure(BaseException):
    """Raised inside the Hypothesis test at the first failure: a BaseException, so Hypothesis
    lets it through at once without shrinking (its failures are Exceptions)."""


class ScheduleFails(Exception):
    """Raised inside the Hypothesis test when a schedule fails (so Hypothesis shrinks it)."""


Judge = Callable[[Schedule, "str | None"], Judgement]


SHRINK_EXAMPLES = 100  # examples of the Hypothesis round after the reduction (most pass over without a run)


class Search:
    """One search over `space` with `judge(schedule, anomaly_sought) -> Judgement` (anomaly
    sought: None until the first failure, then its kind: a later schedule must fail with the
    same one), for at most `budget_s` seconds, Hypothesis seeded with `seed`; `dense`: how many
    schedules of max_faults faults are judged before Hypothesis's (module docstring).
    `on_event(kind, search)` is called after each example ("example") and at the end ("end").
    `run()` returns a SearchResult; `stop()` (any thread) ends the search as soon as the
    current example is judged."""

    def __init__(self, space: Space, judge: Judge, budget_s: float, seed: int = 0,
                 on_event: Callable[[str, "Search"], None] | None = None, max_examples: int = 100_000,
                 dense: int = 4) -> None:
        self.space, self.judge, self.budget_s, self.seed = space, judge, budget_s, seed
        self.on_event = on_event or (lambda kind, s: None)
        self.max_examples, self.dense = max_examples, dense
        self.examples: list[Example] = []
        self.steps: list[Example] = []
        self.anomaly: str | None = None
        self.t0 = 0.0
        self.phase = "dense"
        self._cache: dict[Schedule, Judgement] = {}
        self._stopped = threading.Event()
        self._ended = ""
        self.reserve_s = 0.0  # held back once a failure is found (the driver's reproduction runs)
        self.run_estimate_s = 0.0  # a judgement's usual length: none starts with less than half of it left

    # --- state the front-ends show ---------------------------------------------------
    @property
    def time_left(self) -> float:
        return max(0.0, self.budget_s - (time.monotonic() - self.t0)) if self.t0 else self.budget_s

    @property
    def minimal(self) -> Example | None:
        """The smallest failing schedule so far (the last accepted shrink step)."""
        return self.steps[-1] if self.steps else None

    def stop(self) -> None:
        self._stopped.set()

    @property
    def spent(self) -> bool:
        """Whether to run nothing more: stopped, or the budget gone (less the time `reserve_s`
        held back for the minimal plan's reproduction once a failure is found, and the usual
        judgement's length `run_estimate_s`, see _out_of_time)."""
        return self._stopped.is_set() or self._out_of_time()

    def _out_of_time(self) -> bool:
        """Whether the budget left is too short for another judgement: half a usual one (an
        overrun of at most half a run), or, once time is held back for the reproduction runs
        (`reserve_s`, after a failure), a whole one before it (so no judgement eats into it)."""
        held = self.reserve_s if self.steps else 0.0
        return self.time_left <= (self.run_estimate_s if held else self.run_estimate_s / 2) + held

    # --- the Hypothesis test ---------------------------------------------------------
    def _examine(self, schedule: Schedule) -> None:
        if self.steps and _size(schedule) >= _size(self.steps[-1].schedule):
            return  # after the reduction: only a smaller schedule is worth a run
        judgement = self._cache.get(schedule)
        if judgement is None:
            judgement = self._judge(schedule)
        if judgement is None and not self.steps:
            raise _Spent()  # nothing failed and no time left: end the generation (Hypothesis has no "stop")
        if judgement is not None and judgement.fails:
            if self.phase == "generate":
                raise _FirstFailure()
            raise ScheduleFails(schedule)  # one place only: Hypothesis tells bugs apart by where they are raised

    def _round(self, seed: int, max_examples: int, min_faults: int = 1) -> str:
        """One run of the Hypothesis test: "found" (generation met a failure), "shrunk" (after
        the reduction: Hypothesis shrank a smaller failure, or found none), "exhausted"."""
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hseed

        @hseed(seed)
        @settings(database=None, deadline=None, max_examples=max_examples, derandomize=False,
                  phases=[Phase.generate, Phase.shrink], suppress_health_check=list(HealthCheck),
                  report_multiple_bugs=False, print_blob=False, verbosity=_quiet())
        @given(self.space.strategy(min_faults))
        def test(schedule: Schedule) -> None:
            self._examine(schedule)

        try:
            test()
        except _FirstFailure:
            return "found"
        except ScheduleFails:  # Hypothesis's minimal example, replayed last (from the cache)
            return "shrunk"
        except _Spent:
            pass
        except KeyboardInterrupt:
            self._stopped.set()
        except BaseException as e:  # noqa: BLE001 - Hypothesis's own errors: the result so far stands
            if _is_flaky(e) or isinstance(e, ExceptionGroup):
                return "shrunk" if self.steps else "exhausted"
            raise
        return "shrunk" if self.steps else "exhausted"

    def _judge(self, schedule: Schedule) -> Judgement | None:
        if self.spent:
            return None  # the budget is spent: pass over it without a run, the shrinker ends
        t = time.monotonic()
        judgement = self.judge(schedule, self.anomaly)
        if self.spent and not judgement.fails and judgement.detail.get("cut_short"):
            return None  # interrupted mid-run: no verdict, do not remember it
        self._cache[schedule] = judgement
        example = Example(len(self.examples) + 1, schedule, self.phase, judgement, round(time.monotonic() - t, 3))
        self.examples.append(example)
        if judgement.fails:
            if self.anomaly is None:
                self.anomaly = judgement.anomaly
            self.steps.append(example)  # every schedule judged after the first failure is smaller than it
        self.on_event("example", self)
        return judgement

    def _fails(self, schedule: Schedule) -> bool | None:
        """The reduction's test (explore/reduce.py): None once the budget is spent."""
        judgement = self._cache.get(schedule)
        if judgement is None:
            judgement = self._judge(schedule)
        return None if judgement is None else judgement.fails

    def _reduce(self) -> None:
        """ddmin over the first failure's faults, then each survivor simplified (reduce.py)."""
        assert self.minimal is not None
        self.phase = "ddmin"
        smaller = ddmin(self.minimal.schedule, self._fails)
        self.phase = "simplify"
        simplify(smaller, self.space, self._fails)

    def run(self) -> SearchResult:
        """Dense examples, then Hypothesis's generation in rounds of `max_examples` (each round
        seeded `seed + round`, judgements cached across rounds) until a failure or the budget
        is spent: a small `max_examples` keeps Hypothesis from spending its first examples (up
        to 50 when max_examples is large) on near-minimal schedules, which a run costs seconds
        to judge. Then the reduction, then one Hypothesis round over smaller schedules."""
        self.t0 = time.monotonic()
        ended, round_ = "exhausted", 0
        try:
            rng = random.Random(self.seed)
            for _ in range(self.dense):
                if self.spent or self.steps:
                    break
                schedule = self.space.draw(rng)
                if schedule not in self._cache:
                    self._judge(schedule)
            self.phase = "generate"
            while not self.steps and not self.spent:
                self._round(self.seed + round_, self.max_examples, max(1, self.space.spec.max_faults // 2))
                round_ += 1
            if self.steps and not self.spent:
                self._reduce()
                self.phase = "shrink"
                if len(self.minimal.schedule) > 0 and not self.spent:  # type: ignore[union-attr]
                    self._round(self.seed + round_, min(self.max_examples, SHRINK_EXAMPLES))
                ended = "shrunk"
        except KeyboardInterrupt:
            self._stopped.set()
        if self._stopped.is_set():
            ended = "stopped"
        elif self._out_of_time():
            ended = "budget"
        self._ended = ended
        self.on_event("end", self)
        return SearchResult(list(self.examples), list(self.steps), self.minimal, self.anomaly, ended,
                            round(time.monotonic() - self.t0, 3))


def _size(schedule: Schedule) -> tuple[Any, ...]:
    """The order "smaller" is judged by after the reduction: fewer faults, then fewer
    fault-seconds, then earlier starts."""
    return len(schedule), round(sum(f.for_s for f in schedule), 3), round(sum(f.at_s for f in schedule), 3)


def _is_flaky(e: BaseException) -> bool:
    from hypothesis.errors import Flaky

    return isinstance(e, Flaky)


def _quiet() -> Any:
    from hypothesis import Verbosity

    return Verbosity.quiet
