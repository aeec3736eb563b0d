"""The run engine: one plan -> targets up, pipeline started, load driven, faults applied,
sink observed, everything healed and drained, history checked, results written, and
teardown always. The CLI, the pytest plugin and any other front-end call `execute()`."""
from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson
import yaml

from onceproof.recorder import HistoryWriter
from onceproof.observer import Observer
from onceproof.plan import Plan
from onceproof.sinks import make_sink
from onceproof.sources import make_source
from onceproof.workload import Workload
from onceproof.errors import ExitCode
from onceproof.targets.deployment import Deployment
from onceproof.targets.ledger import new_run_id
from onceproof.targets.process import CommandNode
from onceproof.targets.runtime import Runtime, make_runtime

class Interrupted(Exception):
    """SIGINT / SIGTERM during a run: tear down, keep what was recorded."""


@dataclass
class Progress:
    """What the live display shows; updated by the engine, read by the front-end."""

    phase: str = "starting targets"
    elapsed_s: float = 0.0
    total_s: float = 0.0
    sent: int = 0
    acked: int = 0
    applied: int = 0
    rate: float = 0.0
    faults: list[str] = field(default_factory=list)


@dataclass
class RunResult:
    out_dir: Path
    valid: Any  # True | False | "unknown"
    exit_code: int
    results: dict[str, Any]


def _resolve_command(command: list[str]) -> list[str]:
    # `python` in a plan means the interpreter onceproof runs on (its virtualenv)
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


class _Signals:
    """SIGTERM behaves like Ctrl-C during a run, so `finally` blocks tear everything down."""

    def __enter__(self) -> "_Signals":
        self.previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handler)
        return self

    @staticmethod
    def _handler(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)


def execute(plan: Plan, out_dir: Path | None = None, *, on_progress: Callable[[Progress], None] | None = None,
            log: Callable[[str], None] = lambda m: None) -> RunResult:
    run_id = new_run_id()
    out_dir = Path(out_dir) if out_dir else Path("runs") / f"{plan.name}-{run_id}"
    if out_dir.exists() and any(out_dir.iterdir()):
        shutil.rmtree(out_dir)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    (out_dir / "plan.yaml").write_text(yaml.safe_dump(plan.resolved(), sort_keys=False))
    progress = Progress(total_s=plan.workload.duration)
    report = on_progress or (lambda p: None)
    history = HistoryWriter(out_dir / "history.jsonl")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    wall0 = time.monotonic()
    errors: list[str] = []
    notes: list[str] = []
    load_start_ns = 0
    load_stats: dict[str, Any] = {}
    deployment: Deployment | None = None
    replicas: list[CommandNode] = []
    nemesis = None
    observer: Observer | None = None
    load_host: _LoadHost | None = None
    interrupted = False
    final_ok = False
    history.record("harness", "info", "start", {
        "run_id": run_id, "plan": plan.name, "seed": plan.seed, "rate": plan.workload.rate,
        "duration_s": plan.workload.duration, "order": plan.checks.exactly_once.order})
    with _Signals():
        try:
            runtime = make_runtime(plan.runtime, run_id, out_dir / "logs")
            deployment = Deployment.from_plan(runtime, plan.targets.sections())
            log("starting targets")
            deployment.start()
            history.record("harness", "info", "targets-ready", {
                n: a for n, a, _ in deployment.endpoints()})
            source = make_source(plan.workload.source, deployment, plan.workload.partitions)
            sink = make_sink(plan.workload.sink, deployment)
            load_host = _LoadHost(runtime)
            load_host.call(source.setup)
            sink.setup()
            progress.phase = "starting pipeline"
            report(progress)
            env = {
                **deployment.pipeline_env(),
                "ONCEPROOF_SOURCE": plan.workload.source,
                "ONCEPROOF_SINK": plan.workload.sink,
                "ONCEPROOF_REPLICAS": str(plan.pipeline.replicas),
                "ONCEPROOF_RUN_ID": run_id,
                "PYTHONUNBUFFERED": "1",
            }
            command = _resolve_command(plan.pipeline.command)
            for i in range(plan.pipeline.replicas):
                node = CommandNode(runtime, f"pipeline-{i}", command,
                                   {**env, **plan.pipeline.env, "ONCEPROOF_REPLICA": str(i)},
                                   cwd=plan.pipeline.cwd)
                node.start()
                replicas.append(node)
            nemesis, schedule = _nemesis(plan, deployment, replicas, history)
            observer = Observer(sink, history, plan.observe.interval)
            observer.start()
            workload = Workload(source, history, rate=plan.workload.rate, keys=plan.workload.keys, seed=plan.seed,
                                payload_bytes=plan.workload.payload_bytes)
            stop = threading.Event()
            load_start_ns = history.now()
            history.record("harness", "info", "load-start", None, time_ns=load_start_ns)
            t0 = time.monotonic()
            nemesis_thread = None
            if nemesis is not None and schedule:
                nemesis_thread = threading.Thread(target=nemesis.run, args=(schedule, t0, stop), name="nemesis",
                                                  daemon=True)
                nemesis_thread.start()
            progress.phase = "load"
            ticker = _Ticker(progress, workload, observer, nemesis, t0, report)
            ticker.start()
            try:
                load_host.call(workload.run, plan.workload.duration, stop)
            finally:
                stop.set()
                history.record("harness", "info", "load-end", workload.stats.as_dict())
                if nemesis_thread:
                    nemesis_thread.join(timeout=30)
            progress.phase = "healing"
            if nemesis is not None:
                history.record("harness", "info", "heal-all", None)
                nemesis.heal_all()
            _restart_dead(replicas, history, notes)
            load_host.call(workload.finish, min(30.0, plan.quiesce.max))
            load_stats = workload.stats.as_dict()
            progress.phase = "quiescing"
            history.record("harness", "info", "quiesce-start", None)
            went_idle = observer.wait_idle(plan.quiesce.idle, plan.quiesce.max)
            history.record("harness", "info", "quiesce-end", {"idle": went_idle})
            if not went_idle:
                notes.append(f"the sink was still changing after quiesce.max={plan.quiesce.max:g}s")
            observer.stop()
            progress.phase = "final read"
            report(progress)
            observer.final_read()
            if plan.checks.state:
                observer.record_state(plan.checks.state.query)
            final_ok = True
            ticker.stop()
        except Interrupted as e:
            interrupted = True
            errors.append(f"interrupted by {e}")
        except Exception as e:  # noqa: BLE001 - an infrastructure failure is a result (exit 3)
            errors.append(f"{type(e).__name__}: {e}")
            (out_dir / "logs" / "harness-error.log").write_text(traceback.format_exc())
        finally:
            progress.phase = "teardown"
            report(progress)
            if nemesis is not None:
                try:
                    nemesis.heal_all()
                except Exception as e:  # noqa: BLE001
                    errors.append(f"heal: {e}")
            if observer is not None:
                observer.stop()
            if load_host is not None:
                load_host.close()
            for node in replicas:
                try:
                    node.stop(timeout=5)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{node.name}: {e}")
            if deployment is not None:
                try:
                    deployment.stop()
                except Exception as e:  # noqa: BLE001
                    errors.append(str(e))
            history.record("harness", "info", "end", {"errors": errors})
            history.close()
    return _conclude(plan, out_dir, run_id, started_at, time.monotonic() - wall0, history, deployment, replicas,
                     load_stats, load_start_ns, errors, notes, final_ok, interrupted)


def _nemesis(plan: Plan, deployment: Deployment, replicas: list[CommandNode], history: HistoryWriter):  # type: ignore[no-untyped-def]
    if not plan.faults:
        return None, []
    from onceproof.faults.base import Context
    from onceproof.faults.nemesis import Nemesis

    context = Context.from_deployment(deployment, {r.name: r for r in replicas}, plan.seed)
    steps = plan.fault_steps  # validated and drawn once, when the plan was loaded
    return Nemesis(context, history), steps


def _restart_dead(replicas: list[CommandNode], history: HistoryWriter, notes: list[str]) -> None:
    for node in replicas:
        if not node.alive:
            code = node._popen.returncode if node._popen else None
            notes.append(f"{node.name} had exited (code {code}) when the load ended; restarted it to drain")
            history.record("harness", "info", "restart-replica", {"replica": node.name, "exit_code": code})
            node.start()


class _LoadHost:
    """Runs the load generator's calls on one thread that, on the netns runtime, lives in the
    `load` host's namespace (so partitions can cut the load generator too); the client
    library's own threads, created from it, inherit that namespace."""

    def __init__(self, runtime: Runtime) -> None:
        import concurrent.futures

        self._ctx = runtime.entered("load")
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="load",
                                                           initializer=self._enter)

    def _enter(self) -> None:
        self._ctx.__enter__()  # for the life of this dedicated thread

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Ticker(threading.Thread):
    def __init__(self, progress: Progress, workload: Workload, observer: Observer, nemesis: Any, t0: float,
                 report: Callable[[Progress], None]) -> None:
        super().__init__(name="progress", daemon=True)
        self.progress, self.workload, self.observer, self.nemesis = progress, workload, observer, nemesis
        self.t0, self.report = t0, report
        self._stop_evt = threading.Event()

    def run(self) -> None:
        last_sent, last_t = 0, time.monotonic()
        while not self._stop_evt.wait(0.25):
            now = time.monotonic()
            p = self.progress
            p.elapsed_s = now - self.t0
            p.sent = self.workload.stats.sent
            p.acked = self.workload.stats.ok
            p.applied = self.observer.applied
            p.rate = (p.sent - last_sent) / (now - last_t) if now > last_t else 0.0
            last_sent, last_t = p.sent, now
            try:
                p.faults = [f"{f.kind} {','.join(f.targets)}" for f in self.nemesis.active()] if self.nemesis else []
            except Exception:  # noqa: BLE001
                p.faults = []
            self.report(p)

    def stop(self) -> None:
        self._stop_evt.set()


def _conclude(plan: Plan, out_dir: Path, run_id: str, started_at: str, wall_s: float, history: HistoryWriter,
              deployment: Deployment | None, replicas: list[CommandNode], load_stats: dict[str, Any],
              load_start_ns: int, errors: list[str], notes: list[str], final_ok: bool,
              interrupted: bool) -> RunResult:
    from onceproof.checkers import exactly_once
    from onceproof.checkers.history import read_history
    from onceproof.report.timeline import fault_windows

    checker_results: dict[str, Any] = {}
    faults_done: list[dict[str, Any]] = []
    valid: Any = "unknown"
    try:
        h = read_history(str(out_dir / "history.jsonl"))
        # each fault with the times (s since the load started) it was applied and healed
        t0 = load_start_ns / 1e9
        faults_done = [{"fault": w.fault, "kind": w.kind, "targets": w.targets, "outcome": w.outcome,
                        "applied_s": round(w.start_s - t0, 3),
                        "healed_s": None if w.end_s is None else round(w.end_s - t0, 3)}
                       for w in fault_windows(h)]
        eo = exactly_once.check(h, order=plan.checks.exactly_once.order)
        checker_results["exactly-once"] = eo
        valid = eo["valid"]
    except Exception as e:  # noqa: BLE001
        errors.append(f"checker: {type(e).__name__}: {e}")
    if errors and valid is True:
        valid = "unknown"  # a run that did not finish cleanly proves nothing
    if not final_ok and valid is True:
        valid = "unknown"
    results = {
        "run_id": run_id, "name": plan.name, "seed": plan.seed, "valid": valid, "exit_code": int(ExitCode.of(valid)),
        "started_at": started_at, "duration_s": round(wall_s, 3), "plan": plan.resolved(),
        "checkers": checker_results, "workload": load_stats, "faults": faults_done,
        "targets": {n.name: {"address": n.address, "log": f"logs/{n.name}.log"}
                    for n in (deployment.servers() if deployment else [])},
        "pipeline": {"command": plan.pipeline.command, "replicas": plan.pipeline.replicas,
                     "logs": [f"logs/{r.name}.log" for r in replicas]},
        "errors": errors, "notes": notes, "interrupted": interrupted,
    }
    _write_json(out_dir / "results.json", results)
    from onceproof.junit import write_junit

    write_junit(out_dir / "junit.xml", results)
    try:
        from onceproof.report import render

        render(out_dir)
    except Exception as e:  # noqa: BLE001 - a report failure must not hide the verdict
        (out_dir / "logs" / "report-error.log").write_text(traceback.format_exc())
        from onceproof.junit import plain_report

        plain_report(out_dir / "report.html", results, str(e))
    return RunResult(out_dir, valid, int(ExitCode.of(valid)), results)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    os.replace(tmp, path)
