"""`onceproof check --engine spark`: the Spark job's result is identical to the local check's
(verdict, counts, examples, stats) on the same histories. One SparkSession (one JVM) serves
every test of the session (the `spark` fixture, tests/integration/conftest.py, shared with
test_spark_s3.py): a JVM start costs tens of seconds on 2 cores."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from onceproof.checkers import exactly_once
from onceproof.checkers import spark as spark_engine
from onceproof.checkers.history import HistoryError, read_history
from tests.unit.checkers.conftest import same
from tests.unit.checkers.histories import RunModel, runs
from tests.unit.checkers.test_partitioned import _inject
from tests.unit.checkers.test_ranges import sink_first_history


@settings(max_examples=12, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(run=runs(max_events=30), data=st.data(), k=st.integers(1, 5), n=st.integers(1, 6),
       order=st.sampled_from([None, "per-key"]), shuffle=st.sampled_from(["spark", "files"]))
def test_spark_equals_local_on_generated_histories_with_every_anomaly(
        spark: Any, run: RunModel, data: Any, k: int, n: int, order: str | None, shuffle: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """`n` byte ranges of a few hundred bytes each: lines straddle their cuts, an event's records
    lie in several ranges; the routed rows go through Spark's shuffle or through files."""
    _inject(run, data)
    path = tmp_path_factory.mktemp("spark") / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in run.records()))
    local = exactly_once.check(read_history(path), order=order)
    remote = spark_engine.check_path(path, spark=spark, partitions=k, ranges=n, order=order, shuffle=shuffle,
                                     spill_dir=path.parent, defer_over=data.draw(st.sampled_from([-1, 0, 4096])))
    assert same(local, remote), (local, remote)


@pytest.mark.parametrize("n", [2, 7])
def test_an_event_first_seen_in_the_sink_in_an_earlier_range_than_its_send(spark: Any, tmp_path: Path,
                                                                           n: int) -> None:
    """Effects logged before their sends, under another key, in earlier ranges: each event's
    records meet in the partition of its first range; the result is the local one."""
    path = tmp_path / "h.jsonl"
    sink_first_history(path, "e-{}")
    for order in (None, "per-key"):
        local = exactly_once.check(read_history(path), order=order)
        remote = spark_engine.check_path(path, spark=spark, partitions=3, ranges=n, order=order,
                                         defer_over=-1 if order else 4096)  # keys read later (resolve) or at once
        assert same(local, remote), (local, remote)
        assert remote["anomalies"]["lost"] == 1 and remote["anomalies"]["duplicate"] == 1


def test_a_bad_line_in_a_later_range_is_named_by_its_line_in_the_file(spark: Any, tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    lines = [json.dumps({"index": i, "time": i, "process": "load", "type": "invoke", "f": "send",
                         "value": {"id": f"e-{i}", "key": "k", "seq": i}}) for i in range(30)]
    lines[20] = "not json"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError) as got:
        spark_engine.check_path(path, spark=spark, partitions=2, ranges=4)
    assert got.value.line == 21 and got.value.path == str(path)


def test_cli_engine_spark_prints_the_local_result(spark: Any, tmp_path: Path, capsys: Any) -> None:
    from onceproof.cli import main

    recs = [{"index": 0, "time": 1, "process": "load", "type": "invoke", "f": "send",
             "value": {"id": "e-1", "key": "k", "seq": 0}},
            {"index": 1, "time": 2, "process": "load", "type": "ok", "f": "send",
             "value": {"id": "e-1", "key": "k", "seq": 0}},
            {"index": 2, "time": 3, "process": "observer", "type": "ok", "f": "final-read",
             "value": {"full": True, "events": [["e-1", "k", 0, 0], ["e-1", "k", 0, 1]]}}]
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert main(["check", "--json", str(path)]) == 1
    local = json.loads(capsys.readouterr().out)
    assert main(["check", "--json", "--engine", "spark", str(path)]) == 1  # reuses the running session
    remote = json.loads(capsys.readouterr().out)
    assert remote == local and remote["checkers"]["exactly-once"]["anomalies"]["duplicate"] == 1


def test_cli_engine_spark_prints_nothing_of_sparks_start_up_on_stderr(tmp_path: Path) -> None:
    """A fresh `onceproof check --engine spark` (its own JVM) prints the result and nothing else:
    Spark's start-up warnings (a hostname on loopback, no native Hadoop, "Setting default log
    level") went to stderr (found by a new user)."""
    import subprocess
    import sys

    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (
        {"index": 0, "time": 1, "process": "load", "type": "invoke", "f": "send", "value": {"id": "e-1", "key": "k", "seq": 0}},
        {"index": 1, "time": 2, "process": "load", "type": "ok", "f": "send", "value": {"id": "e-1", "key": "k", "seq": 0}},
        {"index": 2, "time": 3, "process": "observer", "type": "ok", "f": "final-read",
         "value": {"full": True, "events": [["e-1", "k", 0, 0]]}})))
    proc = subprocess.run([sys.executable, "-m", "onceproof", "check", "--engine", "spark", "--json", str(path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["valid"] is True
    assert proc.stderr == "", proc.stderr[-2000:]
