"""The `partial` checker (checkers/partial.py) on synthetic histories: an event must be in all
the run's sinks or in none."""
from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceproof.checkers import partial
from onceproof.checkers.history import history_from_records

from .histories import RunModel, runs

SETTINGS = settings(max_examples=35, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def content(run: RunModel, sink: str, drop: frozenset[str] | set[str] = frozenset(),
            add: tuple[list[Any], ...] | list[list[Any]] = ()) -> dict[str, Any]:
    evs = [[e.id, e.key, e.seq, 0] for e in run.effects_until(run.end_t) if e.id not in drop] + list(add)
    return {"time": run.end_t + 5, "process": "observer", "type": "ok", "f": "sink-content",
            "value": {"sink": sink, "events": evs}}


def check(run: RunModel) -> dict[str, Any]:
    return partial.check(history_from_records(run.records()))


def applied(run: RunModel) -> list[str]:
    return [e.id for e in run.effects_until(run.end_t)]


@SETTINGS
@given(runs(min_events=2))
def test_same_content_in_both_sinks_is_not_partial(run: RunModel) -> None:
    run.extra.append(content(run, "redis-set:second"))
    r = check(run)
    if not applied(run):
        assert r["valid"] == "unknown" and r["reason"].startswith("vacuous"), r
        return
    assert r["valid"] is True and r["anomalies"] == {"partial": 0}, r
    assert r["sinks"] == {partial.MAIN: len(set(applied(run))), "redis-set:second": len(set(applied(run)))}


@SETTINGS
@given(runs(min_events=2), st.data())
def test_an_effect_missing_from_the_second_sink_is_partial(run: RunModel, data: Any) -> None:
    ids = applied(run)
    victim = data.draw(st.sampled_from(ids)) if ids else None
    if victim is None:
        return
    run.extra.append(content(run, "redis-set:second", drop={victim}))
    r = check(run)
    assert r["valid"] is False and r["anomalies"]["partial"] == 1, r
    ex = r["examples"]["partial"][0]
    assert ex["id"] == victim
    assert "in workload sink; missing from redis-set:second" in ex["why"], ex["why"]
    # the proof: its send, and each sink's content trimmed to it (present in one, absent in the other)
    assert [x["f"] for x in ex["records"] if x["f"] == "send"]
    contents = {x["value"]["sink"]: x["value"]["events"] for x in ex["records"] if x["f"] != "send"}
    assert contents["redis-set:second"] == [] and contents[partial.MAIN][0][0] == victim


@SETTINGS
@given(runs(min_events=2))
def test_an_effect_only_in_the_second_sink_is_partial(run: RunModel) -> None:
    run.extra.append(content(run, "redis-set:second", add=[["e-extra", "k0", 0, 0]]))
    r = check(run)
    assert r["valid"] is False and r["anomalies"]["partial"] == 1, r
    assert r["examples"]["partial"][0]["id"] == "e-extra"
    assert "missing from workload sink" in r["examples"]["partial"][0]["why"]


def test_a_later_content_of_the_same_sink_replaces_the_earlier_one() -> None:
    run = RunModel(events=[], observe_ts=[], full_ts=[], end_t=100)
    from .histories import Event

    run.events = [Event("e1", "k", 0, 1, "ok", 2, 3), Event("e2", "k", 1, 4, "ok", 5, 6)]
    first = content(run, "postgres:second", drop={"e2"})
    second = content(run, "postgres:second")
    second["time"] += 1
    run.extra += [first, second]
    assert check(run)["valid"] is True


def test_without_a_second_sink_there_is_no_verdict() -> None:
    from .histories import Event

    run = RunModel(events=[Event("e1", "k", 0, 1, "ok", 2, 3)], observe_ts=[], full_ts=[], end_t=100)
    r = check(run)
    assert r["valid"] == "unknown" and r["reason"].startswith("no second sink"), r


def test_without_the_final_read_there_is_no_verdict() -> None:
    from .histories import Event

    run = RunModel(events=[Event("e1", "k", 0, 1, "ok", 2, 3)], observe_ts=[50], full_ts=[], end_t=100)
    run.extra.append(content(run, "redis-set:second"))
    recs = [r for r in run.records() if r["f"] != "final-read"]
    r = partial.check(history_from_records(recs))
    assert r["valid"] == "unknown" and "no final read" in r["reason"], r


def test_onceproof_check_applies_partial_to_a_history_with_two_sinks(onceproof_check) -> None:
    """`onceproof check` on a run folder's history: the partial checker runs when the history
    has sink-content records, and its verdict counts (exit 1), also by partitions."""
    from .histories import Event

    run = RunModel(events=[Event("e1", "k", 0, 1, "ok", 2, 3), Event("e2", "k", 1, 4, "ok", 5, 6)],
                   observe_ts=[50], full_ts=[], end_t=100)
    run.extra.append(content(run, "redis-set:second", drop={"e2"}))
    res, verdict = onceproof_check(run.records())
    assert res.returncode == 1, (res.stdout, res.stderr)
    assert verdict["checkers"]["exactly-once"]["valid"] is True
    assert verdict["checkers"]["partial"]["anomalies"] == {"partial": 1}
    assert verdict["checkers"]["partial"]["examples"]["partial"][0]["id"] == "e2"
