"""The report's timeline: perf's analysis plus a marker for each process fault."""
from __future__ import annotations

from onceproof.checkers.history import history_from_records
from onceproof.report.timeline import Timeline, build, faults_from_results
from tests.unit.checkers.test_perf import steady_run


def test_kills_are_marked_and_partitions_are_not() -> None:
    tl = build(history_from_records(steady_run(50, 20, faults=[("f1", "kill", 5, 7), ("f2", "partition", 6, 9)])))
    assert [(m.what, m.lane, round(m.time_s)) for m in tl.markers] == [
        ("kill", "pipeline-0", 5), ("restart", "pipeline-0", 7)]
    assert tl.last_healed(8).fault == "f1"


def test_faults_from_results_are_timed_from_the_load_start_and_marked() -> None:
    tl = Timeline()
    faults_from_results({"faults": [{"fault": "f1", "kind": "pause", "targets": ["pipeline-1"], "applied_s": 2.0,
                                     "healed_s": 3.5}]}, tl)
    assert tl.origin == "the load started" and tl.end_s == 3.5
    assert [(m.what, m.time_s) for m in tl.markers] == [("pause", 2.0), ("resume", 3.5)]
    assert tl.faults[0].recovery_note == "no throughput data"
