"""The space `onceproof explore` searches: which fault kinds, on which nodes, how many at
most, when and for how long, with which parameters; and the Hypothesis strategy that draws
schedules from it.

A plan's optional `explore:` section describes it (every field optional):

    explore:
      kinds: [kill, pause, partition, latency, clock-skew]   # the default
      targets: [pipeline-0, pipeline-1, postgres]            # default: every node of the run
      max-faults: 6
      from: 0s                                               # faults start in [from, until)
      until: 12s                                             # default: the run's end
      shortest: 500ms                                        # each lasts [shortest, longest]
      longest: 8s
      params: {latency: {ms: [50, 500]}, clock-skew: {offset: [-30s, 30s]}}

A `params` value `[lo, hi]` of two numbers (or two durations) is a range; a longer list is a
choice among its values; anything else is the value itself.

Shrinking (Hypothesis's): a schedule is a list, so faults are deleted first; each fault's
kind shrinks toward the first of `kinds` (kill), its target toward the first of the nodes,
its start toward `from` (earlier), its length toward `shortest`, a range parameter toward its
low end (latency toward 50 ms) and a signed duration toward zero. Times are drawn in steps
of TICK_S so that a shrunk plan reads well (`at: 2.4s`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from onceproof.faults.params import Seconds

if TYPE_CHECKING:
    import random

    from hypothesis.strategies import SearchStrategy

__all__ = ["DEFAULT_KINDS", "ExploreSpace", "Fault", "Space", "TICK_S", "simplest_param"]

DEFAULT_KINDS = ("kill", "pause", "partition", "latency", "clock-skew")
DEFAULT_PARAMS: dict[str, dict[str, Any]] = {"latency": {"ms": [50, 500]}, "clock-skew": {"offset": ["-30s", "30s"]}}
TICK_S = 0.1  # times are drawn in tenths of a second


class ExploreSpace(BaseModel):
    """A plan's `explore:` section (see the module's docstring); every field optional."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=lambda n: n.replace("_", "-"),
                              frozen=True)

    kinds: tuple[str, ...] = Field(DEFAULT_KINDS, min_length=1, description="fault kinds drawn from, simplest first")
    targets: tuple[str, ...] | None = Field(None, description="nodes drawn from (default: every node of the run)")
    max_faults: int = Field(6, ge=1, le=50, description="the most faults in one schedule")
    from_s: Annotated[float, Seconds()] = Field(0.0, alias="from", description="no fault starts before this")
    until_s: Annotated[float, Seconds()] | None = Field(None, alias="until",
                                                        description="no fault starts after this (default: the run's end)")
    shortest: Annotated[float, Seconds(allow_zero=False)] = Field(0.5, description="the shortest fault")
    longest: Annotated[float, Seconds(allow_zero=False)] | None = Field(
        None, description="the longest fault (default: half the run)")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                              description="per-kind parameter ranges, such as {latency: {ms: [50, 500]}}")

    @field_validator("kinds")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from onceproof.faults.base import known_kinds

        for k in v:
            if k not in known_kinds():
                import difflib

                hint = difflib.get_close_matches(k, sorted(known_kinds()), 1)
                raise ValueError(f"unknown fault kind {k!r}" + (f" (did you mean {hint[0]!r}?)" if hint else
                                                                 f"; known kinds: {', '.join(sorted(known_kinds()))}"))
        return v


@dataclass(frozen=True)
class Fault:
    """One fault of a schedule: `kind` on `target` from `at_s` for `for_s` seconds, with `params`
    (a tuple of (name, value) pairs, so that a fault is hashable)."""

    kind: str
    target: str
    at_s: float
    for_s: float
    params: tuple[tuple[str, Any], ...] = field(default=())

    def entry(self) -> dict[str, Any]:
        """The fault as a plan's `faults:` entry: {at: 2.4s, for: 1s, kill: {target: pipeline-0}}."""
        return {"at": f"{self.at_s:g}s", "for": f"{self.for_s:g}s", self.kind: {"target": self.target,
                                                                             **dict(self.params)}}

    def label(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.params)
        return f"{self.kind} {self.target}{extra} at {self.at_s:g}s for {self.for_s:g}s"


Schedule = tuple[Fault, ...]


def schedule_entries(schedule: Schedule) -> list[dict[str, Any]]:
    """A schedule as a plan's `faults:` list."""
    return [f.entry() for f in schedule]


def schedule_size(schedule: Schedule) -> tuple[int, float]:
    """(faults, fault-seconds): what the progress shows as the current shrink size."""
    return len(schedule), round(sum(f.for_s for f in schedule), 3)


class Space:
    """The resolved space of one plan: `spec` (its `explore:` section, or the default), the
    run's node names and its duration in seconds. `targets_for(kind)`: the nodes that kind can
    act on; `strategy()`: Hypothesis's strategy of schedules (tuples of Fault, 1 to max_faults).
    Raises ValueError if a kind can act on none of the nodes."""

    def __init__(self, spec: ExploreSpace | None, node_names: list[str], duration_s: float) -> None:
        self.spec = spec or ExploreSpace()
        self.duration_s = duration_s
        nodes = [n for n in (self.spec.targets or node_names) if n != "pipeline"]
        if not self.spec.targets:  # the default: pipelines first (the simplest thing to kill), then servers
            nodes = sorted(nodes, key=lambda n: (not n.startswith("pipeline-"), node_names.index(n)))
        self.nodes = nodes
        self.until_s = min(self.spec.until_s if self.spec.until_s is not None else duration_s, duration_s)
        if self.until_s <= self.spec.from_s:
            raise ValueError(f"explore: from ({self.spec.from_s:g}s) must be before until ({self.until_s:g}s)")
        self.longest = self.spec.longest if self.spec.longest is not None else max(self.spec.shortest,
                                                                                   duration_s / 2)
        self.kinds = [k for k in self.spec.kinds if self.targets_for(k)]
        if not self.kinds:
            raise ValueError(f"explore: none of the kinds {list(self.spec.kinds)} can act on {nodes}")

    def targets_for(self, kind: str) -> list[str]:
        """The nodes `kind` can act on (network faults: servers only, not pipeline replicas)."""
        from onceproof.faults.base import known_kinds

        k = known_kinds()[kind]
        return [n for n in self.nodes if not (k.targets == "server" and n.startswith("pipeline-"))]

    def param_ranges(self, kind: str) -> dict[str, Any]:
        """The kind's parameter specs: the space's own, else the default ranges."""
        return {**DEFAULT_PARAMS.get(kind, {}), **self.spec.params.get(kind, {})}

    # --- Hypothesis -------------------------------------------------------------------
    def strategy(self, min_faults: int = 1) -> "SearchStrategy[Schedule]":
        """Schedules: lists of min_faults..max_faults faults, sorted by start time (Hypothesis's
        own list shrinking deletes faults first)."""
        from hypothesis import strategies as st

        fault = st.sampled_from(self.kinds).flatmap(self._fault_of)
        lo = max(1, min(min_faults, self.spec.max_faults))
        return st.lists(fault, min_size=lo, max_size=self.spec.max_faults).map(
            lambda fs: tuple(sorted(fs, key=lambda f: (f.at_s, f.kind, f.target))))

    def draw(self, rng: "random.Random", n: int | None = None) -> Schedule:
        """One schedule of `n` faults (default max_faults) drawn uniformly with `rng` (no
        Hypothesis): the dense opening examples of a search (search.py says why)."""
        faults = []
        for _ in range(n or self.spec.max_faults):
            kind = rng.choice(self.kinds)
            at = rng.randint(*_ticks(self.spec.from_s, self.until_s - TICK_S))
            lasts = rng.randint(*_ticks(self.spec.shortest, self.longest))
            params = tuple(sorted((name, _draw_param(spec, rng)) for name, spec in self.param_ranges(kind).items()))
            faults.append(Fault(kind, rng.choice(self.targets_for(kind)), round(at * TICK_S, 3),
                                round(lasts * TICK_S, 3), params))
        return tuple(sorted(faults, key=lambda f: (f.at_s, f.kind, f.target)))

    def _fault_of(self, kind: str) -> "SearchStrategy[Fault]":
        from hypothesis import strategies as st

        params = st.fixed_dictionaries({name: _param_strategy(spec) for name, spec in self.param_ranges(kind).items()})
        return st.builds(
            lambda target, at, lasts, ps: Fault(kind, target, round(at * TICK_S, 3), round(lasts * TICK_S, 3),
                                                tuple(sorted(ps.items()))),
            st.sampled_from(self.targets_for(kind)), st.integers(*_ticks(self.spec.from_s, self.until_s - TICK_S)),
            st.integers(*_ticks(self.spec.shortest, self.longest)), params)


def _ticks(lo_s: float, hi_s: float) -> tuple[int, int]:
    """The times [lo_s, hi_s] (seconds) in whole TICK_S steps: (lo, hi), hi never below lo."""
    lo = round(lo_s / TICK_S)
    return lo, max(lo, round(hi_s / TICK_S))


def _param_range(spec: Any) -> tuple[str, Any]:
    """What a parameter's spec is: ("ints", (lo, hi)) for two numbers; ("ms", (lo, hi)) for two
    durations, in whole milliseconds (written `<n>ms` when drawn); ("choice", spec) for another
    non-empty list (two strings that are not durations among them); ("value", spec) else."""
    from onceproof.faults.params import duration

    if isinstance(spec, list) and len(spec) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                         for x in spec):
        lo, hi = sorted(int(x) for x in spec)
        return "ints", (lo, hi)
    if isinstance(spec, list) and len(spec) == 2 and all(isinstance(x, str) for x in spec):
        try:
            lo_s, hi_s = sorted(duration(x, signed=True) for x in spec)
        except ValueError:
            return "choice", spec
        return "ms", (round(lo_s * 1000), round(hi_s * 1000))
    if isinstance(spec, list) and spec:
        return "choice", spec
    return "value", spec


def simplest_param(spec: Any, current: Any = None) -> Any:
    """The value `_param_strategy(spec)` shrinks toward (what explore/reduce.py tries first): a
    number range -> 0 if it holds 0, else its end nearest 0; a duration range -> the same in
    `<n>ms`; a longer list -> its first; a bare value -> itself; no spec (None) -> `current`."""
    if spec is None:
        return current
    kind, got = _param_range(spec)
    if kind in ("ints", "ms"):
        lo, hi = got
        nearest_zero = 0 if lo <= 0 <= hi else lo if lo > 0 else hi
        return nearest_zero if kind == "ints" else f"{nearest_zero}ms"
    return got[0] if kind == "choice" else got


def _draw_param(spec: Any, rng: "random.Random") -> Any:
    """A parameter drawn uniformly with `rng`, from the values `_param_strategy(spec)` draws."""
    kind, got = _param_range(spec)
    if kind == "ints":
        return rng.randint(*got)
    if kind == "ms":
        return f"{rng.randint(*got)}ms"
    return rng.choice(got) if kind == "choice" else got


def _param_strategy(spec: Any) -> "SearchStrategy[Any]":
    """A parameter's strategy: [lo, hi] numbers -> integers in the range (toward lo, or toward 0
    when the range holds it); [lo, hi] durations -> durations in milliseconds written `<n>ms`
    (toward 0 when it is in range, else lo); a longer list -> one of them (toward the first);
    else the value."""
    from hypothesis import strategies as st

    kind, got = _param_range(spec)
    if kind == "ints":
        return st.integers(*got)
    if kind == "ms":
        return st.integers(*got).map(lambda ms: f"{ms}ms")
    return st.sampled_from(got) if kind == "choice" else st.just(got)
