"""The phases of a run, each a scope that owns one resource and gives it back on the way out
(Jepsen's `with-os` / `with-db`). `runner.execute` nests them in one ExitStack, so teardown
is the reverse of set-up, always: on success, on an exception, on Ctrl-C or SIGTERM.

| scope               | owns                         | on the way out                      |
|---------------------|------------------------------|-------------------------------------|
| `recording`         | the history                  | an `end` record, closed             |
| `interrupts`        | SIGINT / SIGTERM handlers    | the previous handlers back          |
| `kafka_client_logs` | librdkafka's log lines       | logs/harness-kafka.log closed       |
| `targets_up`        | the Deployment (and runtime) | every node stopped, scratch removed |
| `clients_closed`    | our source and sink clients  | each one closed (servers still up)  |
| `pipeline_replicas` | the pipeline's replicas      | each replica stopped                |
| `load_host`         | the load generator's thread  | closed                              |
| `observing`         | the observer's thread        | stopped                             |
| `nemesis_for`       | the faults applied           | every active fault healed           |
| `load_window`       | the nemesis's schedule       | schedule stopped, `load-end`        |

A failure while tearing one scope down is written into the RunLog's errors (so the run
has no verdict) and the outer scopes still tear down.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import yaml

from onceproof.errors import OnceproofError
from onceproof.recorder import HistoryWriter
from onceproof.observer import Observer
from onceproof.plan import Plan
from onceproof.sinks import Sink
from onceproof.sources import Source
from onceproof.targets.deployment import Deployment
from onceproof.targets.kafka import clients as kafka_clients
from onceproof.targets.ledger import new_run_id
from onceproof.targets.runtime import Runtime, make_runtime
from onceproof.targets.process import CommandNode, Node, log_tail
from onceproof.workload import Workload

if TYPE_CHECKING:  # the faults are imported when a plan has some
    from onceproof.loadprocs import ProcessWorkload
    from onceproof.faults.nemesis import Nemesis
    from onceproof.faults.schedule import Step


class RunFolderError(OnceproofError):
    """`--out` names a folder the run may not use: a file, a folder holding files that are not
    a previous run's, or one that cannot be written. Bad input (exit 2): nothing was touched."""


# what a run writes in its folder, and all it ever removes from one it reuses
RUN_FILES = ("plan.yaml", "history.jsonl", "results.json", "junit.xml", "report.html")
RUN_DIRS = ("logs",)


def is_previous_run(out: Path) -> bool:
    """Whether folder `out` was written by a run of ours: its history.jsonl opens with the
    harness's `start` record, or its results.json carries a run id."""
    try:
        with open(out / "history.jsonl", "rb") as f:
            first = json.loads(f.readline(65536) or b"null")
        if isinstance(first, dict) and first.get("process") == "harness" and first.get("f") == "start":
            return True
    except (OSError, ValueError):
        pass
    try:
        with open(out / "results.json", "rb") as f:
            results = json.loads(f.read(64 * 1024 * 1024))
        return isinstance(results, dict) and isinstance(results.get("run_id"), str)
    except (OSError, ValueError):
        return False


def check_out_dir(out: Path) -> None:
    """Raise RunFolderError unless a run may write into `out`: absent, an empty folder, or a
    previous run folder of ours. Changes nothing."""
    if out.is_symlink() and not out.is_dir() or out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out}: not a folder; give a new or empty folder (or a previous run folder)")
    if not out.exists():
        return
    try:
        entries = [e.name for e in os.scandir(out)]
    except OSError as e:
        raise RunFolderError(f"--out {out}: cannot read the folder: {e.strerror or e}") from None
    if entries and not is_previous_run(out):
        shown = ", ".join(sorted(entries)[:5]) + (", ..." if len(entries) > 5 else "")
        raise RunFolderError(f"--out {out}: the folder holds files that are not a previous run's ({shown}); "
                             "a run never deletes what it did not write: give a new or empty folder")


def _clear_previous_run(out: Path) -> None:
    """Remove from a previous run folder the files a run writes, and only those (a symlink
    in their place is removed, never followed)."""
    for name in (*RUN_FILES, *RUN_DIRS):
        path = out / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)


class Interrupted(Exception):
    """SIGINT / SIGTERM during a run: tear down, keep what was recorded."""


@dataclass
class RunLog:
    """What a run leaves besides its history, filled in as it goes and read by the runner to
    write results.json: `errors` (each one takes the verdict away), `notes` (facts worth
    knowing that do not), whether it was `interrupted`, whether it reached its `final_ok`
    (the final read of the sink), the workload's `load_stats`, and the `servers` and
    `replicas` it started (for their addresses and log files)."""

    run_id: str
    out_dir: Path
    started_at: str  # UTC, ISO 8601
    wall0: float = field(default_factory=time.monotonic)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False
    final_ok: bool = False
    load_stats: dict[str, Any] = field(default_factory=dict)
    servers: list[Node] = field(default_factory=list)
    replicas: list[CommandNode] = field(default_factory=list)

    @property
    def wall_s(self) -> float:
        """Seconds since the run began."""
        return time.monotonic() - self.wall0

    @contextlib.contextmanager
    def ending_early(self) -> Iterator[None]:
        """What ends a run early becomes part of its result, never an exception: Interrupted
        sets `interrupted`; any other Exception is an error, its traceback in
        logs/harness-error.log."""
        try:
            yield
        except Interrupted as e:
            self.interrupted = True
            self.errors.append(f"interrupted by {e}")
        except Exception as e:  # noqa: BLE001 - an infrastructure failure is a result (exit 3)
            self.errors.append(f"{type(e).__name__}: {e}")
            (self.out_dir / "logs" / "harness-error.log").write_text(traceback.format_exc())

    @contextlib.contextmanager
    def tearing_down(self, prefix: str) -> Iterator[None]:
        """One teardown step: its failure is an error (`prefix` + the message) and the
        teardown goes on; a signal during it is recorded and the teardown goes on too."""
        try:
            yield
        except Interrupted as e:
            self.interrupted = True
            self.errors.append(f"{prefix}interrupted by {e} while tearing down")
        except Exception as e:  # noqa: BLE001 - keep tearing down the rest
            self.errors.append(f"{prefix}{e}")


def new_run(plan: Plan, out_dir: Path | None) -> RunLog:
    """The run folder (`out_dir`, default runs/<plan name>-<run id>) with the resolved
    plan.yaml and an empty logs/; returns the run's RunLog. The folder must be new, empty or
    a previous run folder of ours, whose own files (RUN_FILES, logs/) are replaced and
    nothing else. Raises RunFolderError (bad input) if it is not, or cannot be written."""
    run_id = new_run_id()
    out = Path(out_dir) if out_dir else Path("runs") / f"{plan.name}-{run_id}"
    check_out_dir(out)
    try:
        if out.exists():
            _clear_previous_run(out)
        # no world access: logs may carry what a pipeline prints (report.html and results.json
        # carry no secret and can be shared by copying them out)
        fresh = not out.exists()
        out.mkdir(mode=0o750, parents=True, exist_ok=True)
        if fresh:
            os.chmod(out, 0o750)  # whatever the umask
        (out / "logs").mkdir(mode=0o750, exist_ok=True)
        (out / "plan.yaml").write_text(yaml.safe_dump(plan.resolved(), sort_keys=False))
    except OSError as e:
        raise RunFolderError(f"--out {out}: cannot write the run folder: {e.strerror or e}") from None
    return RunLog(run_id, out, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


@contextlib.contextmanager
def recording(plan: Plan, run: RunLog) -> Iterator[HistoryWriter]:
    """The run's history, run_dir/history.jsonl, opened with a `start` record (run id, plan,
    seed, rate, duration, order); on exit an `end` record with the run's errors, then closed."""
    history = HistoryWriter(run.out_dir / "history.jsonl")
    try:
        history.record("harness", "info", "start", {
            "run_id": run.run_id, "plan": plan.name, "seed": plan.seed, "rate": plan.workload.rate,
            "duration_s": plan.workload.duration, "order": plan.checks.exactly_once.order,
            "state": plan.checks.state is not None})
        yield history
    finally:
        try:
            history.record("harness", "info", "end", {"errors": run.errors})
        finally:
            history.close()


class Signals:
    """The state of a run's SIGINT / SIGTERM handling (see `interrupts`): the first signal
    before teardown raises Interrupted; from then on (or once `tearing_down()` is called) a
    signal is only noted on stderr, so teardown always finishes (only SIGKILL stops it, and
    then `onceproof cleanup` finds what is left)."""

    def __init__(self) -> None:
        self.since: float | None = None  # when teardown began (the first signal, or tearing_down())
        self.noted = 0  # signals received during teardown

    def tearing_down(self) -> None:
        """From now on no signal raises: the run is tearing down (or concluding)."""
        if self.since is None:
            self.since = time.monotonic()

    def handle(self, signum: int, frame: Any) -> None:
        """The signal handler: raise Interrupted once, before teardown; note the signal after."""
        name = signal.Signals(signum).name
        if self.since is None:
            self.since = time.monotonic()
            raise Interrupted(name)
        self.noted += 1
        message = (f"onceproof: {name}: still tearing down, {time.monotonic() - self.since:.0f} s "
                   "(it always finishes; SIGKILL stops it, then run `onceproof cleanup`)\n")
        try:
            os.write(2, message.encode())  # no buffered I/O inside a signal handler
        except OSError:
            pass


@contextlib.contextmanager
def interrupts() -> Iterator[Signals]:
    """The run's only SIGINT / SIGTERM handlers (a `Signals`): the first signal raises
    Interrupted in the main thread, so every scope unwinds and tears its resource down; any
    further signal, or any signal once `tearing_down()` was called, is noted on stderr and
    never raises inside teardown. The previous handlers are back on exit. Off the main thread
    (where Python cannot handle signals) it changes nothing."""
    signals = Signals()
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signals.handle)
    try:
        yield signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def teardown_after(signals: Signals) -> Iterator[contextlib.ExitStack]:
    """An ExitStack for the run's scopes that, before it unwinds them (on success, on an
    error or on an interruption), tells `signals` that teardown has begun."""
    with contextlib.ExitStack() as scope:
        try:
            yield scope
        finally:
            signals.tearing_down()


# --- targets --------------------------------------------------------------------------------
@contextlib.contextmanager
def targets_up(plan: Plan, run_id: str, log_dir: Path | None, run: RunLog | None = None) -> Iterator[Deployment]:
    """The plan's targets, started (with their fault proxies), as a Deployment; on exit every
    node is stopped and the runtime's scratch space removed. With a `run`, the servers are
    listed in it and a teardown failure is one of its errors; without one (`onceproof up`)
    it raises RuntimeError. Starting raises NodeError (a node exited or was not ready)."""
    runtime = make_runtime(plan.runtime, run_id, log_dir, images=plan.images)
    try:
        deployment = Deployment.from_plan(runtime, plan.targets.sections())
    except BaseException:
        runtime.close()
        raise
    if run is not None:
        run.servers = deployment.servers()
    try:
        deployment.start()
        yield deployment
    finally:
        with run.tearing_down("") if run is not None else contextlib.nullcontext():
            deployment.stop()


@contextlib.contextmanager
def clients_closed(source: Source, sink: Sink, run: RunLog) -> Iterator[None]:
    """The harness's own clients of the source and the sink: on exit (entered right after the
    targets, so before they stop) each one is released, so that none outlives the servers."""
    try:
        yield
    finally:
        with run.tearing_down("source client: "):
            source.release()
        with run.tearing_down("sink client: "):
            sink.close()


@contextlib.contextmanager
def kafka_client_logs(run: RunLog) -> Iterator[None]:
    """librdkafka's log lines of every Kafka client the harness makes go to
    logs/harness-kafka.log while the scope lasts (never to the terminal)."""
    with kafka_clients.logs_to(run.out_dir / "logs" / "harness-kafka.log"):
        yield


# --- the pipeline under test ----------------------------------------------------------------
def pipeline_env(plan: Plan, deployment: Deployment, run_id: str) -> dict[str, str]:
    """What every replica finds in its environment (DESIGN.md's pipeline contract), except
    ONCEPROOF_REPLICA and the plan's own `pipeline.env`."""
    return {
        **deployment.pipeline_env(),  # each target's ONCEPROOF_* variable, through the proxies
        "ONCEPROOF_SOURCE": plan.workload.source,
        "ONCEPROOF_SINK": plan.workload.sink,
        "ONCEPROOF_REPLICAS": str(plan.pipeline.replicas),
        "ONCEPROOF_RUN_ID": run_id,
        "PYTHONUNBUFFERED": "1",
        # the other sinks of a multi-store pipeline (workload.also-sinks), comma-separated
        **({"ONCEPROOF_ALSO_SINKS": ",".join(plan.workload.also_sinks)} if plan.workload.also_sinks else {}),
    }


def _resolve_command(command: list[str]) -> list[str]:
    # `python` in a plan means the interpreter onceproof runs on (its virtualenv)
    if command and command[0] in ("python", "python3"):
        return [sys.executable, *command[1:]]
    return list(command)


def missing_program(plan: Plan) -> str | None:
    """Why the pipeline's program cannot be started here, or None: `pipeline.command`'s first
    word not found (a path, taken from `pipeline.cwd` as the replicas will be, or a name looked
    up on PATH, `pipeline.env`'s if it sets one) or not executable. A bad plan, said before
    anything starts (exit 2), not a failed run. None for `pipeline.image` (the image has it)."""
    if plan.pipeline.image:
        return None
    program = _resolve_command(plan.pipeline.command)[0]
    cwd = plan.pipeline.cwd or os.getcwd()
    if "/" in program:
        path = os.path.join(cwd, program)
        if not os.path.exists(path):
            return f"pipeline.command: {program!r} not found (no such file{'' if os.path.isabs(program) else ' in ' + cwd})"
        if os.path.isdir(path) or not os.access(path, os.X_OK):
            return f"pipeline.command: {program!r} is not an executable file"
        return None
    if shutil.which(program, path=plan.pipeline.env.get("PATH", os.environ.get("PATH"))) is None:
        return f"pipeline.command: {program!r} not found on PATH"
    return None


class Replicas:
    """The pipeline's replicas `pipeline-0..N-1`: started by start(), each one listed in
    `nodes` once it is up."""

    def __init__(self, plan: Plan, deployment: Deployment, run: RunLog) -> None:
        self.plan, self.deployment, self.run = plan, deployment, run
        self.nodes: list[CommandNode] = run.replicas
        self.read_ports: list[int] = []  # each replica's ONCEPROOF_READ_PORT (a plan with workload.reads)

    def start(self) -> None:
        """Start every replica with the pipeline contract's environment; raises NodeError if
        one exits while starting."""
        env = {**pipeline_env(self.plan, self.deployment, self.run.run_id), **self.plan.pipeline.env}
        command = _resolve_command(self.plan.pipeline.command)
        for i in range(self.plan.pipeline.replicas):
            node: CommandNode
            if self.plan.pipeline.image:  # runtime docker: a container of the user's image
                from onceproof.targets.docker.nodes import ContainerCommand

                node = ContainerCommand(self.deployment.runtime, f"pipeline-{i}",  # type: ignore[arg-type]
                                        self.plan.pipeline.image, list(self.plan.pipeline.command),
                                        {**env, "ONCEPROOF_REPLICA": str(i)}, self.deployment.toxiproxy)
            else:
                own = {"ONCEPROOF_REPLICA": str(i)}
                if self.plan.workload.reads is not None:  # harness/reads.py: the read contract
                    self.read_ports.append(self.deployment.runtime.free_port())
                    own.update(ONCEPROOF_READ_PORT=str(self.read_ports[-1]),
                               ONCEPROOF_READ_PATH=self.plan.workload.reads.path)
                node = CommandNode(self.deployment.runtime, f"pipeline-{i}", command,
                                   {**env, **own}, cwd=self.plan.pipeline.cwd)
                # the run's own logs/ (results.json lists it there), also when a Session lent the
                # deployment, whose runtime logs to the session's folder
                node.log_path = self.run.out_dir / "logs" / f"{node.name}.log"
            node.start()
            self.nodes.append(node)

    def by_name(self) -> dict[str, Node]:
        """The replicas started, by name (what the nemesis can kill and pause)."""
        return {r.name: r for r in self.nodes}

    def restart_dead(self, history: HistoryWriter) -> None:
        """Start again any replica that has exited (so the backlog drains), with a note and a
        `restart-replica` record saying how it had ended."""
        for node in self.nodes:
            if not node.alive:
                code = node.exit_code
                self.run.notes.append(f"{node.name} had exited (code {code}) when the load ended; "
                                      f"restarted it to drain; its log ends: {_last_line(node.log_path)}")
                history.record("harness", "info", "restart-replica", {"replica": node.name, "exit_code": code})
                node.start()

    def note_exits(self, history: HistoryWriter, during: str) -> list[str]:
        """Say which replicas are no longer running (they exited on their own `during` a phase,
        e.g. "the drain"): a note each, with the last line of its log, and a `replica-exited`
        record. Returns their names. A pipeline that crashes while draining explains a stall."""
        gone = []
        for node in self.nodes:
            if node.alive or node.exit_code is None:
                continue
            self.run.notes.append(f"{node.name} exited (code {node.exit_code}) during {during}; its log "
                                  f"(logs/{node.log_path.name}) ends: {_last_line(node.log_path)}")
            history.record("harness", "info", "replica-exited",
                           {"replica": node.name, "exit_code": node.exit_code, "during": during})
            gone.append(node.name)
        return gone


def _last_line(log: Path) -> str:
    """The last non-blank line of a log (at most 300 characters), or "(empty log)"."""
    last = next((line for line in reversed(log_tail(log, 5).splitlines()) if line.strip()), "(empty log)")
    return last[:300]


@contextlib.contextmanager
def pipeline_replicas(plan: Plan, deployment: Deployment, run: RunLog) -> Iterator[Replicas]:
    """The pipeline's replicas (not started yet: the source and sink come first); on exit each
    one started is stopped (5 s, then SIGKILL), a failure being one of the run's errors."""
    replicas = Replicas(plan, deployment, run)
    try:
        yield replicas
    finally:
        for node in replicas.nodes:
            with run.tearing_down(f"{node.name}: "):
                node.stop(timeout=5)


# --- load, observer, nemesis ----------------------------------------------------------------
class LoadHost:
    """Runs the load generator's calls on one thread that, on the netns runtime, lives in the
    `load` host's namespace (so partitions can cut the load generator too); the client
    library's own threads, created from it, inherit that namespace."""

    def __init__(self, runtime: Runtime) -> None:
        self._ctx: contextlib.AbstractContextManager[Any] | None = runtime.entered("load")
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="load",
                                                           initializer=self._enter)

    def _enter(self) -> None:
        if self._ctx is not None:
            self._ctx.__enter__()  # for the life of this dedicated thread

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) on the load thread; returns its result or raises its exception."""
        return self._pool.submit(fn, *args).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def load_host(runtime: Runtime, run: RunLog) -> Iterator[LoadHost]:
    """The load generator's thread (see LoadHost); closed on exit, without waiting for it."""
    host = LoadHost(runtime)
    try:
        yield host
    finally:
        with run.tearing_down("load host: "):
            host.close()


@contextlib.contextmanager
def observing(sink: Sink, history: HistoryWriter, interval_s: float, run: RunLog) -> Iterator[Observer]:
    """An Observer reading `sink` every `interval_s` seconds into the history, started; on exit
    stopped (it is stopped earlier, before the final read, when the run gets that far)."""
    observer = Observer(sink, history, interval_s)
    observer.start()
    try:
        yield observer
    finally:
        with run.tearing_down("observer: "):
            observer.stop()


@contextlib.contextmanager
def nemesis_for(plan: Plan, deployment: Deployment, replicas: Replicas, history: HistoryWriter,
                run: RunLog) -> Iterator[tuple["Nemesis | None", list["Step"]]]:
    """The plan's nemesis and its schedule (faults expanded with the plan's seed), or
    (None, []) for a plan without faults; on exit every fault still active is healed."""
    if not plan.faults:
        yield None, []
        return
    from onceproof.faults.base import Context
    from onceproof.faults.nemesis import Nemesis

    context = Context.from_deployment(deployment, replicas.by_name(), plan.seed)
    steps = plan.fault_steps  # validated and drawn once, when the plan was loaded
    nemesis = Nemesis(context, history)
    try:
        yield nemesis, steps
    finally:
        with run.tearing_down("heal: "):
            nemesis.heal_all()


@dataclass
class LoadWindow:
    t0: float  # time.monotonic() when the load started
    stop: threading.Event  # set when the load ends: the load and the schedule stop


@contextlib.contextmanager
def load_window(history: HistoryWriter, workload: "Workload | ProcessWorkload", nemesis: "Nemesis | None",
                schedule: list["Step"]) -> Iterator[LoadWindow]:
    """The load's time: a `load-start` record, and the nemesis's schedule running from now (in
    a thread of its own, step times counted from here); on exit the window's `stop` is set,
    a `load-end` record holds the workload's stats, and the schedule's thread is joined (30 s)."""
    window = LoadWindow(0.0, threading.Event())
    history.record("harness", "info", "load-start", None, time_ns=history.now())
    window.t0 = time.monotonic()
    thread = None
    if nemesis is not None and schedule:
        thread = threading.Thread(target=nemesis.run, args=(schedule, window.t0, window.stop), name="nemesis",
                                  daemon=True)
        thread.start()
    try:
        yield window
    finally:
        window.stop.set()
        history.record("harness", "info", "load-end", workload.stats.as_dict())
        if thread:
            thread.join(timeout=30)
