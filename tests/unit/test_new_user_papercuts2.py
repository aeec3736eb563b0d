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


def test_verdicts_are_words_not_booleans() -> None:
    from types import SimpleNamespace

    from onceproof.errors import verdict_word
    from onceproof.pytest_plugin import PlanRun

    assert [verdict_word(v) for v in (True, False, "unknown", None)] == ["VALID", "INVALID", "UNKNOWN", "UNKNOWN"]
    run = PlanRun(SimpleNamespace(valid=True, exit_code=0, out_dir=Path("/r"), results={"checkers": {}}))
    assert run.summary().startswith("verdict=VALID ")
    unknown = PlanRun(SimpleNamespace(valid="unknown", exit_code=3, out_dir=Path("/r"), results={
        "checkers": {"exactly-once": {"anomalies": {}, "reason": "stalled: consumer group g had lag 10"}},
        "errors": [], "notes": ["pipeline-0 exited with code 1 at start-up"]}))
    said = unknown.summary()  # an UNKNOWN run says why (it said "anomalies={} errors=[]": found by a new user)
    assert said.startswith("verdict=UNKNOWN ") and "reason=stalled: consumer group g had lag 10" in said
    assert "pipeline-0 exited with code 1" in said and "errors=" not in said
    src = (Path(__file__).parents[2] / "harness" / "commands" / "run_many.py").read_text()
    assert "{r.valid}" not in src and "{s['valid']}" not in src  # `run --runs` lines print the word


def test_why_a_cut_run_has_no_verdict_is_said_once() -> None:
    from onceproof.checkers.partitioned import check_path
    from onceproof.commands.run import why_unknown

    lines = why_unknown("exactly-once", check_path(str(DATA / "cut-run.jsonl")))
    assert sum("vacuous" in line for line in lines) == 1, lines
    assert sum("no final read" in line or "no final-read" in line for line in lines) == 1, lines


def test_edn_errors_show_edn(tmp_path: Path, capsys: Any) -> None:
    from onceproof.checkers import edn
    from onceproof.commands.check import _op_text

    txn = tmp_path / "append.edn"
    txn.write_text('{:type :invoke, :f :txn, :value [[:append :x 1]], :process 0}\n'
                   '{:type :ok, :f :txn, :value [[:append :x 1]], :process 0}\n')
    assert main(["check", str(txn)]) == 2
    assert "got [:append :x 1]" in capsys.readouterr().err
    assert _op_text(("enqueue", 1)) + " -> " + edn.text(None) == "[:enqueue 1] -> nil"
    assert edn.text({":a": [True, "s", frozenset({2})]}) == '{:a [true "s" #{2}]}'


def test_check_model_help_lists_every_model(capsys: Any) -> None:
    from onceproof.checkers import models

    with pytest.raises(SystemExit):
        main(["check", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert all(name in help_text for name in models.MODELS), help_text


def test_a_bad_plan_in_the_pytest_fixture_is_a_short_failure(tmp_path: Path) -> None:
    (tmp_path / "test_bad_plan.py").write_text(
        "def test_it(onceproof):\n    onceproof({'name': 'x', 'no_such_key': 1})\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(tmp_path / "test_bad_plan.py")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "invalid plan" in done.stdout and "harness/plan.py" not in done.stdout, done.stdout


_PLAN = """name: p
seed: 11
runtime: local
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline:
  command: [%s, x.py]
workload:
  source: kafka:in
  sink: {postgres: {table: payments, id: payment_id}}
  duration: 8s
"""


@pytest.mark.parametrize("program,said", [("/nonexistent/python", "'/nonexistent/python' not found"),
                                          ("no-such-program-xyz", "'no-such-program-xyz' not found on PATH"),
                                          ("./x.py", "'./x.py' is not an executable file")])
def test_a_pipeline_command_not_found_is_a_bad_plan(tmp_path: Path, capsys: Any, program: str, said: str) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(_PLAN % program)
    (tmp_path / "x.py").write_text("")
    assert main(["run", str(plan)]) == 2
    assert f"plan.yaml: pipeline.command: {said}" in capsys.readouterr().err


def test_a_pipeline_command_that_is_there_passes(tmp_path: Path) -> None:
    from onceproof.plan import load_plan
    from onceproof.stages import missing_program

    plan = tmp_path / "plan.yaml"
    plan.write_text(_PLAN % "python")
    assert missing_program(load_plan(plan, {})) is None


class _Reader:
    note = ""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def read(self) -> Any:
        raise self.error

    def close(self) -> None:
        pass


class _Records:
    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def record(self, *rec: Any) -> None:
        self.records.append(rec)


def _drain(error: Exception, max_s: float) -> tuple[Any, float]:
    import time
    from types import SimpleNamespace

    from onceproof.progress import ProgressWatch

    watch = ProgressWatch(_Reader(error), "kafka:in", _Records(), interval_s=0.05)  # type: ignore[arg-type]
    observer = SimpleNamespace(last_change=0.0)
    sink = SimpleNamespace(name="s", unstable=lambda: None)
    watch.start()
    try:
        started = time.monotonic()
        quiet = watch.wait_caught_up(observer, sink, idle_s=0.2, max_s=max_s)  # type: ignore[arg-type]
        return quiet, time.monotonic() - started
    finally:
        watch.close()


def test_a_progress_query_the_server_refuses_ends_the_drain_on_a_quiet_sink_and_says_why() -> None:
    import psycopg

    quiet, waited = _drain(psycopg.errors.SyntaxError('syntax error at or near "SELEC"'), max_s=30)
    assert waited < 10 and quiet.caught_up is None
    note = " ".join(quiet.notes)
    assert 'pipeline.progress: syntax error at or near "SELEC"' in note and "quiet sink alone" in note, note
    assert "had not caught up" not in note


def test_a_progress_read_that_fails_for_another_reason_is_still_waited_for() -> None:
    quiet, _ = _drain(OSError("connection refused"), max_s=0.6)
    assert quiet.caught_up is False and "had not caught up" in " ".join(quiet.notes)


def test_the_drain_stops_when_every_replica_has_exited_and_says_so() -> None:
    import time
    from types import SimpleNamespace

    from onceproof.progress import ProgressWatch

    watch = ProgressWatch(_Reader(OSError("no such table yet")), "kafka:in", _Records(), interval_s=0.05)  # type: ignore[arg-type]
    watch.start()
    try:
        started = time.monotonic()
        quiet = watch.wait_caught_up(SimpleNamespace(last_change=0.0), SimpleNamespace(name="s", unstable=lambda: None),  # type: ignore[arg-type]
                                     idle_s=0.2, max_s=30, all_exited=lambda: time.monotonic() - started > 0.3)
    finally:
        watch.close()
    assert time.monotonic() - started < 10
    note = " ".join(quiet.notes)
    assert "every replica of the pipeline had exited" in note and "had not caught up" not in note, note


def test_a_run_whose_progress_reads_all_failed_is_not_called_an_old_history() -> None:
    from onceproof.checkers.partitioned import check_path

    notes = " ".join(check_path(str(DATA / "progress-unread.jsonl"))["notes"])
    assert "could not be read (every progress read failed" in notes and "from before onceproof" not in notes, notes


def test_the_run_table_prints_verdict_words() -> None:
    from rich.console import Console

    from onceproof.commands.run import verdict_table

    console = Console(record=True, width=120)
    console.print(verdict_table({"name": "p", "valid": "unknown", "checkers": {
        "exactly-once": {"valid": "unknown", "anomalies": {}},
        "perf": {"valid": True, "measurement": True, "latency_ms": {}}}}))
    text = console.export_text()
    assert "UNKNOWN" in text and "VALID" in text and "True" not in text and "unknown " not in text, text


def test_a_pipeline_command_not_found_in_the_pytest_fixture_is_a_short_failure(tmp_path: Path) -> None:
    (tmp_path / "plan.yaml").write_text(_PLAN % "/nonexistent/python")
    (tmp_path / "test_bad_command.py").write_text(
        f"def test_it(onceproof):\n    onceproof({str(tmp_path / 'plan.yaml')!r})\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           str(tmp_path / "test_bad_command.py")], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "pipeline.command: '/nonexistent/python' not found" in done.stdout, done.stdout


def test_a_sink_that_cannot_be_read_as_mapped_is_fatal_at_the_first_observe() -> None:
    """The runner ends the load on it (harness/runner.py _stop_load): a run whose every event
    would be lost is refused at once, not after its whole load and drain."""
    from onceproof.observer import Observer
    from onceproof.pgdecode import MappingError

    class Sink:
        name = "s"

        def read(self) -> Any:
            raise MappingError("workload.sink.postgres.id: the table has no column 'event_id' (its columns: a, b)")

    called: list[Exception] = []
    observer = Observer(Sink(), _Records(), interval_s=0.1)  # type: ignore[arg-type]
    observer.on_fatal = called.append
    observer.observe_once()
    observer.observe_once()
    assert [str(e) for e in called] == ["workload.sink.postgres.id: the table has no column 'event_id' (its columns: a, b)"]
    assert observer.fatal is called[0]
