"""The explore search on a fake engine (a pure function of the schedule): the space's shape,
that delta debugging (explore/reduce.py) then Hypothesis end at the known minimal failing
schedule in few runs, and that a candidate failing with another anomaly is never accepted."""
from __future__ import annotations

import pytest

from onceproof.explore.reduce import ddmin, ordered, simplify
from onceproof.explore.replay import EngineJudge
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
    kill, slow = sorted(result.minimal.schedule, key=lambda f: f.kind)
    assert kill == Fault("kill", "pipeline-1", 0.0, 0.5)
    # the latency is bisected toward its simplest 50 ms for 4 runs: it ends near the 200 ms threshold
    assert (slow.kind, slow.target, slow.at_s, slow.for_s) == ("latency", "postgres", 0.0, 0.5)
    assert 200 <= dict(slow.params)["ms"] <= 230
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


KILL = Fault("kill", "pipeline-1", 3.1, 2.0)
SLOW = Fault("latency", "postgres", 5.0, 1.5, (("ms", 300),))
NOISE = [Fault("pause", "kafka-1", 1.0, 1.0), Fault("kill", "pipeline-0", 2.0, 0.7),
         Fault("partition", "postgres", 6.0, 3.0), Fault("clock-skew", "pipeline-0", 7.5, 2.2, (("offset", "5000ms"),))]


@pytest.mark.parametrize("where", [(0, 1), (0, 5), (2, 3), (4, 5), (1, 4)])
def test_ddmin_takes_six_faults_to_the_two_that_matter_in_few_runs(where) -> None:  # noqa: ANN001
    faults = list(NOISE)
    faults.insert(where[0], KILL)
    faults.insert(where[1], SLOW)
    schedule = tuple(faults)
    runs: list = []

    def fails(s):  # noqa: ANN001
        runs.append(s)
        assert s and len(s) < len(schedule) and set(s) <= set(schedule)
        return _needs_kill_and_slow_db(s, "duplicate").fails

    assert set(ddmin(schedule, fails)) == {KILL, SLOW}
    assert len(runs) <= 12, len(runs)
    assert len(set(runs)) == len(runs)  # no candidate is run twice


def test_ddmin_finds_a_single_culprit_and_stops_keeping_the_best_when_the_budget_ends() -> None:
    schedule = ordered([*NOISE, KILL])
    runs: list = []

    def one(s):  # noqa: ANN001
        runs.append(s)
        return KILL in s

    assert ddmin(schedule, one) == (KILL,) and len(runs) <= 8
    calls = iter([True, None])  # the first half fails, then the budget is spent
    assert len(ddmin(schedule, lambda s: next(calls))) == 3


def test_simplify_moves_each_fault_earlier_shorter_and_toward_its_simplest_parameters() -> None:
    space = Space(None, NODES, 15.0)
    runs: list = []

    def fails(s):  # noqa: ANN001
        runs.append(s)
        return _needs_kill_and_slow_db(s, "duplicate").fails

    out = simplify((KILL, SLOW), space, fails)
    assert Fault("kill", "pipeline-1", 0.0, 0.5) in out
    slow = next(f for f in out if f.kind == "latency")
    assert slow.at_s == 0.0 and slow.for_s == 0.5 and 200 <= dict(slow.params)["ms"] <= 230
    assert len(set(runs)) <= 12  # distinct runs: the search caches verdicts, a repeat costs none


def _fake_engine(kinds_of):  # noqa: ANN001 - execute(plan, folder) whose run fails with kinds_of(schedule)
    from types import SimpleNamespace

    from onceproof.explore.space import Fault as F

    def execute(plan, folder):  # noqa: ANN001
        schedule = tuple(F(s.kind, s.params["target"], s.at_s, s.for_s) for s in plan.fault_steps)
        kinds = kinds_of(schedule)
        return SimpleNamespace(valid=not kinds, results={"checkers": {"exactly-once": {"anomalies": kinds}},
                                                         "duration_s": 1.0})

    return execute


def test_a_candidate_failing_with_another_anomaly_is_never_accepted(tmp_path) -> None:  # noqa: ANN001
    """The real judge (replay.EngineJudge, 1 of 1 replays) over a fake engine: the pipeline loses
    records when pipeline-1 is killed alone, and duplicates them only when it is killed while
    kafka-1 is paused. The first failure is `duplicate`; ddmin's subset {kill} fails with `lost`
    and must not be taken."""
    def kinds_of(schedule):  # noqa: ANN001
        kill = any(f.kind == "kill" and f.target == "pipeline-1" for f in schedule)
        pause = any(f.kind == "pause" and f.target == "kafka-1" for f in schedule)
        return {"duplicate": 3} if kill and pause else {"lost": 2} if kill else {}

    base = load_plan("plans/at-least-once.yaml")
    judge = EngineJudge(base, _fake_engine(kinds_of), tmp_path, 15.0)
    seen: list = []

    def recording(schedule, sought):  # noqa: ANN001
        j = judge(schedule, sought)
        seen.append((schedule, sought, j))
        return j

    space = Space(ExploreSpace.model_validate({"kinds": ["kill", "pause"], "targets": ["kafka-1", "pipeline-1"]}),
                  NODES, 15.0)
    result = Search(space, recording, budget_s=120, seed=4, dense=1).run()
    assert result.anomaly == "duplicate" and result.minimal is not None
    assert {(f.kind, f.target) for f in result.minimal.schedule} == {("kill", "pipeline-1"), ("pause", "kafka-1")}
    rejected = [s for s, sought, j in seen if sought == "duplicate" and kinds_of(s) == {"lost": 2}]
    assert rejected, "the search never met a candidate failing with `lost`: the test proves nothing"
    for s, sought, j in seen:
        if sought is not None:
            assert j.fails == ("duplicate" in kinds_of(s))
    assert all("duplicate" in kinds_of(step.schedule) for step in result.steps)


def test_dense_examples_come_first_and_a_failure_is_reduced_in_few_runs() -> None:
    result = Search(Space(None, NODES, 15.0), _needs_kill_and_slow_db, budget_s=120, seed=1, max_examples=10,
                    dense=3).run()
    assert [len(e.schedule) for e in result.examples[:3] if e.phase == "dense"] == [6] * len(
        [e for e in result.examples[:3] if e.phase == "dense"])
    first = result.steps[0]
    reduction = [e for e in result.examples if e.phase in ("ddmin", "simplify")]
    assert len([e for e in reduction if e.phase == "ddmin"]) <= 4 * len(first.schedule)
    assert result.minimal is not None and len(result.minimal.schedule) == 2


def test_the_folders_of_runs_that_did_not_fail_are_removed_and_failing_ones_kept(tmp_path) -> None:  # noqa: ANN001
    """EngineJudge over a fake engine that writes a run folder: a passing run's folder is gone
    once judged (its verdict stays in the judgement), a failing run's is kept; keep_passing keeps
    both."""
    engine = _fake_engine(lambda s: {"duplicate": 1} if any(f.kind == "kill" for f in s) else {})

    def writing(plan, folder):  # noqa: ANN001
        folder.mkdir(parents=True)
        (folder / "history.bin").write_bytes(b"x" * 1000)
        return engine(plan, folder)

    base = load_plan("plans/at-least-once.yaml")
    kill, pause = Fault("kill", "pipeline-1", 1.0, 0.5), Fault("pause", "postgres", 1.0, 0.5)
    judge = EngineJudge(base, writing, tmp_path, 15.0)
    passed, failed = judge((pause,), None), judge((kill,), None)
    assert not passed.fails and passed.replays[0]["folder"] is None and passed.replays[0]["valid"] is True
    assert not (tmp_path / "examples" / "0001-1").exists()
    assert failed.fails and (tmp_path / failed.replays[0]["folder"] / "history.bin").is_file()
    assert judge.removed == 1 and judge.removed_bytes == 1000
    keeping = EngineJudge(base, writing, tmp_path / "k", 15.0, keep_passing=True)
    assert keeping((pause,), None).replays[0]["folder"] and (tmp_path / "k" / "examples" / "0001-1").is_dir()


def test_time_held_back_for_the_reproduction_ends_the_shrink_early() -> None:
    """Once a failure is found the search stops while `reserve_s` of the budget is left (the
    driver's reproduction runs); before any failure the reserve does not count."""
    search = Search(Space(None, NODES, 15.0), _needs_kill_and_slow_db, budget_s=120, seed=1, dense=3)
    search.reserve_s = 1000.0
    result = search.run()
    assert result.minimal is not None and result.ended == "budget"
    assert result.examples[-1].judgement.fails  # nothing judged after the first failure


def test_a_failure_another_checker_reports_is_found_and_shrunk(tmp_path) -> None:  # noqa: ANN001
    """A run invalid through the reads checker (stale-read) or the partial checker, with the
    exactly-once checker clean, is a failure explore finds and shrinks (a new user's
    `explore plans/read-replica-stale.yaml` said "no failing schedule" of a run that failed)."""
    from types import SimpleNamespace

    from onceproof.explore.space import Fault as F
    from onceproof.repeat import anomalies_of

    def execute(plan, folder):  # noqa: ANN001
        schedule = tuple(F(s.kind, s.params["target"], s.at_s, s.for_s) for s in plan.fault_steps)
        stale = any(f.kind == "pause" and f.target == "kafka-1" for f in schedule)
        return SimpleNamespace(valid=not stale, results={"duration_s": 1.0, "checkers": {
            "exactly-once": {"valid": True, "anomalies": {"lost": 0, "duplicate": 0}},
            "perf": {"valid": True, "anomalies": None},
            "reads": {"valid": not stale, "anomalies": {"stale-read": 7 if stale else 0, "unexplained-read": 0}}}})

    judge = EngineJudge(load_plan("plans/at-least-once.yaml"), execute, tmp_path, 15.0)
    space = Space(ExploreSpace.model_validate({"kinds": ["kill", "pause"], "targets": ["kafka-1", "pipeline-1"]}),
                  NODES, 15.0)
    result = Search(space, judge, budget_s=120, seed=4, dense=1).run()
    assert result.anomaly == "stale-read" and result.minimal is not None
    assert [(f.kind, f.target) for f in result.minimal.schedule] == [("pause", "kafka-1")]
    both = {"checkers": {"exactly-once": {"valid": False, "anomalies": {"duplicate": 2, "lost": 0}},
                         "partial": {"valid": False, "anomalies": {"partial": 3}}, "perf": {"anomalies": None}}}
    assert anomalies_of(both) == {"duplicate": 2, "partial": 3}
    # a checker without a verdict (a vacuous run) claims nothing, whatever it counted
    vacuous = {"checkers": {"exactly-once": {"valid": "unknown", "anomalies": {"lost": 24999}}}}
    assert anomalies_of(vacuous) == {}


class _FakeSession:
    """A Session whose runs fail (duplicate) whenever the schedule pauses kafka-1; the
    `interrupt_at`-th run (1-based, counting every run) is interrupted, as a Ctrl-C makes it."""

    def __init__(self, interrupt_at: int = 0) -> None:
        self.n, self.interrupt_at = 0, interrupt_at

    def compatible(self, plan) -> bool:  # noqa: ANN001
        return True

    def execute(self, plan, folder, on_progress=None):  # noqa: ANN001
        from types import SimpleNamespace

        self.n += 1
        folder.mkdir(parents=True, exist_ok=True)
        bad = any(s.kind == "pause" and s.params["target"] == "kafka-1" for s in plan.fault_steps)
        interrupted = self.n == self.interrupt_at
        valid = "unknown" if interrupted else not bad
        results = {"duration_s": 1.0, "seed": plan.seed, "valid": valid, "interrupted": interrupted,
                   "checkers": {"exactly-once": {"anomalies": {"duplicate": 0 if interrupted or not bad else 4}}}}
        (folder / "results.json").write_text(__import__("json").dumps(results))
        return SimpleNamespace(valid=valid, results=results, exit_code=0 if valid is True else 1 if not valid else 3,
                               out_dir=folder)


def _explore_with(session, tmp_path, budget):  # noqa: ANN001
    import yaml

    from onceproof.explore.driver import explore

    data = yaml.safe_load(open("plans/at-least-once.yaml").read())
    data["explore"] = {"kinds": ["pause", "kill"], "targets": ["kafka-1", "pipeline-0"], "max-faults": 3}
    plan = tmp_path / "p.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    plan.write_text(yaml.safe_dump(data))
    return explore(plan, budget=budget, run_duration="15s", out=tmp_path / "x", session=session, confirm=2)


def test_an_interrupted_reproduction_stops_the_explore_and_counts_only_the_runs_that_ended(tmp_path) -> None:
    """Ctrl-C during the reproduction runs: the explore says it was stopped (was: ended budget)
    and its rate counts no interrupted run (was: 0 of 1 failed, the interrupted one)."""
    first = _explore_with(_FakeSession(), tmp_path / "a", 120)
    runs_before_repro = sum(len(e.judgement.replays) for e in first.search.examples)
    result = _explore_with(_FakeSession(interrupt_at=runs_before_repro + 2), tmp_path / "b", 120)
    repro = result.summary["minimal"]["reproduction"]
    assert repro["interrupted"] is True and repro["runs"] == 1 and repro["failed"] == 1
    assert result.summary["ended"] == "stopped"
    assert "the reproduction was interrupted" in result.minimal_plan.read_text()


# --- the budget bounds the whole explore (driver.explore) ----------------------------------------
class _SlowFailingSession:
    """A Session stand-in whose every run takes `run_s` seconds and ends invalid (`duplicate`):
    the search finds a failure at once, and the minimal plan's reproduction runs (3) follow."""

    def __init__(self, run_s: float) -> None:
        self.run_s, self.runs = run_s, 0

    def compatible(self, plan: object) -> bool:
        return True

    def execute(self, plan: object, out_dir: object, **kw: object) -> object:
        import time as _time
        from pathlib import Path as _Path
        from types import SimpleNamespace

        _time.sleep(self.run_s)
        self.runs += 1
        _Path(str(out_dir)).mkdir(parents=True, exist_ok=True)
        results = {"valid": False, "duration_s": self.run_s, "seed": 1, "errors": [],
                   "checkers": {"exactly-once": {"valid": False, "anomalies": {"duplicate": 1}}}}
        return SimpleNamespace(valid=False, exit_code=1, results=results)


def test_the_budget_bounds_the_search_and_the_reproduction_runs_together(tmp_path):
    """Found: `explore --budget 5m` took 10 min 52 s; the 3 reproduction runs of the minimal
    plan ran after the search whatever the budget had left. Now a reproduction run starts only
    if a usual run still fits, and the whole call ends within budget + one run."""
    import time as _time

    from onceproof.explore.driver import explore
    plan = load_plan("plans/at-least-once.yaml")
    session = _SlowFailingSession(run_s=3.0)
    t0 = _time.monotonic()
    result = explore(plan, budget=8.0, run_duration="5s", out=tmp_path / "out", session=session, confirm=3)
    elapsed = _time.monotonic() - t0
    assert result.exit_code == 1 and result.summary["anomaly"] == "duplicate"
    assert elapsed <= 8.0 + 3.0, (elapsed, session.runs)  # the budget + one run
    repro = result.summary["minimal"]["reproduction"]
    assert repro["runs"] + repro["skipped"] == 3 and repro["skipped"] >= 1, repro
    assert "not run: the budget was spent" in (tmp_path / "out" / "minimal.yaml").read_text()
    assert "reproduction run(s) not started: the budget was spent" in (tmp_path / "out" / "explore.html").read_text()
