from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from onceproof.checkers import compose, exactly_once
from onceproof.checkers.history import HistoryError, read_history
from onceproof.cli import main

RECORDS: list[dict[str, Any]] = [
    {"index": 0, "time": 0, "process": "harness", "type": "info", "f": "start",
     "value": {"run_id": "r", "plan": "p", "seed": 1, "rate": 1, "duration_s": 1, "order": "per-key"}},
    {"index": 1, "time": 10, "process": "load", "type": "invoke", "f": "send",
     "value": {"id": "e1", "key": "k", "seq": 0}},
    {"index": 2, "time": 20, "process": "load", "type": "ok", "f": "send",
     "value": {"id": "e1", "key": "k", "seq": 0, "partition": 0, "offset": 5}},
    {"index": 3, "time": 30, "process": "nemesis", "type": "invoke", "f": "apply",
     "value": {"fault": "f1", "kind": "kill", "targets": ["kafka-1"]}},
    {"index": 4, "time": 40, "process": "observer", "type": "ok", "f": "observe",
     "value": {"full": False, "events": [["e1", "k", 0, 0]]}},
    {"index": 5, "time": 50, "process": "observer", "type": "ok", "f": "final-read",
     "value": {"full": True, "events": [["e1", "k", 0, 0]]}},
]


def write(path: Path, records: list[dict[str, Any]], tail: bytes = b"") -> str:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records) + tail)
    return str(path)


def test_reader_loads_columns_and_gives_records_back(tmp_path: Path) -> None:
    h = read_history(write(tmp_path / "h.jsonl", RECORDS))
    assert len(h) == 6 and not h.truncated and h.warnings == []
    assert list(h) == RECORDS
    assert h.time.tolist() == [0, 10, 20, 30, 40, 50]
    assert h.event_ids == ["e1"] and h.start and h.start["order"] == "per-key"
    assert h.obs_final.tolist() == [False, True]


def test_truncated_last_line_is_ignored_and_reported(tmp_path: Path) -> None:
    path = write(tmp_path / "h.jsonl", RECORDS, tail=b'{"index": 6, "time": 60, "process": "lo')
    h = read_history(path)
    assert h.truncated and len(h) == 6
    assert "incomplete" in h.warnings[0] and ":7:" in h.warnings[0]
    assert h.record(5)["f"] == "final-read"
    r = exactly_once.check(h)
    assert r["valid"] is True and any("incomplete" in n for n in r["notes"])


def test_bad_line_in_the_middle_names_file_line_and_reason(tmp_path: Path) -> None:
    lines = [orjson.dumps(r) for r in RECORDS]
    lines[2] = b'{"index": 2, "time": "soon", "process": "load", "type": "ok", "f": "send", "value": {}}'
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(HistoryError) as e:
        read_history(str(path))
    assert e.value.line == 3 and "time must be an integer" in e.value.reason
    lines[2] = b"{not json"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(HistoryError) as e:
        read_history(str(path))
    assert e.value.line == 3 and "not valid JSON" in e.value.reason


def test_compose_is_invalid_if_any_else_unknown_if_any() -> None:
    def c(v: Any) -> Any:
        return lambda h: {"valid": v}

    assert compose({"a": c(True), "b": c(True)})(None)["valid"] is True
    assert compose({"a": c(True), "b": c("unknown")})(None)["valid"] == "unknown"
    assert compose({"a": c(False), "b": c("unknown")})(None)["valid"] is False


def test_cli_json_line_per_file_and_exit_codes(tmp_path: Path, capsys: Any) -> None:
    good = write(tmp_path / "good.jsonl", RECORDS)
    dup = [dict(r) for r in RECORDS]
    dup[5] = {**RECORDS[5], "value": {"full": True, "events": [["e1", "k", 0, 0], ["e1", "k", 0, 1]]}}
    bad = write(tmp_path / "dup.jsonl", dup)
    assert main(["check", "--json", good]) == 0
    out = json.loads(capsys.readouterr().out.strip())
    assert out["valid"] is True and out["checkers"]["exactly-once"]["anomalies"]["duplicate"] == 0
    assert out["stats"]["sends"] == {"ok": 1, "fail": 0, "info": 0}
    assert main(["check", "--json", good, bad]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(x)["valid"] for x in lines] == [True, False]
    vacuous = write(tmp_path / "v.jsonl", RECORDS[:2])
    assert main(["check", vacuous]) == 3
    assert "unknown" in capsys.readouterr().out


def test_cli_unreadable_input_exits_2_with_file_line_reason(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_bytes(orjson.dumps(RECORDS[0]) + b"\n" + b'{"time": 1}\n' + orjson.dumps(RECORDS[1]) + b"\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:" in err and "missing field" in err and "Traceback" not in err


def test_cli_checks_jepsen_logs_for_linearizability(tmp_path: Path, capsys: Any) -> None:
    log = tmp_path / "etcd.log"
    log.write_text("INFO  jepsen.util - 0\t:invoke\t:write\t3\n"
                   "INFO  jepsen.util - 0\t:ok\t:write\t3\n"
                   "INFO  jepsen.util - 1\t:invoke\t:read\tnil\n"
                   "INFO  jepsen.util - 1\t:ok\t:read\t4\n")
    assert main(["check", "--json", str(log)]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["checkers"]["linearizable"]["unplaced"] == [1]
    edn = tmp_path / "kv.txt"
    edn.write_text('{:process 0, :type :invoke, :f :put, :key "a", :value "x"}\n'
                   '{:process 0, :type :ok, :f :put, :key "a", :value "x"}\n'
                   '{:process 1, :type :invoke, :f :get, :key "a", :value nil}\n'
                   '{:process 1, :type :ok, :f :get, :key "a", :value "x"}\n')
    assert main(["check", "--format", "jepsen-edn", "--model", "kv", str(edn)]) == 0
