"""The run engine: one plan -> targets up, pipeline started, load driven, faults applied,
sink observed, everything healed and drained, history checked, results written, and
teardown always. The CLI, the pytest plugin and any other front-end call `execute()`."""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from onceproof import stages
from onceproof.errors import ExitCode
from onceproof.recorder import HistoryWriter
from onceproof.observer import Observer
from onceproof.plan import Plan
from onceproof.progress import ProgressWatch, watching
from onceproof.extra_sinks import extra_sinks
from onceproof.mappings import make_mapped_sink, state_reader
from onceproof.sinks import Sink, make_sink
from onceproof.source_copies import kafka_copies
from onceproof.sources import make_source
from onceproof.stages import Interrupted, RunLog
from onceproof.loadprocs import ProcessWorkload, merge_shards
from onceproof.workload import Workload

__all__ = ["Interrupted", "Progress", "RunResult", "execute"]

FAULT_KEYS = ("fault", "kind", "targets", "outcome", "applied_s", "healed_s")  # results.json's `faults`


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
    lag: int | None = None  # the pipeline's lag on the source (None: not observed)


@dataclass
class RunResult:
    """What execute() returns: the run folder, the verdict, its exit code, results.json's dict."""

    out_dir: Path
    valid: Any  # True | False | "unknown"
    exit_code: int
    results: dict[str, Any]


def execute(plan: Plan, out_dir: Path | None = None, *, on_progress: Callable[[Progress], None] | None = None,
            log: Callable[[str], None] = lambda m: None, deployment: Any = None) -> RunResult:
    """Run `plan` once against real targets and check what happened. The steps, each a scope
    (harness/stages.py) that undoes itself on the way out, so that teardown always happens, in
    the reverse order: heal, observer, load host, replicas, targets:

    1. a run folder (`out_dir`, default runs/<name>-<run id>) with plan.yaml, and its history;
    2. SIGINT / SIGTERM become Interrupted for the rest of the run;
    3. the targets up, then the source's and the sink's set-up; the replicas started;
    4. the observer reading the sink; the nemesis;
    5. the load for `workload.duration`, the nemesis applying and healing on its schedule;
    6. heal everything, restart dead replicas, drain the load, wait until the sink settles,
       final read (and the declared state);
    7. teardown; then the history checked by exactly-once and perf (composed), and
       results.json, junit.xml and report.html written.

    `on_progress` is called with the Progress a few times a second; `log` with a line at
    each step worth saying. A harness or infrastructure failure, or an interruption, is a
    result (valid "unknown", exit code 3, its errors in results.json), never an exception.

    `deployment`: targets already up (a `session.Session` lends its own): step 3 resets their
    data instead of starting them, and step 7 leaves them running."""
    run = stages.new_run(plan, out_dir)
    progress, report = Progress(total_s=plan.workload.duration), on_progress or (lambda p: None)
    with stages.interrupts() as signals:  # until the results are written: a signal never stops teardown
        _scopes(plan, run, signals, progress, report, log, deployment)
        signals.tearing_down()
        with run.tearing_down("merging the load processes' history shards: "):
            merge_shards(run.out_dir)
        if signals.noted:
            run.notes.append(f"{signals.noted} more signal(s) arrived during teardown: noted, and teardown finished")
        return _conclude(plan, run)


def _scopes(plan: Plan, run: RunLog, signals: stages.Signals, progress: Progress,
            report: Callable[[Progress], None], log: Callable[[str], None], reused: Any = None) -> None:
    """Steps 1 to 7 of execute(): everything up to and including teardown."""
    with stages.recording(plan, run) as history, stages.kafka_client_logs(run), run.ending_early(), \
            stages.teardown_after(signals) as scope:
        with run.ending_early():
            if reused is None:
                log("starting targets")
                deployment = scope.enter_context(stages.targets_up(plan, run.run_id, run.out_dir / "logs", run))
            else:
                from onceproof.session import reused_targets

                log("resetting the targets' data")
                deployment = scope.enter_context(reused_targets(reused, run))
            history.record("harness", "info", "targets-ready", {n: a for n, a, _ in deployment.endpoints()})
            fmt = plan.workload.format.compiled if plan.workload.format is not None else None
            source = make_source(plan.workload.source, deployment, plan.workload.partitions, fmt)
            sink = make_mapped_sink(plan.workload.sink_mapping, deployment) if plan.workload.sink_mapping \
                else make_sink(plan.workload.sink, deployment)
            scope.enter_context(stages.clients_closed(source, sink, run))
            others = scope.enter_context(extra_sinks(plan.workload.also_sinks, deployment))
            replicas = scope.enter_context(stages.pipeline_replicas(plan, deployment, run))
            load_host = scope.enter_context(stages.load_host(deployment.runtime, run))
            load_host.call(source.setup)
            sink.setup()
            others.setup()
            _phase(progress, report, "starting pipeline")
            replicas.start()
            observer = scope.enter_context(stages.observing(sink, history, plan.observe.interval, run))
            watch = scope.enter_context(watching(plan, deployment, history, lambda lag: setattr(progress, "lag", lag)))
            nemesis, schedule = scope.enter_context(stages.nemesis_for(plan, deployment, replicas, history, run))
            workload: Workload | ProcessWorkload
            if plan.workload.processes > 1:  # harness/loadprocs.py
                workload = scope.enter_context(ProcessWorkload(plan, deployment, run.out_dir, history.t0))
                load_host.call(workload.start)
            else:
                workload = Workload(source, history, rate=plan.workload.rate, keys=plan.workload.keys,
                                    seed=plan.seed, payload_bytes=plan.workload.payload_bytes)
            with stages.load_window(history, workload, nemesis, schedule) as window:
                progress.phase = "load"
                observer.on_fatal = lambda e: _stop_load(run, window.stop, e)
                if observer.fatal is not None:  # found before the load began
                    _stop_load(run, window.stop, observer.fatal)
                scope.enter_context(_Ticker(progress, workload, observer, nemesis, window.t0, report))
                with _reads(plan, replicas, history):
                    load_host.call(workload.run, plan.workload.duration, window.stop)
            progress.phase = "healing"
            if nemesis is not None:
                history.record("harness", "info", "heal-all", None)
                nemesis.heal_all()
            replicas.restart_dead(history)
            load_host.call(workload.finish, min(30.0, plan.quiesce.max))
            run.load_stats = workload.stats.as_dict()
            _settle(plan, run, history, observer, watch, sink, progress, report, replicas, deployment)
            others.record_contents(history)
        _phase(progress, report, "teardown")


def _stop_load(run: RunLog, stop: threading.Event, error: Exception) -> None:
    """End the load now: the sink cannot be read as the plan maps it (`error`), so the run can
    have no verdict; its final read fails with the same error."""
    run.notes.append(f"the load was stopped early: the sink cannot be read as the plan maps it "
                     f"({str(error).split(':', 1)[0]}: see the error)")  # the error itself is printed once
    stop.set()


def _reads(plan: Plan, replicas: stages.Replicas, history: HistoryWriter) -> Any:
    """The read workload (harness/reads.py) for the load's time, or nothing without
    `workload.reads`."""
    spec = plan.workload.reads
    if spec is None:
        return contextlib.nullcontext()
    from onceproof.reads import reading

    keys = [f"k{j}" for j in range(spec.keys or plan.workload.keys)]  # harness/workload.py's key names
    return reading(history, replicas.read_ports, keys, rate=spec.rate, clients=spec.clients, timeout=spec.timeout,
                   seed=plan.seed)


def _phase(progress: Progress, report: Callable[[Progress], None], phase: str) -> None:
    progress.phase = phase
    report(progress)


def _settle(plan: Plan, run: RunLog, history: HistoryWriter, observer: Observer, watch: ProgressWatch,
            sink: Sink, progress: Progress, report: Callable[[Progress], None],
            replicas: stages.Replicas, deployment: Any) -> None:
    """Wait until the sink has stopped changing and the pipeline has caught up with the source
    (quiesce, harness/progress.py), record its final position, then read the sink one last time."""
    progress.phase = "quiescing"
    history.record("harness", "info", "quiesce-start", None)
    quiet = watch.wait_caught_up(observer, sink, plan.quiesce.idle, plan.quiesce.max,
                                 all_exited=lambda: bool(replicas.nodes) and not any(n.alive for n in replicas.nodes))
    history.record("harness", "info", "quiesce-end", quiet.as_dict())
    run.notes.extend(quiet.notes)
    replicas.note_exits(history, "the drain")  # a crashed pipeline explains a stall
    observer.stop()
    _phase(progress, report, "final read")
    watch.final(sink, history)
    observer.final_read()
    kind, name = plan.workload.source.split(":", 1)
    if kind == "kafka":  # a record the load wrote twice is applied twice by a correct pipeline
        fmt = plan.workload.format.compiled if plan.workload.format is not None else None
        history.record("harness", "info", "source-copies", kafka_copies(deployment.kafka_bootstrap(), name, fmt))
    if plan.checks.state:
        observer.record_state(state_reader(plan.checks.state, deployment))
    run.final_ok = True


class _Ticker(threading.Thread):
    """Updates the Progress from the load, the observer and the nemesis every 0.25 s while
    its scope lasts."""

    def __init__(self, progress: Progress, workload: Workload | ProcessWorkload, observer: Observer, nemesis: Any, t0: float,
                 report: Callable[[Progress], None]) -> None:
        super().__init__(name="progress", daemon=True)
        self.progress, self.workload, self.observer, self.nemesis = progress, workload, observer, nemesis
        self.t0, self.report = t0, report
        self._stop_evt = threading.Event()

    def __enter__(self) -> "_Ticker":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop_evt.set()

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


def _conclude(plan: Plan, run: RunLog) -> RunResult:
    """Check the history (exactly-once and perf, composed), then write results.json,
    junit.xml and report.html (a plain one if the rich report fails)."""
    from onceproof.checkers import compose, exactly_once, faults as faults_check, partitioned, perf
    from onceproof.checkers.history import read_history

    checked: dict[str, Any] = {"valid": "unknown", "checkers": {}}
    try:
        path = run.out_dir / "history.jsonl"
        order = plan.checks.exactly_once.order
        budget = plan.checks.memory_bytes
        if partitioned.estimate(path) > budget and not plan.workload.also_sinks:
            # bigger than the budget: exactly-once by partitions spilled to disk; the other
            # checkers read the history without its sends and sink reads (faults, progress: small)
            big = partitioned.check_path(path, memory=budget, order=order)
            h = partitioned.read_without_events(path)
            size = f"{path.stat().st_size / 2**30:.1f} GiB"
            run.notes.append(f"the history ({size}) is bigger than the check's memory budget "
                             f"(checks.memory {budget / 2**30:.1f} GiB): exactly-once was checked by partitions "
                             "on disk; the perf figures were not computed")
            checkers: dict[str, Any] = {"exactly-once": lambda history: big}
        else:
            h = read_history(str(path))
            checkers = {"exactly-once": lambda history: exactly_once.check(history, order=order),
                        "perf": perf.check}
        if plan.faults:  # did the planned faults happen? (checks.faults: strict or lenient)
            planned, strict = len(plan.fault_steps), plan.checks.faults == "strict"
            checkers["faults"] = lambda history: faults_check.check(history, planned=planned, strict=strict)
        if plan.workload.also_sinks:  # in all the sinks or in none
            from onceproof.checkers import partial

            main_sink = plan.workload.sink
            checkers["partial"] = lambda history: partial.check(history, main=main_sink)
        if plan.workload.reads is not None:  # reads linearizable against the pipeline's writes
            from onceproof.checkers import reads

            checkers["reads"] = reads.check
        checked = dict(compose(checkers)(h))
    except Exception as e:  # noqa: BLE001
        run.errors.append(f"checker: {type(e).__name__}: {e}")
    run.errors += [f"checker {name}: {r['error']}" for name, r in checked["checkers"].items() if r.get("error")]
    faults_checked = checked["checkers"].get("faults") or {}
    if faults_checked.get("valid") is True:  # lenient: the verdict stands, the run's notes say what did not happen
        run.notes += faults_checked.get("notes") or []
    valid = checked["valid"]
    if (run.errors or not run.final_ok) and valid is True:
        valid = "unknown"  # a run that did not finish cleanly proves nothing
    if valid is False and any(str(e).startswith("LoadProcessError") for e in run.errors):
        # a SIGKILLed load process loses the history records it had not written yet: the sends
        # of effects the sink holds may be missing, so a `phantom` (or any anomaly) is not proven
        valid = "unknown"
        run.notes.append("a load process died: its last sends may be missing from the history, so the "
                         "anomalies found are not proven (a correct pipeline's effects would show as phantom); "
                         "the run has no verdict")
    # each fault with the times (s since the load started) it was applied and healed
    faults = [{k: f[k] for k in FAULT_KEYS} for f in (checked["checkers"].get("perf") or {}).get("faults") or []]
    results = {
        "run_id": run.run_id, "name": plan.name, "seed": plan.seed, "valid": valid, "exit_code": int(ExitCode.of(valid)),
        "started_at": run.started_at, "duration_s": round(run.wall_s, 3), "plan": plan.resolved(),
        "checkers": checked["checkers"], "workload": run.load_stats, "faults": faults,
        "targets": {n.name: {"address": n.address, "log": f"logs/{n.name}.log"} for n in run.servers},
        "pipeline": {"command": plan.pipeline.command, "replicas": plan.pipeline.replicas,
                     "logs": [f"logs/{r.name}.log" for r in run.replicas]},
        "errors": run.errors, "notes": run.notes, "interrupted": run.interrupted,
    }
    _write_json(run.out_dir / "results.json", results)
    from onceproof.junit import write_junit

    write_junit(run.out_dir / "junit.xml", results)
    try:
        from onceproof.report import render

        render(run.out_dir)
    except Exception as e:  # noqa: BLE001 - a report failure must not hide the verdict
        (run.out_dir / "logs" / "report-error.log").write_text(traceback.format_exc())
        from onceproof.report.fallback import plain_report

        plain_report(run.out_dir / "report.html", results, str(e))
    return RunResult(run.out_dir, valid, int(ExitCode.of(valid)), results)


def _write_json(path: Path, data: Any) -> None:
    # a fresh temporary file (O_EXCL): never written through a symlink someone put in its place
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
