"""Bad histories get exit 2 with file:line and the field, from both readers alike; text from a
history reaches the terminal as plain text; nothing in a history makes the checker quadratic."""
from __future__ import annotations

import copy
import os
import time
from pathlib import Path
from typing import Any

import json
import pytest

from onceproof.checkers import exactly_once
from onceproof.checkers.history import HistoryError, read_history
from onceproof.checkers.history.native import scan_lib
from onceproof.cli import main

BASE: list[dict[str, Any]] = [
    {"index": 0, "time": 0, "process": "harness", "type": "info", "f": "start", "value": {"run_id": "t"}},
    {"index": 1, "time": 1, "process": "load", "type": "invoke", "f": "send",
     "value": {"id": "e1", "key": "k", "seq": 0}},
    {"index": 2, "time": 2, "process": "load", "type": "ok", "f": "send", "value": {"id": "e1", "key": "k", "seq": 0}},
    {"index": 3, "time": 4, "process": "observer", "type": "ok", "f": "final-read",
     "value": {"full": True, "events": [["e1", "k", 0, 0]]}},
]
READERS = [False] + ([True] if scan_lib(None) is not None else [])


def write(path: Path, records: list[Any]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def changed(i: int, **fields: Any) -> list[dict[str, Any]]:
    recs = copy.deepcopy(BASE)
    recs[i].update(fields)
    return recs


BAD = {
    "type-is-a-list": (changed(1, type=["invoke"]), 2, "type must be"),
    "seq-2^64-1": (changed(1, value={"id": "e1", "key": "k", "seq": 2**64 - 1}), 2, "seq"),
    "seq-is-text": (changed(1, value={"id": "e1", "key": "k", "seq": "x"}), 2, "seq"),
    "send-without-id": (changed(1, value={"key": "k", "seq": 0}), 2, '"id"'),
    "index-is-text": (changed(2, index="a"), 3, "index must be an integer"),
    "state-is-a-number": (BASE + [{"index": 4, "time": 5, "process": "observer", "type": "ok", "f": "state",
                                   "value": 5}], 5, '"state"'),
    "state-count-is-a-number": (BASE + [{"index": 4, "time": 5, "process": "observer", "type": "ok",
                                         "f": "state", "value": {"k": 5}}], 5, '"state"'),
    "effect-is-a-string": (changed(3, value={"full": True, "events": ["e1"]}), 4, "[id, key, seq, replica]"),
    "effect-too-short": (changed(3, value={"full": True, "events": [["e1"]]}), 4, "[id, key, seq, replica]"),
    "effect-seq-huge": (changed(3, value={"full": True, "events": [["e1", "k", 2**64, 0]]}), 4, "seq"),
    "full-is-text": (changed(3, value={"full": "no", "events": [["e1", "k", 0, 0]]}), 4, '"full"'),
}


@pytest.mark.parametrize("native", READERS)
@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_field_is_refused_with_its_line_by_both_readers(kind: str, native: bool, tmp_path: Path) -> None:
    recs, line, words = BAD[kind]
    path = write(tmp_path / "h.jsonl", recs)
    with pytest.raises(HistoryError) as e:
        read_history(path, native=native)
    assert e.value.line == line and words in e.value.reason


@pytest.mark.parametrize("kind", sorted(BAD))
def test_cli_exits_2_on_a_bad_field_without_traceback(kind: str, tmp_path: Path, capsys: Any) -> None:
    recs, line, _ = BAD[kind]
    path = write(tmp_path / "h.jsonl", recs)
    assert main(["check", path]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and "Traceback" not in err


@pytest.mark.parametrize("drop_index", [True, False])
def test_duplicate_and_lost_without_index_are_reported_not_crashed(drop_index: bool, tmp_path: Path) -> None:
    recs = copy.deepcopy(BASE)
    for r in recs:
        r.pop("index") if drop_index else None
    dup = copy.deepcopy(recs)
    dup[3]["value"]["events"] *= 2
    lost = copy.deepcopy(recs)
    lost[3]["value"]["events"] = [["x", "k", 1, 0]]
    for recs_, kind in ((dup, "duplicate"), (lost, "lost")):
        r = exactly_once.check(read_history(write(tmp_path / f"{kind}.jsonl", recs_)))
        assert r["valid"] is False and r["anomalies"][kind] == 1
        assert r["examples"][kind][0]["records"]


@pytest.mark.parametrize("event_id", ["[/]", "\x1b[2J\x1b[31mE", "[link=https://x.example]e1[/link]", "[bold]b"])
def test_ids_reach_the_terminal_as_plain_escaped_text(event_id: str, tmp_path: Path, capsys: Any) -> None:
    recs = copy.deepcopy(BASE)
    for r in recs[1:3]:
        r["value"]["id"] = event_id
    recs[3]["value"]["events"] = [[event_id, "k", 0, 0]] * 2
    assert main(["check", write(tmp_path / "h.jsonl", recs)]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x1b]8;" not in out
    shown = event_id.replace("\x1b", "\\x1b")
    assert shown in out


def test_a_proc_file_is_read_not_called_vacuous(capsys: Any) -> None:
    assert os.stat("/proc/self/status").st_size == 0
    assert main(["check", "/proc/self/status"]) == 2
    assert "/proc/self/status:1: not valid JSON" in capsys.readouterr().err


def test_a_fifo_is_refused_without_blocking(tmp_path: Path, capsys: Any) -> None:
    fifo = tmp_path / "h.jsonl"
    os.mkfifo(fifo)
    assert main(["check", str(fifo)]) == 2
    assert "not a regular file" in capsys.readouterr().err


def _phantoms(n: int) -> list[dict[str, Any]]:
    effects = [["e1", "k", 0, 0]] + [[f"x{i}", f"k{i}", i, 0] for i in range(n)]
    return changed(3, value={"full": True, "events": effects})


def test_effects_of_events_never_sent_are_checked_in_linear_work(tmp_path: Path) -> None:
    # counted in checker work, not wall time: CPU time per phantom must not grow with their number
    costs = []
    for n in (5_000, 40_000):
        h = read_history(write(tmp_path / f"p{n}.jsonl", _phantoms(n)), native=False)
        t0 = time.process_time()
        for _ in range(2):
            h = read_history(h.path, native=False)
        r = exactly_once.check(h, examples=1)
        costs.append((time.process_time() - t0) / n)
        assert r["anomalies"]["phantom"] == n
    assert costs[1] < 4 * costs[0] + 1e-4  # quadratic would be 8x per phantom
