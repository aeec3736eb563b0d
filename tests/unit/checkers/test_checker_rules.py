"""Properties of the exactly-once rules that single-rule mutants of the checker break: a run
without a final read proves no loss and is never valid; a run where nothing was acknowledged
is vacuous; of several final reads, the last one is the sink's content."""
from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from onceproof.checkers import exactly_once
from onceproof.checkers.history import history_from_records

OUTCOMES = st.sampled_from(["ok", "fail", "info", None])
EVENTS = st.lists(st.tuples(OUTCOMES, st.integers(0, 2)), min_size=1, max_size=12)


def _records(events: list[tuple[str | None, int]], reads: list[list[int]], final: bool) -> list[dict[str, Any]]:
    """A run: each event's send (outcome None: no completion), then sink reads, each listing
    how many times each event is in the sink (the last one a final read when `final`)."""
    recs: list[dict[str, Any]] = []

    def add(process: str, typ: str, f: str, value: Any) -> None:
        recs.append({"index": len(recs), "time": len(recs) * 10, "process": process, "type": typ, "f": f,
                     "value": value})

    for i, (outcome, _) in enumerate(events):
        v = {"id": f"e{i}", "key": "k", "seq": i}
        add("load", "invoke", "send", v)
        if outcome is not None:
            add("load", outcome, "send", v)
    for n, counts in enumerate(reads):
        effects = [[f"e{i}", "k", i, 0] for i, c in enumerate(counts) for _ in range(c)]
        last = n == len(reads) - 1
        add("observer", "ok", "final-read" if final and last else "observe", {"full": True, "events": effects})
    return recs


def _check(recs: list[dict[str, Any]]) -> dict[str, Any]:
    return exactly_once.check(history_from_records(recs))


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_without_a_final_read_nothing_is_lost_and_the_run_is_never_valid(events: list[Any]) -> None:
    r = _check(_records(events, [[c for _, c in events]], final=False))
    assert r["anomalies"]["lost"] == 0
    assert r["valid"] is not True
    assert r["stats"]["final_read"] is False
    if r["valid"] == "unknown" and not r["vacuous"]:  # the reason says why: no final read
        assert r["reason"].startswith("no final read (the run did not finish)"), r["reason"]


@settings(max_examples=150, deadline=None)
@given(EVENTS)
def test_an_acked_event_missing_from_the_final_read_is_lost(events: list[Any]) -> None:
    r = _check(_records(events, [[c for _, c in events]], final=True))
    missing = sum(1 for o, c in events if o == "ok" and c == 0)
    assert r["anomalies"]["lost"] == missing
    assert r["anomalies"]["duplicate"] == sum(1 for _, c in events if c > 1)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["fail", "info", None]), st.integers(0, 1)), min_size=1, max_size=12))
def test_a_run_where_nothing_was_acknowledged_is_vacuous(events: list[Any]) -> None:
    r = _check(_records(events, [[c for _, c in events]], final=True))
    assert r["vacuous"] is True and r["valid"] != True  # noqa: E712 - "unknown" or False, never True
    assert any("no send was acknowledged" in n for n in r["notes"])
    if r["valid"] == "unknown":
        assert r["reason"].startswith("vacuous run: no send was acknowledged"), r["reason"]


@settings(max_examples=150, deadline=None)
@given(EVENTS, st.lists(st.lists(st.integers(0, 2), min_size=12, max_size=12), min_size=1, max_size=3))
def test_of_several_final_reads_the_last_is_the_sinks_content(events: list[Any], earlier: list[list[int]]) -> None:
    last = [c for _, c in events]
    recs = _records(events, [e[:len(events)] for e in earlier] + [last], final=True)
    for r in recs:  # every read a final read
        if r["f"] == "observe":
            r["f"] = "final-read"
    r = _check(recs)
    assert r["anomalies"]["lost"] == sum(1 for o, c in events if o == "ok" and c == 0)
    assert r["anomalies"]["duplicate"] == sum(1 for c in last if c > 1)
    assert r["stats"]["effects"] == sum(last)


# --- single rules that surviving mutants showed untested (benchmarks/mutate_exactly_once.py) ---
def _recs(*rows: tuple[str, str, str, Any]) -> list[dict[str, Any]]:
    """Records (process, type, f, value) in this order, 10 ns apart, indexed from 0 (so the
    first row is record 0: a rule must not take index 0 for "absent")."""
    return [{"index": i, "time": 10 * (i + 1), "process": p, "type": t, "f": f, "value": v}
            for i, (p, t, f, v) in enumerate(rows)]


E1, E2 = {"id": "e1", "key": "k", "seq": 0}, {"id": "e2", "key": "k", "seq": 1}
FX1, FX2 = ["e1", "k", 0, 0], ["e2", "k", 1, 0]


def test_a_send_invoked_in_record_0_without_completion_is_unfinished() -> None:
    r = _check(_recs(("load", "invoke", "send", E1), ("load", "invoke", "send", E2), ("load", "ok", "send", E2),
                     ("observer", "ok", "final-read", {"full": True, "events": [FX2]})))
    assert r["stats"]["unfinished_sends"] == 1 and r["stats"]["sends"] == {"ok": 1, "fail": 0, "info": 1}
    assert r["valid"] is True  # e1 unknown (no completion), applied 0 times: allowed


def test_a_send_invoked_in_record_0_and_applied_once_is_no_phantom() -> None:
    r = _check(_recs(("load", "invoke", "send", E1), ("load", "ok", "send", E1),
                     ("observer", "ok", "final-read", {"full": True, "events": [FX1]})))
    assert r["valid"] is True and r["anomalies"]["phantom"] == 0


def test_a_completion_in_record_0_counts_as_a_completion() -> None:
    # an `ok` with no invoke (a history cut at its start): acknowledged, and a phantom once applied
    r = _check(_recs(("load", "ok", "send", E1),
                     ("observer", "ok", "final-read", {"full": True, "events": [FX1]})))
    assert r["stats"]["sends"]["ok"] == 1 and r["stats"]["unfinished_sends"] == 0
    assert r["anomalies"]["phantom"] == 1 and r["valid"] is False


def test_only_several_final_reads_get_the_several_final_reads_note() -> None:
    one = _recs(("load", "invoke", "send", E1), ("load", "ok", "send", E1),
                ("observer", "ok", "final-read", {"full": True, "events": [FX1]}))
    assert not any("final reads" in n for n in _check(one)["notes"])
    two = _recs(*[(r["process"], r["type"], r["f"], r["value"]) for r in one],
                ("observer", "ok", "final-read", {"full": True, "events": [FX1]}))
    assert "2 final reads; the last one is the sink's content" in _check(two)["notes"]


def test_without_a_final_read_the_content_is_the_latest_full_observe_and_what_followed() -> None:
    sends = [("load", "invoke", "send", E1), ("load", "ok", "send", E1)]
    # a duplicate in the latest full observe is in the content (found)...
    r = _check(_recs(*sends, ("observer", "ok", "observe", {"full": True, "events": [FX1, FX1]})))
    assert r["anomalies"]["duplicate"] == 1 and r["stats"]["effects"] == 2
    # ...one only in an earlier full observe is not (the later full observe replaced it)
    r = _check(_recs(*sends, ("observer", "ok", "observe", {"full": True, "events": [FX1, FX1]}),
                     ("observer", "ok", "observe", {"full": True, "events": [FX1]})))
    assert r["anomalies"]["duplicate"] == 0 and r["stats"]["effects"] == 1
    # with no full observe at all, every incremental one from the first on is the content
    r = _check(_recs(("observer", "ok", "observe", {"full": False, "events": [FX1]}), *sends,
                     ("observer", "ok", "observe", {"full": False, "events": [FX1]})))
    assert r["anomalies"]["duplicate"] == 1 and r["stats"]["effects"] == 2


def test_an_event_never_sent_seen_then_gone_is_a_phantom() -> None:
    r = _check(_recs(("load", "invoke", "send", E1), ("load", "ok", "send", E1),
                     ("observer", "ok", "observe", {"full": True, "events": [FX1, FX2]}),
                     ("observer", "ok", "final-read", {"full": True, "events": [FX1]})))
    assert r["anomalies"]["phantom"] == 1 and r["examples"]["phantom"][0]["id"] == "e2"


def test_notes_say_what_was_not_checked_and_only_that() -> None:
    base = [("load", "invoke", "send", E1), ("load", "ok", "send", E1),
            ("observer", "ok", "final-read", {"full": True, "events": [FX1]})]
    plain = exactly_once.check(history_from_records(_recs(*base)))
    assert "per-key order not checked (the plan does not ask for it)" in plain["notes"]
    assert "no derived state declared: state not checked" in plain["notes"]
    assert plain["unseen"] == 0  # no progress records: nothing unseen
    ordered = exactly_once.check(history_from_records(_recs(
        *base, ("observer", "ok", "state", {"k": {"count": 1, "sum": 0}}))), order="per-key")
    assert not any("order not checked" in n or "no derived state" in n for n in ordered["notes"])
    cut = exactly_once.check(history_from_records(_recs(*base[:2])))  # no final read: a run cut short
    assert "no derived state read (the run did not finish): state not checked" in cut["notes"]
    assert not any("declared" in n for n in cut["notes"])
    undeclared = exactly_once.check(history_from_records(_recs(  # the plan declares none: said so, cut or not
        ("harness", "info", "start", {"order": None, "state": False}), *base[:2])))
    assert "no derived state declared: state not checked" in undeclared["notes"]


def _with_state(*states: Any) -> dict[str, Any]:
    """e2 (key k, seq 1) sent, acknowledged and applied once; then each declared state."""
    return _check(_recs(("load", "invoke", "send", E2), ("load", "ok", "send", E2),
                        ("observer", "ok", "final-read", {"full": True, "events": [FX2]}),
                        *[("observer", "ok", "state", s) for s in states]))


def test_of_several_declared_states_the_last_is_compared() -> None:
    assert _with_state({"k": {"count": 5, "sum": 5}}, {"k": {"count": 1, "sum": 1}})["anomalies"]["state-mismatch"] == 0
    assert _with_state({"k": {"count": 1, "sum": 1}}, {"k": {"count": 5, "sum": 5}})["anomalies"]["state-mismatch"] == 1


def test_a_declared_key_no_event_touched_must_be_zero() -> None:
    assert _with_state({"k": {"count": 1, "sum": 1}, "kx": {"count": 0, "sum": 0}})["valid"] is True
    r = _with_state({"k": {"count": 1, "sum": 1}, "kx": {"count": 1, "sum": 0}})
    assert r["anomalies"]["state-mismatch"] == 1 and r["examples"]["state-mismatch"][0]["key"] == "kx"


def test_a_key_applied_but_missing_from_the_declared_state_is_a_mismatch() -> None:
    r = _with_state({"other": {"count": 0, "sum": 0}})
    assert r["anomalies"]["state-mismatch"] == 1
    assert "count is 0 in the sink, 1 by the events applied" in r["examples"]["state-mismatch"][0]["why"]


def test_a_phantom_says_whether_its_send_failed_or_never_happened() -> None:
    # e1's failed send is record 0, and the history's last record is a failed send (of e4): an
    # index of 0 is a record, and "no record" (-1) must never read the last one
    e4 = {"id": "e4", "key": "k", "seq": 3}
    r = _check(_recs(("load", "fail", "send", E1),
                     ("load", "invoke", "send", E2), ("load", "ok", "send", E2),
                     ("observer", "ok", "final-read", {"full": True, "events": [FX1, FX2, ["e3", "k", 2, 0]]}),
                     ("load", "invoke", "send", e4), ("load", "fail", "send", e4)))
    why = {ex["id"]: ex["why"] for ex in r["examples"]["phantom"]}
    assert why["e1"].endswith(": its send failed") and why["e3"].endswith(": no send of this id"), why


def test_a_sink_whose_ids_match_no_sent_event_gets_a_hint_about_the_mapping() -> None:
    """A query mapping with its columns swapped (customer first) made every event lost and the
    customers phantoms, with nothing saying why (found by a new user)."""
    recs: list[dict[str, Any]] = []

    def add(process: str, typ: str, f: str, value: Any) -> None:
        recs.append({"index": len(recs), "time": len(recs) * 10, "process": process, "type": typ, "f": f,
                     "value": value})

    for i in range(6):
        v = {"id": f"e{i}", "key": f"k{i % 2}", "seq": i}
        add("load", "invoke", "send", v)
        add("load", "ok", "send", v)
    add("observer", "ok", "final-read", {"full": True, "events": [[f"k{i % 2}", f"e{i}", None, 0] for i in range(6)]})
    r = _check(recs)
    assert r["anomalies"]["lost"] == 6 and r["anomalies"]["phantom"] == 2
    assert any("do not look like the events' ids" in n for n in r["notes"])
    # one event found in the sink: no such hint (a pipeline that lost the rest is another story)
    recs[-1]["value"]["events"].append(["e0", "k0", 0, 0])
    assert not any("do not look like" in n for n in _check(recs)["notes"])
