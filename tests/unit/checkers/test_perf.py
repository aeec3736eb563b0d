"""The perf checker: rates, latency, fault windows and recovery, from a history alone."""
from __future__ import annotations

from pathlib import Path

import pytest

from onceproof.checkers import compose, exactly_once, perf
from onceproof.checkers.history import history_from_records, read_history
from onceproof.checkers.perf import build, choose_bin
from tests.unit.report.synthetic_run import write_run

S = 1_000_000_000


def rec(t_s: float, process: str, type_: str, f: str, value=None) -> dict:
    return {"index": 0, "time": int(t_s * S), "process": process, "type": type_, "f": f, "value": value}


def steady_run(rate: int, seconds: int, gap: tuple[float, float] | None = None,
               faults: list[tuple[str, str, float, float]] = ()) -> list[dict]:
    """`rate` events/s, each acked 10 ms and applied 100 ms after its send; nothing applied
    inside `gap` (they pile up and are applied at its end); observations every 0.5 s."""
    out = [rec(0, "harness", "info", "load-start")]
    applied: list[tuple[float, list]] = []
    for i in range(rate * seconds):
        t = i / rate
        v = {"id": f"e{i}", "key": "k", "seq": i}
        out += [rec(t, "load", "invoke", "send", v), rec(t + 0.01, "load", "ok", "send", v)]
        at = t + 0.1
        if gap and gap[0] <= at < gap[1]:
            at = gap[1]
        applied.append((at, [f"e{i}", "k", i, 0]))
    t = 0.5
    while t <= seconds + 1:
        out.append(rec(t, "observer", "ok", "observe",
                       {"full": False, "events": [e for at, e in applied if t - 0.5 < at <= t]}))
        t += 0.5
    out.append(rec(seconds, "harness", "info", "load-end"))
    for name, kind, a, h in faults:
        v = {"fault": name, "kind": kind, "targets": ["pipeline-0"]}
        out += [rec(a, "nemesis", "invoke", "apply", v), rec(a + 0.001, "nemesis", "ok", "apply", v),
                rec(h, "nemesis", "invoke", "heal", v), rec(h + 0.001, "nemesis", "ok", "heal", v)]
    out.sort(key=lambda r: r["time"])
    for i, r in enumerate(out):
        r["index"] = i
    return out


def test_sent_acknowledged_and_applied_are_counted_per_second() -> None:
    tl = build(history_from_records(steady_run(100, 20)))
    per_bin = round(100 * tl.bin_s)  # events in one bin
    bins = round(20 / tl.bin_s)
    assert tl.sent[:bins] == pytest.approx([100.0] * bins, rel=0.1)
    assert sum(tl.acked) * tl.bin_s == 2000  # acked 10 ms after the send: one bin later at worst
    assert sum(tl.applied) * tl.bin_s == pytest.approx(2000)
    # reads every 0.5 s: each read's new events are spread over the 0.5 s before it, not
    # piled into one bin, so a steady pipeline draws a steady line
    assert tl.applied[4:bins - 4] == pytest.approx([100.0] * (bins - 8), rel=0.2)
    assert per_bin > 0
    assert tl.sends == {"ok": 2000, "fail": 0, "info": 0}
    assert tl.n_applied == 2000


def test_latency_is_first_sighting_minus_acknowledgement() -> None:
    tl = build(history_from_records(steady_run(100, 20)))
    # applied 100 ms after the send, acked 10 ms after it, seen at the next 0.5 s observation
    p50 = [v for v in tl.latency_p50 if v is not None]
    assert all(90 <= v <= 590 for v in p50)
    assert tl.latency_ms["max"] <= 590


def test_faults_are_paired_by_name() -> None:
    tl = build(history_from_records(steady_run(50, 20, faults=[("f1", "kill", 5, 7), ("f2", "partition", 6, 9)])))
    assert [(w.fault, w.kind, round(w.start_s, 3), round(w.end_s, 3)) for w in tl.faults] == [
        ("f1", "kill", 5.001, 7.001), ("f2", "partition", 6.001, 9.001)]
    assert tl.active_faults(6.5) == tl.faults
    assert tl.last_healed(8).fault == "f1"


def test_a_fault_never_healed_lasts_to_the_end() -> None:
    records = steady_run(20, 10)
    records.append(rec(4, "nemesis", "ok", "apply", {"fault": "f9", "kind": "pause", "targets": ["redis"]}))
    tl = build(history_from_records(records))
    assert tl.faults[0].end_s is None and tl.faults[0].recovery_note == "never healed"
    assert tl.faults[0].active_at(10.5, tl.end_s)


def test_recovery_is_the_time_from_heal_until_applied_rate_is_back() -> None:
    # nothing applied from 8 s to 12 s; the backlog lands at 12 s (seen by the read at 12 s,
    # so applied somewhere in the 0.5 s before it), then the steady rate goes on
    tl = build(history_from_records(steady_run(100, 30, gap=(8, 12), faults=[("f1", "kill", 8, 10)])))
    (w,) = tl.faults
    assert w.before_rate == pytest.approx(100, rel=0.05)
    assert 1.5 - tl.bin_s <= w.recovery_s <= 2.0 + tl.bin_s


def test_bins_are_fine_for_short_runs_and_per_second_for_long_ones() -> None:
    assert choose_bin(10) == 0.1
    assert choose_bin(20) == 0.2
    assert choose_bin(500) == 1.0
    assert choose_bin(3 * 3600) == 4.0


def test_empty_history() -> None:
    tl = build(history_from_records([]))
    assert tl.x == [] and tl.faults == []


def test_check_reports_faults_from_the_load_start_with_their_recovery() -> None:
    h = history_from_records(steady_run(100, 30, gap=(8, 12), faults=[("f1", "kill", 8, 10)]))
    r = perf.check(h)
    assert r["valid"] is True and r["measurement"] is True
    (f,) = r["faults"]
    assert (f["fault"], f["kind"], f["targets"], f["outcome"]) == ("f1", "kill", ["pipeline-0"], "ok")
    assert (f["applied_s"], f["healed_s"]) == (8.001, 10.001)  # the load starts at 0
    assert f["before_rate"] == pytest.approx(100, rel=0.05) and f["recovery_s"] is not None
    assert r["rates"]["sent"] == pytest.approx(100, rel=0.01)
    assert r["latency_ms"]["n"] == 3000 and r["sends"] == {"ok": 3000, "fail": 0, "info": 0, "sent": 3000,
                                                            "applied": 3000}


def test_an_empty_history_has_no_perf_verdict_and_does_not_turn_a_composed_verdict_invalid() -> None:
    r = perf.check(history_from_records([]))
    assert r["valid"] == "unknown" and r["faults"] == [] and r["latency_ms"]["n"] == 0
    h = history_from_records(steady_run(20, 5))
    assert compose({"perf": perf.check})(h)["valid"] is True


def test_latency_is_measured_once_and_matches_what_the_report_showed(tmp_path: Path) -> None:
    """The synthetic run the report tests use: perf's windows are the history's nemesis
    records and its latency is the one exactly-once's stats carry; the figures are those the
    report computed before the analysis moved here (pinned, at the report's 0.1 ms)."""
    write_run(tmp_path, rate=150, duration_s=12.0)
    h = read_history(str(tmp_path / "history.jsonl"))
    r = perf.check(h)
    assert r["latency_ms"] == exactly_once.check(h)["stats"]["latency_ms"]
    assert {k: round(r["latency_ms"][k], 1) for k in ("p50", "p90", "p99", "max")} == {
        "p50": 209.1, "p90": 650.5, "p99": 1905.1, "max": 2217.2}
    assert [(f["fault"], f["kind"], f["applied_s"], f["healed_s"]) for f in r["faults"]] == [
        ("f1", "kill", 3.003, 4.205), ("f2", "partition", 6.003, 7.445), ("f3", "latency", 9.003, 10.205)]
    assert [f["before_rate"] for f in r["faults"]] == [148.7, 150.0, 150.0]
