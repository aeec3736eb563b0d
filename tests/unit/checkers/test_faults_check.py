"""The faults checker: a run whose planned faults did not happen has no verdict (strict, the
default) or keeps its verdict with a note (lenient); the reason names each fault and why."""
from __future__ import annotations

from onceproof.checkers import compose, exactly_once
from onceproof.checkers import faults as faults_check
from onceproof.checkers.history import history_from_records


def rec(t_s: float, process: str, type_: str, f: str, value=None) -> dict:
    return {"time": int(t_s * 1e9), "process": process, "type": type_, "f": f, "value": value}


def _run(*nemesis: dict) -> list[dict]:
    """A correct run (one event sent, acknowledged, applied once, final read) plus `nemesis`."""
    e = {"id": "e1", "key": "k", "seq": 0}
    out = [rec(0, "harness", "info", "start", {"run_id": "r"}), rec(0.1, "load", "invoke", "send", e),
           rec(0.2, "load", "ok", "send", e), *nemesis,
           rec(5, "observer", "ok", "final-read", {"full": True, "events": [["e1", "k", 0, 0]]})]
    for i, r in enumerate(out):
        r["index"] = i
    return out


KILL = {"fault": "f1", "kind": "kill", "targets": ["pipeline-0"]}
PARTITION = {"fault": "f2", "kind": "partition", "targets": ["kafka-1"]}
APPLIED_AND_HEALED = [rec(1, "nemesis", "invoke", "apply", KILL), rec(1.1, "nemesis", "ok", "apply", KILL),
                      rec(2, "nemesis", "invoke", "heal", KILL), rec(2.1, "nemesis", "ok", "heal", KILL)]
NOT_APPLIED = [rec(3, "nemesis", "invoke", "apply", PARTITION),
               rec(3.1, "nemesis", "fail", "apply", {**PARTITION, "error": "no proxy named kafka-9"})]


def test_every_planned_fault_applied_is_valid():
    r = faults_check.check(history_from_records(_run(*APPLIED_AND_HEALED)), planned=1)
    assert r["valid"] is True and r["reason"] == "" and r["applied"] == 1 and r["unapplied"] == []


def test_a_fault_whose_apply_failed_takes_the_verdict_away_with_its_reason():
    h = history_from_records(_run(*APPLIED_AND_HEALED, *NOT_APPLIED))
    r = faults_check.check(h, planned=2)
    assert r["valid"] == "unknown"
    assert r["reason"] == "f2 partition kafka-1 was not applied: no proxy named kafka-9"
    assert r["unapplied"] == [{"fault": "f2", "kind": "partition", "targets": ["kafka-1"], "outcome": "fail",
                               "error": "no proxy named kafka-9"}]
    # composed with a correct exactly-once result: the run is unknown, never valid
    both = compose({"exactly-once": exactly_once.check,
                    "faults": lambda x: faults_check.check(x, planned=2)})(h)
    assert both["checkers"]["exactly-once"]["valid"] is True
    assert both["valid"] == "unknown"


def test_a_fault_whose_apply_ended_unknown_may_not_have_happened():
    v = {**PARTITION, "error": "timed out"}
    h = history_from_records(_run(rec(3, "nemesis", "invoke", "apply", PARTITION),
                                  rec(3.1, "nemesis", "info", "apply", v)))
    r = faults_check.check(h, planned=1)
    assert r["valid"] == "unknown"
    assert r["reason"] == "f2 partition kafka-1 may not have been applied (its apply ended unknown): timed out"


def test_a_planned_fault_never_reached_takes_the_verdict_away():
    r = faults_check.check(history_from_records(_run(*APPLIED_AND_HEALED)), planned=3)
    assert r["valid"] == "unknown"
    assert "2 of 3 planned faults were never applied" in r["reason"]


def test_lenient_keeps_the_verdict_and_notes_what_did_not_happen():
    r = faults_check.check(history_from_records(_run(*NOT_APPLIED)), planned=1, strict=False)
    assert r["valid"] is True and r["reason"] == ""
    assert any("f2 partition kafka-1 was not applied: no proxy named kafka-9" in n for n in r["notes"])
