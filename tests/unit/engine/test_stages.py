"""The engine's scopes (harness/stages.py): what ends a run early becomes part of its result,
teardown runs innermost first and goes on past a failure, SIGTERM unwinds the scopes. No
servers: the observer reads a sink held in memory."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from onceproof import stages
from onceproof.plan import validate_plan

PLAN = {"name": "scopes", "targets": {"postgres": {}}, "pipeline": {"command": ["true"]},
        "workload": {"source": "postgres:events", "sink": "postgres:effects", "duration": "1s"}}


class OneHost:
    """A runtime whose every host is this process (LocalRuntime's `entered`, without its scratch)."""

    def entered(self, name: str) -> Any:
        return contextlib.nullcontext()


class MemorySink:
    def __init__(self) -> None:
        self.reads = 0

    def read(self) -> tuple[list[Any], bool]:
        self.reads += 1
        return [], False


def records(out: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in (out / "history.jsonl").read_bytes().splitlines()]


@pytest.fixture
def plan() -> Any:
    return validate_plan(PLAN)


def test_teardown_runs_innermost_first_and_goes_on_past_a_failing_step(plan: Any, tmp_path: Path) -> None:
    run = stages.new_run(plan, tmp_path / "out")
    order: list[str] = []
    with stages.recording(plan, run) as history, contextlib.ExitStack() as scope:
        with run.ending_early():
            scope.callback(order.append, "targets")
            host = scope.enter_context(stages.load_host(OneHost(), run))
            observer = scope.enter_context(stages.observing(MemorySink(), history, 0.01, run))

            @contextlib.contextmanager
            def failing_heal() -> Any:
                try:
                    yield
                finally:
                    with run.tearing_down("heal: "):
                        order.append("heal")
                        raise OSError("proxy gone")

            scope.enter_context(failing_heal())
            assert host.call(lambda: threading.current_thread().name).startswith("load")
            raise ValueError("the load broke")
    assert order == ["heal", "targets"]
    assert not observer._thread.is_alive()  # type: ignore[union-attr]
    # the cause first, then what went wrong tearing down; the history's `end` has both
    assert run.errors == ["ValueError: the load broke", "heal: proxy gone"]
    assert "ValueError: the load broke" in (run.out_dir / "logs" / "harness-error.log").read_text()
    end = records(run.out_dir)[-1]
    assert (end["f"], end["value"]) == ("end", {"errors": run.errors})
    assert not run.interrupted and not run.final_ok


def test_sigterm_during_a_run_unwinds_every_scope_and_marks_the_run_interrupted(plan: Any, tmp_path: Path) -> None:
    run = stages.new_run(plan, tmp_path / "out")
    before = signal.getsignal(signal.SIGTERM)
    torn_down = []
    with stages.recording(plan, run), stages.interrupts(), contextlib.ExitStack() as scope:
        with run.ending_early():
            scope.callback(torn_down.append, "replicas")
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)  # the signal ends this wait
            torn_down.append("not reached")
    assert torn_down == ["replicas"]
    assert run.interrupted and run.errors == ["interrupted by SIGTERM"]
    assert signal.getsignal(signal.SIGTERM) == before


def test_a_signal_while_tearing_down_is_recorded_and_the_teardown_goes_on(plan: Any, tmp_path: Path) -> None:
    run = stages.new_run(plan, tmp_path / "out")
    torn_down = []
    with stages.interrupts(), contextlib.ExitStack() as scope:
        scope.callback(torn_down.append, "targets")

        @contextlib.contextmanager
        def slow_heal() -> Any:
            try:
                yield
            finally:
                with run.tearing_down("heal: "):
                    os.kill(os.getpid(), signal.SIGINT)
                    threading.Event().wait(5)

        scope.enter_context(slow_heal())  # entered after the callback, so it tears down first
    assert torn_down == ["targets"]
    assert run.interrupted and run.errors == ["heal: interrupted by SIGINT while tearing down"]


def test_a_new_run_folder_holds_the_resolved_plan_and_replaces_an_old_one(plan: Any, tmp_path: Path) -> None:
    (tmp_path / "out" / "logs").mkdir(parents=True)
    (tmp_path / "out" / "logs" / "kafka-1.log").write_text("old run")
    (tmp_path / "out" / "results.json").write_text('{"run_id": "20240101-000000-abcdef"}')
    run = stages.new_run(plan, tmp_path / "out")
    assert sorted(p.name for p in run.out_dir.iterdir()) == ["logs", "plan.yaml"]
    assert not any((run.out_dir / "logs").iterdir())
    assert run.run_id and run.errors == [] and run.notes == []


def test_a_replica_that_exits_during_the_drain_is_named_with_its_last_log_line(plan: Any, tmp_path: Path) -> None:
    import sys
    import time

    from onceproof.targets.local import LocalRuntime
    from onceproof.targets.process import CommandNode

    run = stages.new_run(plan, tmp_path / "out")
    with stages.recording(plan, run) as history, LocalRuntime(log_dir=tmp_path / "logs") as runtime:
        replicas = stages.Replicas(plan, None, run)  # type: ignore[arg-type]
        crash = CommandNode(runtime, "pipeline-0", [sys.executable, "-c",
                                                    "print('psycopg.OperationalError: the connection is lost'); "
                                                    "raise SystemExit(3)"], {})
        steady = CommandNode(runtime, "pipeline-1", [sys.executable, "-c", "import time; time.sleep(60)"], {})
        for node in (crash, steady):
            node.start()
            replicas.nodes.append(node)
        deadline = time.monotonic() + 10
        while crash.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            assert replicas.note_exits(history, "the drain") == ["pipeline-0"]
        finally:
            steady.stop(timeout=5)
    assert crash.exit_code == 3
    assert run.notes == ["pipeline-0 exited (code 3) during the drain; its log (logs/pipeline-0.log) ends: "
                         "psycopg.OperationalError: the connection is lost"]
    exited = [r for r in records(run.out_dir) if r["f"] == "replica-exited"]
    assert [r["value"] for r in exited] == [{"replica": "pipeline-0", "exit_code": 3, "during": "the drain"}]


def test_a_second_signal_during_teardown_is_noted_and_never_raises(plan: Any, tmp_path: Path, capfd: Any) -> None:
    run = stages.new_run(plan, tmp_path / "out")
    torn_down = []
    with stages.interrupts() as signals, run.ending_early(), stages.teardown_after(signals) as scope:
        scope.callback(torn_down.append, "targets")

        @contextlib.contextmanager
        def slow_heal() -> Any:
            try:
                yield
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C again, outside any tearing_down step
                threading.Event().wait(0.2)
                os.kill(os.getpid(), signal.SIGTERM)
                threading.Event().wait(0.2)
                torn_down.append("heal")

        scope.enter_context(slow_heal())
        os.kill(os.getpid(), signal.SIGINT)  # the first one interrupts the run
        threading.Event().wait(5)
    assert torn_down == ["heal", "targets"]
    assert run.interrupted and run.errors == ["interrupted by SIGINT"]
    assert signals.noted == 2
    err = capfd.readouterr().err
    assert err.count("still tearing down") == 2 and "Traceback" not in err


def test_no_signal_raises_once_teardown_has_begun(plan: Any, tmp_path: Path, capfd: Any) -> None:
    run = stages.new_run(plan, tmp_path / "out")
    with stages.interrupts() as signals, run.ending_early(), stages.teardown_after(signals) as scope:
        scope.callback(lambda: (os.kill(os.getpid(), signal.SIGINT), threading.Event().wait(0.2)))
    assert not run.interrupted and run.errors == []
    assert "still tearing down" in capfd.readouterr().err
