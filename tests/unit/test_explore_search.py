"""The explore search on a fake engine (a pure function of the schedule): the space's shape,
and that Hypothesis's shrinker ends at the known minimal failing schedule."""
from __future__ import annotations

import pytest

from onceproof.explore.search import Judgement, Search
from onceproof.explore.space import ExploreSpace, Fault, Space, schedule_entries
from onceproof.plan import load_plan
from onceproof.repeat import aggregate, derive_seed

NODES = ["kafka-1", "postgres", "pipeline", "pipeline-0", "pipeline-1"]


def _needs_kill_and_slow_db(schedule, sought):  # noqa: ANN001 - the fake engine
    kill = any(f.kind == "kill" and f.target == "pipeline-1" for f in schedule)
    slow = any(f.kind == "latency" and f.target == "postgres" and dict(f.params)["ms"] >= 200 for f in schedule)
    return Judgement(kill and slow, "duplicate" if kill and slow else None)


def test_default_space_is_every_node_and_the_five_kinds_up_to_six_faults() -> None:
    space = Space(None, NODES, 15.0)
    assert space.kinds == ["kill", "pause", "partition", "latency", "clock-skew"]
    assert space.nodes == ["pipeline-0", "pipeline-1", "kafka-1", "postgres"]
    assert space.targets_for("partition") == ["kafka-1", "postgres"]  # network faults: servers only
    assert space.targets_for("kill") == space.nodes
    assert space.spec.max_faults == 6


def test_shrinks_to_the_known_minimal_failing_schedule() -> None:
    result = Search(Space(None, NODES, 15.0), _needs_kill_and_slow_db, budget_s=120, seed=1).run()
    assert result.ended == "shrunk"
    assert result.anomaly == "duplicate"
    assert result.minimal is not None
    assert set(result.minimal.schedule) == {Fault("kill", "pipeline-1", 0.0, 0.5),
                                            Fault("latency", "postgres", 0.0, 0.5, (("ms", 200),))}
    sizes = [len(s.schedule) for s in result.steps]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 2  # the shrink steps never grow
    assert all(s.judgement.fails for s in result.steps)


def test_a_single_fault_bug_shrinks_to_one_fault_earliest_and_shortest() -> None:
    def judge(schedule, sought):  # noqa: ANN001
        bad = any(f.kind == "pause" and f.target == "kafka-1" and f.for_s >= 2 for f in schedule)
        return Judgement(bad, "lost" if bad else None)

    result = Search(Space(None, NODES, 15.0), judge, budget_s=120, seed=3).run()
    assert result.minimal is not None and result.minimal.schedule == (Fault("pause", "kafka-1", 0.0, 2.0),)


def test_a_later_failure_counts_only_with_the_anomaly_first_found() -> None:
    seen = []

    def judge(schedule, sought):  # noqa: ANN001
        seen.append(sought)
        return _needs_kill_and_slow_db(schedule, sought)

    Search(Space(None, NODES, 15.0), judge, budget_s=120, seed=1).run()
    first = seen.index("duplicate")
    assert all(s is None for s in seen[:first]) and all(s == "duplicate" for s in seen[first:])


def test_budget_spent_without_a_failure_ends_with_none_and_counts_what_was_tried() -> None:
    result = Search(Space(None, NODES, 15.0), lambda s, k: Judgement(False), budget_s=0.5, seed=1).run()
    assert result.minimal is None and result.ended == "budget" and len(result.examples) > 10


def test_stop_keeps_the_best_schedule_so_far() -> None:
    holder: list[Search] = []

    def judge(schedule, sought):  # noqa: ANN001
        j = _needs_kill_and_slow_db(schedule, sought)
        if j.fails:
            holder[0].stop()  # as Ctrl-C does: the first failure is the best so far
        return j

    search = Search(Space(None, NODES, 15.0), judge, budget_s=120, seed=1)
    holder.append(search)
    result = search.run()
    assert result.ended == "stopped" and result.minimal is not None and result.minimal.judgement.fails


def test_explore_section_narrows_the_space_and_schedules_become_plan_entries() -> None:
    spec = ExploreSpace.model_validate({"kinds": ["latency"], "targets": ["postgres"], "max-faults": 2,
                                        "params": {"latency": {"ms": [300, 400]}}})
    space = Space(spec, NODES, 10.0)
    search = Search(space, lambda s, k: Judgement(False), budget_s=0.3, seed=2)
    result = search.run()
    for e in result.examples:
        assert 1 <= len(e.schedule) <= 2
        for f in e.schedule:
            assert f.kind == "latency" and f.target == "postgres" and 300 <= dict(f.params)["ms"] <= 400
            assert 0 <= f.at_s < 10 and 0.5 <= f.for_s <= 5
    plan = load_plan("plans/at-least-once.yaml")
    from onceproof.explore.replay import plan_for

    variant = plan_for(plan, result.examples[0].schedule, 10.0)
    assert [s.kind for s in variant.fault_steps] == ["latency"] * len(result.examples[0].schedule)
    assert schedule_entries(result.examples[0].schedule)[0]["latency"]["target"] == "postgres"


def test_unknown_kind_in_explore_section_is_bad_input_with_a_hint() -> None:
    with pytest.raises(ValueError, match="did you mean 'latency'"):
        ExploreSpace.model_validate({"kinds": ["latancy"]})


def test_aggregate_and_derived_seeds() -> None:
    assert aggregate([True, False, "unknown"]) is False
    assert aggregate([True, "unknown"]) == "unknown"
    assert aggregate([True, True]) is True
    assert aggregate([]) == "unknown"
    assert derive_seed(7, 1) == 7 and derive_seed(7, 2) == derive_seed(7, 2) != derive_seed(8, 2)


def test_rounds_of_few_examples_still_find_and_shrink() -> None:
    result = Search(Space(None, NODES, 15.0), _needs_kill_and_slow_db, budget_s=120, seed=1, max_examples=10).run()
    assert result.ended == "shrunk" and result.minimal is not None and len(result.minimal.schedule) == 2
    trivial = [e for e in result.examples[:10] if all(f.at_s == 0 and f.for_s == 0.5 for f in e.schedule)]
    assert len(trivial) <= 3  # Hypothesis's near-minimal opening examples are few
