"""The pure parts of `workload.processes` (harness/loadprocs.py): the k-way merge of history
shards and the disjoint shares of the event factory. The processes themselves against real
Kafka: tests/integration/test_load_processes.py."""
from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from onceproof.checkers.history import read_history
from onceproof.loadprocs import merge_histories, merge_shards
from onceproof.recorder import HistoryWriter
from onceproof.workload import EventFactory


def _write(path: Path, records: list[tuple[int, str, str, object]]) -> None:
    with open(path, "wb") as f:
        for i, (t, process, f_, value) in enumerate(records):
            f.write(orjson.dumps({"index": i, "time": t, "process": process, "type": "info", "f": f_,
                                  "value": value}) + b"\n")


def test_merge_orders_by_time_renumbers_and_keeps_each_file_order(tmp_path: Path) -> None:
    _write(tmp_path / "main.jsonl", [(0, "harness", "start", None), (50, "observer", "observe", 1),
                                     (50, "observer", "observe", 2), (400, "harness", "end", None)])
    _write(tmp_path / "a.jsonl", [(10, "load", "x", "a0"), (50, "load", "x", "a1"), (60, "load", "x", "a2")])
    _write(tmp_path / "b.jsonl", [(5, "load", "x", "b0"), (70, "load", "x", "b1")])
    n = merge_histories([tmp_path / "main.jsonl", tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "out")
    rows = [json.loads(line) for line in (tmp_path / "out").read_bytes().splitlines()]
    assert n == len(rows) == 9
    assert [r["index"] for r in rows] == list(range(9))
    assert [r["time"] for r in rows] == sorted(r["time"] for r in rows)
    # ties at t=50: the main history's two first, in their order, then shard a's
    assert [r["value"] for r in rows] == [None, "b0", "a0", 1, 2, "a1", "a2", "b1", None]


def test_merge_drops_a_truncated_last_line_and_rejects_foreign_lines(tmp_path: Path) -> None:
    _write(tmp_path / "a.jsonl", [(1, "load", "x", 1)])
    with open(tmp_path / "a.jsonl", "ab") as f:
        f.write(b'{"index":1,"time":2,"proc')  # killed mid-write
    assert merge_histories([tmp_path / "a.jsonl"], tmp_path / "out") == 1
    (tmp_path / "b.jsonl").write_bytes(b'{"time":1,"index":0}\n')
    with pytest.raises(ValueError, match="not a history line"):
        merge_histories([tmp_path / "b.jsonl"], tmp_path / "out2")


def test_merge_shards_gives_one_history_the_reader_accepts(tmp_path: Path) -> None:
    run = tmp_path / "run"
    main = HistoryWriter(run / "history.jsonl")
    shards = [HistoryWriter(run / "logs" / "shards" / f"load-{i}.jsonl") for i in range(2)]
    for s in shards:
        s.t0 = main.t0  # the run's clock, as the load processes do
    main.record("harness", "info", "start", {"run_id": "r"})
    factories = [EventFactory(7, 10, 4, (i, 2)) for i in range(2)]
    for _ in range(20):
        for s, fac in zip(shards, factories):
            batch = [e[:3] for e in fac.make(3)]
            s.record_sends("load", "invoke", batch)
            s.record_sends("load", "ok", batch)
        main.record("observer", "info", "tick", None)
    main.record("harness", "info", "end", {"errors": []})
    for w in (main, *shards):
        w.close()
    assert merge_shards(run)
    assert not (run / "logs" / "shards").exists()
    lines = (run / "history.jsonl").read_bytes().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) == 2 + 20 + 2 * 20 * 2 * 3
    assert [r["index"] for r in rows] == list(range(len(rows)))
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    assert rows[0]["f"] == "start"
    invokes = [r["value"]["id"] for r in rows if r["f"] == "send" and r["type"] == "invoke"]
    assert len(invokes) == len(set(invokes)) == 120
    h = read_history(str(run / "history.jsonl"))
    assert h is not None
    assert not merge_shards(run)  # nothing left to merge


def test_shares_are_disjoint_and_each_key_has_one_producer() -> None:
    shares = [EventFactory(3, 10, 4, (i, 3)) for i in range(3)]
    events = [e for f in shares for e in f.make(500)]
    assert len({e[0] for e in events}) == 1500
    owner: dict[str, int] = {}
    for i, f in enumerate(shares):
        for k in f.keys:
            assert owner.setdefault(k, i) == i
    assert sorted(owner, key=lambda k: int(k[1:])) == [f"k{j}" for j in range(10)]
    per_key: dict[str, list[int]] = {}
    for e in events:
        per_key.setdefault(e[1], []).append(e[2])
    assert all(seqs == list(range(len(seqs))) for seqs in per_key.values())


def test_one_process_is_the_single_generator_of_before() -> None:
    one = EventFactory(5, 20, 8, (0, 1)).make(100)
    default = EventFactory(5, 20, 8).make(100)
    assert one == default
    assert [e[0] for e in one] == [f"e{i}" for i in range(100)]


@pytest.mark.parametrize("processes,words", [
    (3, "at most as many processes as keys"), (0, "greater than or equal to 1"), (65, "less than or equal to 64")])
def test_a_plan_with_more_processes_than_keys_or_out_of_range_is_refused(tmp_path: Path, processes: int,
                                                                        words: str) -> None:
    from onceproof.plan import PlanError, load_plan

    plan = tmp_path / "p.yaml"
    plan.write_text("name: p\ntargets: {kafka: {nodes: 1}, postgres: {}}\n"
                    "pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]}\n"
                    f"workload: {{rate: 100, keys: 2, duration: 1s, processes: {processes}}}\n")
    with pytest.raises(PlanError) as e:
        load_plan(plan)
    assert "processes" in str(e.value) and words in str(e.value), str(e.value)
    plan.write_text(plan.read_text().replace(f"processes: {processes}", "processes: 2"))
    assert load_plan(plan).workload.processes == 2
