"""The lost-vs-late rule on small hand-made histories: an acknowledged event missing from the
final read is `lost` only when the pipeline's committed position is past it (or the pipeline
caught up); otherwise `unseen`, and the verdict is unknown with the reason."""
from __future__ import annotations

from typing import Any

import orjson

from onceproof.checkers import exactly_once
from onceproof.checkers.history import history_from_bytes

S = 1_000_000_000


def _history(n: int, applied: set[int], progress: list[tuple[float, list[list[Any]]]] | None,
             *, blocked: dict[str, Any] | None = None, faults: list[tuple[float, str, str]] = (),
             group: str = "g") -> bytes:
    """n events e0.. sent and acknowledged into partition 0 at offsets 0..n-1 during the first
    second; `applied` reach the sink; `progress` = [(time s, [[p, committed, end]])] of group g."""
    recs: list[dict[str, Any]] = [
        {"time": 0, "process": "harness", "type": "info", "f": "start",
         "value": {"run_id": "t", "plan": "t", "seed": 1, "rate": n, "duration_s": 1, "order": None}},
        {"time": 1, "process": "harness", "type": "info", "f": "load-start", "value": None}]
    for i in range(n):
        t = 10 + i * (S // (2 * n))
        v = {"id": f"e{i}", "key": f"k{i % 3}", "seq": i // 3}
        recs.append({"time": t, "process": "load", "type": "invoke", "f": "send", "value": v})
        recs.append({"time": t + 1, "process": "load", "type": "info", "f": "landed",
                     "value": {"partition": 0, "events": [[f"e{i}", i]]}})
        recs.append({"time": t + 2, "process": "load", "type": "ok", "f": "send", "value": v})
    for when, fault, target in faults:
        recs.append({"time": int(when * S), "process": "nemesis", "type": "ok", "f": "apply",
                     "value": {"fault": fault, "kind": "kill", "targets": [target]}})
    effects = [[f"e{i}", f"k{i % 3}", i // 3, 0] for i in sorted(applied)]
    recs.append({"time": int(1.5 * S), "process": "observer", "type": "ok", "f": "observe",
                 "value": {"full": False, "events": effects}})
    for k, (when, parts) in enumerate(progress or []):
        lag = sum(max(0, e - max(c, 0)) for _, c, e in parts)
        value: dict[str, Any] = {"source": "kafka:src", "groups": [{"group": group, "partitions": parts, "lag": lag}]}
        if k == len(progress or []) - 1:
            value["final"] = True
        recs.append({"time": int(when * S), "process": "observer", "type": "ok", "f": "progress", "value": value})
    if blocked is not None:
        recs.append({"time": 99 * S, "process": "observer", "type": "info", "f": "sink-blocked", "value": blocked})
    recs.append({"time": 100 * S, "process": "observer", "type": "ok", "f": "final-read",
                 "value": {"full": True, "events": effects}})
    recs.sort(key=lambda r: r["time"])
    return b"".join(orjson.dumps({"index": i, **r}) + b"\n" for i, r in enumerate(recs))


def _check(data: bytes) -> dict[str, Any]:
    return exactly_once.check(history_from_bytes(data))


def test_missing_event_before_the_committed_offset_is_lost_proven_by_position() -> None:
    # the group committed offset 8: events 0..7 are claimed processed; e3 is not in the sink
    r = _check(_history(10, set(range(10)) - {3}, [(2.0, [[0, 8, 10]])]))
    assert r["valid"] is False
    assert r["anomalies"]["lost"] == 1 and r["unseen"] == 0
    ex = r["examples"]["lost"][0]
    assert ex["id"] == "e3"
    assert "before the final committed position (g committed 8)" in ex["why"]
    assert any(rec["f"] == "progress" for rec in ex["records"])


def test_missing_event_past_the_committed_offset_is_unseen_and_the_verdict_unknown() -> None:
    # committed 8 of 10: e8 and e9 missing, the pipeline never got to them
    r = _check(_history(10, set(range(8)), [(2.0, [[0, 5, 10]]), (30.0, [[0, 8, 10]]), (40.0, [[0, 8, 10]])]))
    assert r["anomalies"]["lost"] == 0
    assert r["unseen"] == 2
    assert r["valid"] == "unknown"
    assert r["reason"].startswith("stalled: consumer group g had lag 2 on 1 partition and made no progress after t=")
    assert r["stall"]["state"] == "stalled" and r["stall"]["lag"] == 2
    assert {(e["id"], e["partition"], e["position"]) for e in r["unseen_examples"]} == {("e8", 0, 8), ("e9", 0, 9)}
    assert r["notes"][0].startswith("2 acknowledged events unseen (not lost, not proven applied): stalled")


def test_stall_reason_names_the_fault_it_stalled_after() -> None:
    r = _check(_history(10, set(range(4)), [(2.0, [[0, 2, 10]]), (4.0, [[0, 4, 10]]), (60.0, [[0, 4, 10]])],
                        faults=[(1.0, "f1", "pipeline-0"), (3.5, "f2", "pipeline-1"), (50.0, "f3", "kafka-1")]))
    assert r["valid"] == "unknown"
    assert r["stall"]["after_fault"] == "f2 kill pipeline-1"
    assert r["reason"].endswith("made no progress after t=4.0 s (after f2 kill pipeline-1)")
    assert r["stall"]["stalled_s"] == 56.0


def test_caught_up_pipeline_with_an_event_still_missing_is_lost() -> None:
    # lag 0 everywhere: a landed position is not even needed to prove it
    data = _history(10, set(range(10)) - {9}, [(2.0, [[0, 10, 10]])])
    data = data.replace(b'"events":[["e9",9]]', b'"events":[]')  # e9's position unknown
    r = _check(data)
    assert r["valid"] is False and r["anomalies"]["lost"] == 1
    assert "caught up" in r["examples"]["lost"][0]["why"]


def test_complete_sink_with_progress_is_valid() -> None:
    r = _check(_history(10, set(range(10)), [(2.0, [[0, 10, 10]])]))
    assert r["valid"] is True and r["unseen"] == 0
    assert r["stall"] is None  # caught up: nothing stalled, so no stall figure (a filled one read as a stall)


def test_blocked_sink_makes_missing_events_unseen_never_lost() -> None:
    blocked = {"sink": "kafka:out", "partitions": [{"partition": 1, "last_stable": 120, "end": 180}],
               "transactions": [{"partition": 1, "producer_id": 7, "producer_epoch": 0, "start_offset": 120,
                                 "age_s": 61.0}]}
    r = _check(_history(10, set(range(5)), [(2.0, [[0, 10, 10]])], blocked=blocked))
    assert r["anomalies"]["lost"] == 0 and r["unseen"] == 5 and r["valid"] == "unknown"
    assert r["reason"].startswith("sink blocked: out[1] last stable offset 120 < end 180: open transaction "
                                  "of producer 7")


def test_unobservable_progress_is_unknown_not_lost() -> None:
    data = _history(4, {0, 1}, None).replace(
        b'{"index"', b'{"index"', 1)
    lines = data.splitlines()
    note = {"index": 0, "time": 98 * S, "process": "observer", "type": "ok", "f": "progress",
            "value": {"source": "kafka:src", "groups": [], "final": True, "note": "no consumer group"}}
    lines.insert(len(lines) - 1, orjson.dumps(note))
    data = b"".join(orjson.dumps({**orjson.loads(x), "index": i}) + b"\n" for i, x in enumerate(lines))
    r = _check(data)
    assert r["anomalies"]["lost"] == 0 and r["unseen"] == 2 and r["valid"] == "unknown"
    assert r["reason"].startswith("progress unknown: no consumer group")


def test_history_without_progress_records_keeps_the_old_rule_with_a_note() -> None:
    r = _check(_history(6, {0, 1, 2}, None))
    assert r["valid"] is False and r["anomalies"]["lost"] == 3
    assert any("no progress records" in n for n in r["notes"])


def test_redis_entry_ids_compare_as_positions() -> None:
    from onceproof.checkers.progress import position_key

    assert position_key("1718000000000-3") < position_key("1718000000000-10") < position_key("1718000000001-0")
    assert position_key(7) == 7


def test_a_pipeline_still_moving_at_the_end_is_behind_not_stalled() -> None:
    r = _check(_history(10, set(range(8)), [(2.0, [[0, 5, 10]]), (30.0, [[0, 8, 10]])]))
    assert r["valid"] == "unknown" and r["anomalies"]["lost"] == 0
    assert r["reason"].startswith("behind: consumer group g still had lag 2")


def test_onceproof_check_applies_the_rule_to_a_history_file(tmp_path: Any, capsys: Any) -> None:
    from onceproof.cli import main

    path = tmp_path / "history.jsonl"
    path.write_bytes(_history(10, set(range(8)), [(2.0, [[0, 5, 10]]), (30.0, [[0, 8, 10]]), (40.0, [[0, 8, 10]])]))
    assert main(["check", "--json", str(path)]) == 3
    out = orjson.loads(capsys.readouterr().out.splitlines()[0])
    eo = out["checkers"]["exactly-once"]
    assert out["valid"] == "unknown" and eo["unseen"] == 2 and eo["anomalies"]["lost"] == 0
    assert eo["reason"].startswith("stalled: consumer group g")


def test_the_unseen_note_comes_first_whatever_else_is_noted() -> None:
    data = _history(10, set(range(8)), [(2.0, [[0, 5, 10]]), (30.0, [[0, 8, 10]]), (40.0, [[0, 8, 10]])])
    last = data.splitlines()[-1]  # the final read, read twice: a note comes before the unseen one
    again = orjson.loads(last)
    data += orjson.dumps({**again, "index": again["index"] + 1, "time": again["time"] + 1}) + b"\n"
    r = _check(data)
    assert r["unseen"] == 2 and "2 final reads; the last one is the sink's content" in r["notes"]
    assert r["notes"][0].startswith("2 acknowledged events unseen"), r["notes"]


def test_a_stall_seen_through_the_plans_progress_query_is_not_called_a_consumer_group() -> None:
    """Progress from `pipeline.progress` (SQL or a Redis hash) comes under that name, which is
    no consumer group: the reason names it as it is (a user read "consumer group
    pipeline.progress" and looked for a group of that name)."""
    r = _check(_history(10, set(range(8)), [(2.0, [[0, 5, 10]]), (30.0, [[0, 8, 10]]), (40.0, [[0, 8, 10]])],
                        group="pipeline.progress"))
    assert r["reason"].startswith("stalled: pipeline.progress had lag 2 on 1 partition and made no progress")
