"""What a second new user hit: a text file checked as a Jepsen log found valid; an empty or
binary file taken for a history; the exit code of `onceproof check x | head -1`; booleans
where a verdict word belongs; notes said twice; EDN shown as Python."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onceproof.cli import main

DATA = Path(__file__).parent / "data" / "newuser2"


def test_a_text_file_checked_as_a_jepsen_log_is_no_history(tmp_path: Path, capsys: Any) -> None:
    text = tmp_path / "text.txt"
    text.write_text("hello world\n")
    assert main(["check", "--format", "jepsen-log", str(text)]) == 2
    err = capsys.readouterr().err
    assert "text.txt:1: not a Jepsen log: no operation line found" in err and "hello world" in err


def test_an_edn_file_checked_as_a_jepsen_log_is_no_history(capsys: Any) -> None:
    assert main(["check", "--format", "jepsen-log", str(DATA / "q-ok.edn")]) == 2
    assert "not a Jepsen log: no operation line found" in capsys.readouterr().err


def test_a_history_with_no_operation_is_never_valid(tmp_path: Path, capsys: Any) -> None:
    edn = tmp_path / "none.edn"
    edn.write_text("[]\n")
    assert main(["check", "--model", "register", str(edn)]) == 2
    assert "no operation in the history" in capsys.readouterr().err


def test_an_empty_file_is_not_a_history(tmp_path: Path, capsys: Any) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert main(["check", str(empty)]) == 2
    assert "empty.jsonl: empty file: not a history" in capsys.readouterr().err


def test_binary_bytes_are_not_a_history(tmp_path: Path, capsys: Any) -> None:
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\x00\x01\x02binary")
    assert main(["check", str(binary)]) == 2
    err = capsys.readouterr().err
    assert "binary.jsonl:1: not a history (binary data at line 1)" in err and "incomplete" not in err


def test_a_jsonl_history_cut_mid_line_is_still_the_incomplete_last_line(tmp_path: Path, capsys: Any) -> None:
    cut = tmp_path / "cut.jsonl"
    cut.write_text('{"index":0,"time":1,"process":"harness","type":"info","f":"start","value":{"run_id":"x"}}\n'
                   '{"index":1,"time":2,"process":"harn')
    assert main(["check", str(cut)]) == 3
    assert "cut.jsonl:2: the last line is incomplete" in capsys.readouterr().out.replace("\n", " ").replace("  ", " ")


@pytest.mark.parametrize("copies", [1, 40])
def test_the_exit_code_is_the_verdicts_when_the_reader_leaves(copies: int) -> None:
    """`onceproof check x | head -1`: the pipe closes before (or while) the verdict is written."""
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "check", *[str(DATA / "q-ok.edn")] * copies],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader left before reading anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert "Exception ignored" not in err and "Traceback" not in err
