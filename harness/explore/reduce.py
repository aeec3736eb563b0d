"""Deterministic shrinking of one failing schedule, run before Hypothesis's own: first the
fault count (delta debugging), then each surviving fault's start, length and parameters.

Why not Hypothesis's shrinker alone: it works on the bytes that drew the schedule and spends
many candidates on simplifications that keep the fault count; each candidate here is a real run
(seconds), and what a user needs first is the fewest faults. ddmin removes halves, then
quarters ... then single faults, and reaches a 1-minimal schedule (dropping any one fault makes
it pass) in O(n^2) tests at worst, O(log n) when one or two faults matter.

Nothing here runs anything: `fails(schedule)` says whether a candidate fails with the anomaly
sought (True / False), or None when the budget is spent (the reduction then stops and keeps
what it has)."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from onceproof.explore.space import TICK_S, Fault, Schedule, Space, simplest_param

__all__ = ["ddmin", "simplify", "ordered"]

Fails = Callable[[Schedule], "bool | None"]


class _Spent(Exception):
    """`fails` said None: no more runs."""


def ordered(faults: "list[Fault] | tuple[Fault, ...]") -> Schedule:
    """A schedule in the order space.strategy() draws it (start, kind, target): the same
    schedule is the same key in the search's cache whoever built it."""
    return tuple(sorted(faults, key=lambda f: (f.at_s, f.kind, f.target)))


def _ask(fails: Fails, faults: "list[Fault]") -> bool:
    verdict = fails(ordered(faults))
    if verdict is None:
        raise _Spent()
    return verdict


def _split(c: list[Fault], n: int) -> list[list[Fault]]:
    """`c` cut into `n` consecutive chunks of near-equal size (the first ones one larger)."""
    q, r = divmod(len(c), n)
    out, i = [], 0
    for k in range(n):
        size = q + (1 if k < r else 0)
        out.append(c[i:i + size])
        i += size
    return [x for x in out if x]


def ddmin(schedule: Schedule, fails: Fails) -> Schedule:
    """The 1-minimal sub-schedule of `schedule` (which fails) by Zeller's ddmin (A. Zeller and
    R. Hildebrandt, "Simplifying and Isolating Failure-Inducing Input", IEEE TSE 28(2), 2002,
    fig. 5): with the faults cut into n chunks, try each chunk alone ("reduce to subset", n
    back to 2), then each complement ("reduce to complement", n - 1), else double n; end when
    n reaches the number of faults. With n = 2 the complements are the chunks themselves and
    are not tried twice. The empty schedule is never tried (a schedule has one fault at least).
    Returns the smallest failing schedule found, ordered (see `ordered`); stops early, keeping
    it, when `fails` returns None."""
    c, n = list(ordered(schedule)), 2
    try:
        while len(c) >= 2:
            chunks = _split(c, min(n, len(c)))
            for ch in chunks:
                if _ask(fails, ch):
                    c, n = ch, 2
                    break
            else:
                for i in range(len(chunks) if len(chunks) > 2 else 0):
                    comp = [f for j, ch in enumerate(chunks) if j != i for f in ch]
                    if _ask(fails, comp):
                        c, n = comp, max(len(chunks) - 1, 2)
                        break
                else:
                    if len(chunks) >= len(c):
                        break
                    n = min(2 * len(chunks), len(c))
    except _Spent:
        pass
    return ordered(c)


def _tick(x: float) -> float:
    return round(round(x / TICK_S) * TICK_S, 3)


def _halfway(simple: object, value: object) -> object | None:
    """The value halfway between `simple` and `value` (ints, or `<n>ms` strings), rounded
    toward `value`; None if there is none strictly between them."""
    if isinstance(simple, int) and isinstance(value, int) and not isinstance(simple, bool):
        mid = simple + (value - simple + (1 if value > simple else -1)) // 2 if value != simple else value
        return mid if mid not in (simple, value) else None
    if isinstance(simple, str) and isinstance(value, str) and simple.endswith("ms") and value.endswith("ms"):
        try:
            m = _halfway(int(simple[:-2]), int(value[:-2]))
        except ValueError:
            return None
        return None if m is None else f"{m}ms"
    return None


def simplify(schedule: Schedule, space: Space, fails: Fails, tries: int = 4) -> Schedule:
    """Each fault of `schedule` (which fails) made simpler, toward what Hypothesis shrinks it to
    (see space.py) but with few runs: first the fault at its simplest all at once (start at
    `from`, length `shortest`, every parameter at its simplest); if that passes, each of them
    alone (start, length, then each parameter): its simplest value, and if that passes a
    bisection between it and the current value for up to `tries` more runs (times in ticks,
    numbers and `<n>ms` durations; other values are only tried at their simplest). A candidate
    is kept only if it fails. Returns the simplest failing schedule found, ordered; stops
    early, keeping it, when `fails` returns None."""
    cur = list(ordered(schedule))
    earliest, shortest = round(space.spec.from_s / TICK_S), max(1, round(space.spec.shortest / TICK_S))

    def attempt(i: int, g: Fault) -> bool:
        if g == cur[i]:
            return False
        if _ask(fails, cur[:i] + [g] + cur[i + 1:]):
            cur[i] = g
            return True
        return False

    def shrink(i: int, simple: object, get: Callable[[Fault], object], put: Callable[[Fault, object], Fault]) -> None:
        if attempt(i, put(cur[i], simple)):
            return
        lo = simple  # passes; the current value fails: bisect between them
        for _ in range(tries):
            mid = _halfway(lo, get(cur[i]))
            if mid is None or attempt(i, put(cur[i], mid)):
                if mid is None:
                    break
                continue
            lo = mid

    def ticks(x: float) -> int:
        return round(x / TICK_S)

    try:
        for i in range(len(cur)):
            f = cur[i]
            simple_params = tuple((k, simplest_param(space.param_ranges(f.kind).get(k), v)) for k, v in f.params)
            if attempt(i, replace(f, at_s=round(earliest * TICK_S, 3), for_s=round(shortest * TICK_S, 3),
                                  params=simple_params)):
                continue
            shrink(i, earliest, lambda g: ticks(g.at_s), lambda g, v: replace(g, at_s=_seconds(v)))
            shrink(i, shortest, lambda g: ticks(g.for_s), lambda g, v: replace(g, for_s=_seconds(v)))
            for name, simple in simple_params:
                shrink(i, simple, lambda g, n=name: dict(g.params)[n],  # type: ignore[misc]
                       lambda g, v, n=name: replace(g, params=_with(g.params, n, v)))  # type: ignore[misc]
    except _Spent:
        pass
    return ordered(cur)


def _seconds(ticks: object) -> float:
    assert isinstance(ticks, int)
    return round(ticks * TICK_S, 3)


def _with(params: tuple[tuple[str, object], ...], name: str, value: object) -> tuple[tuple[str, object], ...]:
    return tuple((k, value if k == name else v) for k, v in params)
