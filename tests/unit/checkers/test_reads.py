"""The `reads` checker (checkers/reads.py) on synthetic histories: a stale read is caught and
shown as the smallest set of operations that cannot be linearized; a correct history is not
accused; reads of keys never written, and reads that failed or got no answer, are not accused."""
from __future__ import annotations

import random
from typing import Any

import pytest

from onceproof.checkers import linearizable, reads
from onceproof.checkers.history import HistoryError, history_from_records
from onceproof.checkers.models import max_register

MS = 1_000_000


class H:
    """A history builder: times in ms."""

    def __init__(self) -> None:
        self.recs: list[dict[str, Any]] = []

    def add(self, t_ms: float, process: str, typ: str, f: str, value: Any) -> int:
        self.recs.append({"index": len(self.recs), "time": int(t_ms * MS), "process": process, "type": typ,
                          "f": f, "value": value})
        return len(self.recs) - 1

    def write(self, key: str, seq: int, sent: float, seen: float | None) -> None:
        """Event (key, seq) sent at `sent`, first seen in the sink at `seen` (None: never)."""
        v = {"id": f"{key}-{seq}", "key": key, "seq": seq}
        self.add(sent, "load", "invoke", "send", v)
        self.add(sent + 1, "load", "ok", "send", v)
        if seen is not None:
            self.add(seen, "observer", "ok", "observe", {"full": False, "events": [[v["id"], key, seq, 0]]})

    def read(self, proc: str, key: str, call: float, ret: float, value: Any, typ: str = "ok") -> int:
        i = self.add(call, proc, "invoke", "read", {"key": key})
        self.add(ret, proc, typ, "read", {"key": key, **({"value": value} if typ == "ok" else {"error": "x"})})
        return i

    def check(self) -> dict[str, Any]:
        self.recs.sort(key=lambda r: r["time"])
        for i, r in enumerate(self.recs):  # record numbers in time order, as a run writes them
            r["index"] = i
        return reads.check(history_from_records(self.recs))


def test_a_read_older_than_a_completed_write_is_a_stale_read_shown_as_the_two_operations():
    h = H()
    h.add(0, "harness", "info", "load-start", None)
    h.write("k1", 0, 10, 20)
    h.write("k1", 1, 30, 40)  # seq 1 applied and seen at 40 ms
    h.read("reader-0", "k1", 50, 55, 0)  # began after 40 ms, still returns 0
    r = h.check()
    assert r["valid"] is False
    assert r["anomalies"]["stale-read"] == 1
    ex = r["examples"]["stale-read"][0]
    assert ex["key"] == "k1" and ex["seq"] == 0 and "stale read" in ex["why"]
    inputs = sorted(tuple(o["input"]) for o in ex["operations"])
    # the read, the write it missed, and the write of the value it returned
    assert inputs == [("read",), ("write", 0), ("write", 1)]
    assert r["first_anomaly_s"] == pytest.approx(0.050)
    assert set(r["minimal_invalid"]) == {o["id"] for o in ex["operations"]}
    ops = linearizable.as_ops([{**o, "input": tuple(o["input"])} for o in r["operations"]])
    assert linearizable.check(ops, max_register, partition=False, native=False)["valid"] is False


def test_a_read_lower_than_an_earlier_completed_read_is_stale():
    h = H()
    h.write("k", 0, 0, None)  # never seen by the observer (the standby got it first)
    h.write("k", 1, 5, None)
    h.read("reader-0", "k", 10, 20, 1)
    h.read("reader-1", "k", 30, 40, 0)
    r = h.check()
    assert r["valid"] is False and r["anomalies"]["stale-read"] == 1
    ex = r["examples"]["stale-read"][0]
    assert "earlier read" in ex["why"]
    assert sorted(tuple(o["input"]) for o in ex["operations"]) == [("read",), ("read",), ("write", 0), ("write", 1)]


def test_concurrent_reads_and_writes_in_any_order_are_not_accused():
    h = H()
    h.write("k", 0, 0, 100)
    h.write("k", 1, 10, 100)
    h.read("reader-0", "k", 5, 150, 1)  # may see 1 (concurrent with its write)
    h.read("reader-1", "k", 20, 30, -1 if False else None)  # nothing yet: possible, nothing completed
    h.read("reader-2", "k", 90, 200, 0)  # concurrent with reader-0 and the writes: 0 is possible
    h.read("reader-3", "k", 160, 170, 1)
    r = h.check()
    assert r["valid"] is True, r
    assert sum(r["anomalies"].values()) == 0


def test_reads_of_keys_never_written_and_failed_or_unanswered_reads_are_not_accused():
    h = H()
    h.write("k", 0, 0, 10)
    h.write("k", 1, 20, 30)
    h.read("reader-0", "other", 40, 50, None)  # a key nobody wrote: nothing, fine
    h.read("reader-1", "k", 40, 50, None, typ="fail")  # failed: says nothing
    h.read("reader-2", "k", 40, 2000, None, typ="info")  # timed out: says nothing
    h.add(60, "reader-3", "invoke", "read", {"key": "k"})  # never answered
    h.read("reader-0", "k", 60, 70, 1)
    r = h.check()
    assert r["valid"] is True, r
    assert r["reads"] == {"ok": 2, "fail": 1, "info": 2, "broken": 0}


def test_a_read_of_a_value_never_written_is_unexplained():
    h = H()
    h.write("k", 0, 0, 10)
    h.read("reader-0", "k", 20, 30, 7)
    h.read("reader-1", "never", 20, 30, 3)
    r = h.check()
    assert r["valid"] is False and r["anomalies"]["unexplained-read"] == 2


def test_a_read_that_cannot_precede_its_own_write_is_judged_from_that_write():
    # the read began at 20, but the value it returned was only sent at 50: it took effect after
    # 50, by when seq 2 had been seen (45): stale although 45 < the read's own call is false
    h = H()
    h.write("k", 2, 0, 45)
    h.write("k", 1, 50, 200)  # a smaller seq sent later (another producer) is still a write
    h.read("reader-0", "k", 20, 60, 1)
    r = h.check()
    assert r["valid"] is False and r["anomalies"]["stale-read"] == 1


def test_no_reads_is_unknown_with_the_reason():
    h = H()
    h.write("k", 0, 0, 10)
    r = h.check()
    assert r["valid"] == "unknown" and "no reads" in r["reason"]


def test_a_read_record_of_the_wrong_shape_is_a_history_error():
    h = H()
    h.add(0, "reader-0", "invoke", "read", {"key": 5})
    with pytest.raises(HistoryError, match="string `key`"):
        h.check()


def _simulated(stale: bool, seed: int) -> H:
    """A store with per-key max state, writes committed at a random point of their window, and
    reads from a replica that lags by 0..300 ms when `stale` (else from the store itself)."""
    rng = random.Random(seed)
    h = H()
    commits: dict[str, list[tuple[float, int]]] = {"a": [], "b": []}
    for key in commits:
        t = 0.0
        for seq in range(60):
            t += rng.uniform(1, 20)
            commit = t + rng.uniform(0, 30)
            commits[key].append((commit, seq))
            h.write(key, seq, t, commit + rng.uniform(0, 50))
    for n in range(150):
        key = rng.choice("ab")
        call = rng.uniform(0, 1200)
        point = call + rng.uniform(0, 10)
        lag = rng.uniform(0, 300) if stale else 0.0
        val = max((s for c, s in commits[key] if c <= point - lag), default=None)
        h.read(f"reader-{n}", key, call, point + rng.uniform(0, 10), val)
    return h


@pytest.mark.parametrize("seed", range(5))
def test_a_simulated_linearizable_store_is_never_accused(seed):
    r = _simulated(False, seed).check()
    assert r["valid"] is True, r["examples"]


@pytest.mark.parametrize("seed", range(3))
def test_a_simulated_lagging_replica_is_caught(seed):
    r = _simulated(True, seed).check()
    assert r["valid"] is False
    ex = r["examples"]["stale-read"][0]
    assert 2 <= len(ex["operations"]) <= 4


def _random_history(rng: random.Random) -> tuple[H, list[dict[str, Any]]]:
    """A small random history of one key (any verdict), and its ops for the linearizable checker."""
    h, ops = H(), []
    for seq in range(rng.randint(0, 5)):
        sent = rng.uniform(0, 100)
        seen = sent + rng.uniform(0, 60) if rng.random() < 0.8 else None
        h.write("k", seq, sent, seen)
        ops.append({"id": len(ops), "process": "load", "call": sent, "return": seen, "input": ("write", seq)})
    for n in range(rng.randint(1, 5)):
        call = rng.uniform(0, 150)
        ret = call + rng.uniform(0, 40)
        value = rng.choice([None, *range(len(ops) + 1)])
        h.read(f"reader-{n}", "k", call, ret, value)
        ops.append({"id": len(ops), "process": f"reader-{n}", "call": call, "return": ret, "input": ("read",),
                    "output": -1 if value is None else value})
    return h, ops


@pytest.mark.parametrize("seed", range(300))
def test_the_rules_decide_exactly_what_the_linearizability_search_decides(seed):
    # the checker's polynomial rules against the general search (Wing & Gong / Lowe) on the
    # same history: equal verdicts, or the rules would accuse a linearizable history (or miss one)
    rng = random.Random(seed)
    h, ops = _random_history(rng)
    # the history's times are whole ns: compare the search on the same rounded times
    for o in ops:
        o["call"] = int(o["call"] * MS)
        o["return"] = None if o["return"] is None else int(o["return"] * MS)
    # a write's return is its first sighting, recorded at `seen`; its call the send's invoke
    expected = linearizable.check(linearizable.as_ops(ops), max_register, partition=False, native=False)["valid"]
    got = h.check()["valid"]
    assert got == expected, (seed, ops)


def _saved(stale: bool) -> list[dict[str, Any]]:
    h = H()
    h.add(0, "harness", "info", "load-start", None)
    h.write("k", 0, 10, 20)
    h.write("k", 1, 30, 40)
    h.read("reader-0", "k", 50, 55, 0 if stale else 1)
    h.add(60, "observer", "ok", "final-read", {"full": True, "events": [["k-0", "k", 0, 0], ["k-1", "k", 1, 0]]})
    h.recs.sort(key=lambda r: r["time"])
    for i, r in enumerate(h.recs):
        r["index"] = i
    return h.recs


@pytest.mark.parametrize("stale", [True, False])
def test_onceproof_check_runs_the_reads_checker_on_a_saved_history(onceproof_check, stale):
    res, verdict = onceproof_check(_saved(stale))
    assert res.returncode == (1 if stale else 0), (res.stdout, res.stderr)
    assert verdict["checkers"]["exactly-once"]["valid"] is True
    assert verdict["checkers"]["reads"]["anomalies"]["stale-read"] == (1 if stale else 0)
    text = onceproof_check(_saved(stale), as_json=False)[0].stdout
    assert ("smallest set of ops that cannot be linearized" in " ".join(text.split())) is stale, text


def _broken(h: H, proc: str, key: str, call: float, ret: float) -> None:
    h.add(call, proc, "invoke", "read", {"key": key})
    h.add(ret, proc, "info", "read", {"key": key, "broken": True, "error": "not a seq (an integer >= 0 or null): '58'"})


def test_answers_that_break_the_read_contract_make_the_verdict_unknown_never_valid():
    """A pipeline answering {"value": "58"} had every non-null read dropped; the nulls read
    before the first write then made a VALID (found by a new user)."""
    h = H()
    h.add(0, "harness", "info", "load-start", None)
    h.read("reader-0", "k1", 1, 2, None)  # before any write: fine
    h.write("k1", 0, 10, 20)
    _broken(h, "reader-0", "k1", 30, 31)
    _broken(h, "reader-1", "k1", 32, 33)
    r = h.check()
    assert r["valid"] == "unknown"
    assert r["reads"]["broken"] == 2
    assert "2 of 3 read answers broke the read contract" in r["reason"] and "'58'" in r["reason"]


def test_only_broken_answers_are_unknown_and_an_anomaly_beside_them_is_still_invalid():
    h = H()
    h.add(0, "harness", "info", "load-start", None)
    h.write("k1", 0, 10, 20)
    _broken(h, "reader-0", "k1", 30, 31)
    r = h.check()
    assert r["valid"] == "unknown" and "broke the read contract" in r["reason"]
    h.write("k1", 1, 40, 50)
    h.read("reader-1", "k1", 60, 65, 0)  # stale: seq 1 was seen at 50
    r = h.check()
    assert r["valid"] is False and r["anomalies"]["stale-read"] == 1
    assert any("broke the read contract" in n for n in r["notes"])


def test_the_cli_says_why_a_checker_gave_no_verdict():
    from onceproof.commands.run import why_unknown

    r = {"valid": "unknown", "reason": "3 of 5 read answers broke the read contract", "notes": ["n1"]}
    assert why_unknown("reads", r) == ["reads: 3 of 5 read answers broke the read contract", "reads: n1"]
    assert why_unknown("exactly-once", {"valid": "unknown", "reason": "x", "notes": ["x"]}) == ["exactly-once: x"]
    assert why_unknown("reads", {"valid": True, "reason": "", "notes": ["n"]}) == []
