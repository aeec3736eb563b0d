"""`workload.processes: N`: the load from N processes, each with its own history shard,
merged into the run's history.jsonl by time when the run ends.

Each load process is spawned fresh (`python -m onceproof.loadprocs CONFIG`, never a fork of
the harness, whose client libraries run threads) from the load host's thread, so on the
netns runtime it lives in the `load` host's namespace. Process i of N sends the events of
its share of the keys (`workload.EventFactory`: keys k{j} with j % N == i, ids e{m*N+i}) at
rate/N, so ids stay unique and every key's `seq` comes from one process, in order; it writes
its sends to logs/shards/load-i.jsonl through its own HistoryWriter, whose clock is the
run's (CLOCK_MONOTONIC is one clock for every process of the machine).

The parent talks to a load process over its stdin (commands `go D`, `stop`, `finish T`; end
of file means stop and exit) and reads its stdout (one JSON object a line: `ready`, the
counts every 0.25 s, `ran`, `finished`); its stderr goes to logs/load-i.log. A load process
dies with the run: it ignores SIGINT (the harness tells it to stop), gets SIGTERM when the
harness's load thread dies (Linux PR_SET_PDEATHSIG), stops at the end of its stdin, and the
`ProcessWorkload` scope kills whatever is left on the way out.

`merge_shards` then merges history.jsonl and the shards by `time` (a streaming k-way merge,
one line per file in memory) and numbers `index` again in file order, so every reader,
checker and report sees one history (checkers/HISTORY.md)."""
from __future__ import annotations

import ctypes
import heapq
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any, Iterator, cast

from onceproof.errors import OnceproofError
from onceproof.recorder import HistoryWriter
from onceproof.workload import LoadStats, Workload

SHARDS = Path("logs") / "shards"  # in the run folder: cleared with logs/ when a folder is reused
READY_TIMEOUT_S = 120.0  # a fresh interpreter importing the client libraries, on a busy machine
REPORT_S = 0.25


class LoadProcessError(OnceproofError):
    """A load process failed (exited, or did not answer in time): the run has no verdict."""


class ProcessWorkload:
    """The load of `plan.workload` from `plan.workload.processes` processes (module docstring).
    The same calls as `workload.Workload`: `stats` (the sum of the processes' counts, updated
    4 times a second), `run(duration_s, stop)`, `finish(timeout)`; besides, `start()` (spawn
    and wait until every process is connected; call it on the load host's thread) and the
    context manager that ends every process on the way out. Raises LoadProcessError when a
    process exits early or does not answer, with its exit code and the last line of its log."""

    def __init__(self, plan: Any, deployment: Any, run_dir: Path, t0_ns: int) -> None:
        w = plan.workload
        self.n = w.processes
        self.run_dir = Path(run_dir)
        self.stats = LoadStats(asked_rate=w.rate)
        endpoints = {"kafka": deployment.kafka_bootstrap("load"), "redis": deployment.redis_url("load"),
                     "postgres": deployment.postgres_dsn("load")}
        self._config = {"n": self.n, "source": w.source, "partitions": w.partitions,
                        "format": w.format.model_dump() if w.format is not None else None,
                        "endpoints": endpoints, "rate": w.rate / self.n, "keys": w.keys, "seed": plan.seed,
                        "payload_bytes": w.payload_bytes, "t0": t0_ns}
        self._procs: list[subprocess.Popen[bytes]] = []
        self._states: list[dict[str, Any]] = []
        self._readers: list[threading.Thread] = []
        self._changed = threading.Condition()

    @property
    def shards(self) -> list[Path]:
        return [self.run_dir / SHARDS / f"load-{i}.jsonl" for i in range(self.n)]

    def log(self, i: int) -> Path:
        return self.run_dir / "logs" / f"load-{i}.log"

    def start(self) -> None:
        """Spawn the N processes and wait until each has its client connected."""
        (self.run_dir / SHARDS).mkdir(parents=True, exist_ok=True)
        for i in range(self.n):
            config = dict(self._config, i=i, shard=str(self.shards[i]))
            with open(self.log(i), "wb") as err:
                proc = subprocess.Popen([sys.executable, "-m", "onceproof.loadprocs", json.dumps(config)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
            self._procs.append(proc)
            self._states.append({})
            reader = threading.Thread(target=self._read, args=(i, proc), name=f"load-{i}-reader", daemon=True)
            reader.start()
            self._readers.append(reader)
        self._wait_all("ready", READY_TIMEOUT_S, "connect its client")

    def _read(self, i: int, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self._states[i].update(msg)
                counts = [s for s in self._states if "sent" in s]
                for name in ("sent", "ok", "fail", "info"):
                    setattr(self.stats, name, sum(s[name] for s in counts))
                self._changed.notify_all()
        proc.wait()
        with self._changed:
            self._states[i]["exited"] = True
            self._changed.notify_all()

    def _failure(self, what: str) -> LoadProcessError | None:
        """The first process that exited without having said `what`, as an error."""
        for i, (proc, state) in enumerate(zip(self._procs, self._states)):
            if state.get("exited") and what not in state:
                log = self.log(i)
                try:
                    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
                except OSError:
                    lines = []
                last = lines[-1] if lines else "(nothing on its stderr)"
                return LoadProcessError(f"load process {i} of {self.n} exited with code {proc.returncode} "
                                        f"before it {what}: {last} (see {log})")
        return None

    def _wait_all(self, what: str, timeout: float, doing: str, stop: threading.Event | None = None) -> None:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not all(what in s for s in self._states):
                error = self._failure(what)
                if error is not None:
                    raise error
                if stop is not None and stop.is_set():
                    stop = None
                    self._tell_all(b"stop\n")
                left = deadline - time.monotonic()
                if left <= 0:
                    late = [i for i, s in enumerate(self._states) if what not in s]
                    raise LoadProcessError(f"load process(es) {late} of {self.n} did not {doing} "
                                           f"within {timeout:g} s (see logs/load-N.log)")
                self._changed.wait(min(left, 0.1))

    def _tell_all(self, command: bytes) -> None:
        for proc in self._procs:
            try:
                assert proc.stdin is not None
                proc.stdin.write(command)
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass  # that process is gone: its reader notes the exit

    def run(self, duration_s: float, stop: threading.Event) -> LoadStats:
        """Start the load in every process; return when every process has ended it (after
        duration_s, or when `stop` is set)."""
        self.stats.started = time.monotonic()
        self._tell_all(b"go %r\n" % duration_s)
        self._wait_all("ran", duration_s + 60, "end its load", stop)
        self.stats.ended = time.monotonic()
        return self.stats

    def finish(self, timeout: float) -> None:
        """Every process waits up to `timeout` for its outstanding sends (workload.finish),
        closes its shard and exits."""
        self._tell_all(b"finish %r\n" % timeout)
        self._wait_all("finished", timeout + 60, "finish its sends")
        for i, proc in enumerate(self._procs):
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                raise LoadProcessError(f"load process {i} of {self.n} did not exit after finishing") from None
            if code != 0:
                raise LoadProcessError(f"load process {i} of {self.n} exited with code {code} (see {self.log(i)})")

    def close(self) -> None:
        """End every process still running: end of stdin (it stops), then SIGKILL after 5 s."""
        for proc in self._procs:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 5
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)

    def __enter__(self) -> "ProcessWorkload":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- merging ----------------------------------------------------------------------------------

def _time(line: bytes) -> int:
    """The `time` of a history line as the recorder writes it ({"index":I,"time":T,...})."""
    p = line.index(b'"time":') + 7
    return int(line[p:line.index(b",", p)])


def _lines(f: IO[bytes]) -> Iterator[bytes]:
    """The complete lines of a history file (a truncated last line is dropped, as readers do)."""
    for line in f:
        if line.endswith(b"\n"):
            yield line


def merge_histories(paths: list[Path], out: Path) -> int:
    """Merge history files `paths` (each in time order, as one HistoryWriter writes them) into
    `out` by `time` (ties: the earlier file of `paths` first, each file's own order kept),
    `index` numbered again 0, 1, 2 ... (checkers/HISTORY.md). Streaming: memory is one line
    per file and a write buffer. Returns the number of lines written. Raises ValueError on a
    line that is not the recorder's ({"index":I,"time":T,...}), OSError on I/O."""
    files = [open(p, "rb") for p in paths]
    n = 0
    try:
        with open(out, "wb") as w:
            buf: list[bytes] = []
            for line in heapq.merge(*(_lines(f) for f in files), key=_time):
                if not line.startswith(b'{"index":'):
                    raise ValueError(f"not a history line: {line[:80]!r}")
                buf.append(b'{"index":%d' % n + line[line.index(b","):])
                n += 1
                if len(buf) >= 8192:
                    w.writelines(buf)
                    buf.clear()
            w.writelines(buf)
            w.flush()
            os.fsync(w.fileno())
    finally:
        for f in files:
            f.close()
    return n


def merge_shards(run_dir: Path) -> bool:
    """If the run in `run_dir` wrote load shards (logs/shards/load-*.jsonl), merge them with
    its history.jsonl into history.jsonl (replaced atomically) and remove them. Returns whether
    there was anything to merge. Raises what merge_histories raises (the shards then stay)."""
    shard_dir = Path(run_dir) / SHARDS
    shards = sorted(shard_dir.glob("load-*.jsonl"), key=lambda p: int(p.stem.split("-")[1])) \
        if shard_dir.is_dir() else []
    if not shards:
        return False
    history = Path(run_dir) / "history.jsonl"
    merged = shard_dir / "merged.jsonl"
    merge_histories([history, *shards], merged)
    os.replace(merged, history)
    shutil.rmtree(shard_dir)
    return True


# --- the load process -------------------------------------------------------------------------

class _Endpoints:
    """What a source's connect() asks of a Deployment, for the `load` group only."""

    def __init__(self, endpoints: dict[str, str]) -> None:
        self._e = endpoints

    def kafka_bootstrap(self, group: str | None = None) -> str:
        return self._e["kafka"]

    def redis_url(self, group: str | None = None) -> str:
        return self._e["redis"]

    def postgres_dsn(self, group: str | None = None) -> str:
        return self._e["postgres"]


class _Commands(threading.Thread):
    """Reads the parent's commands from stdin; end of file = stop, and finish at once."""

    def __init__(self) -> None:
        super().__init__(name="commands", daemon=True)
        self.go, self.stop, self.finish = threading.Event(), threading.Event(), threading.Event()
        self.finish_timeout = 1.0
        self.duration = 0.0
        self.eof = False

    def run(self) -> None:
        for raw in sys.stdin.buffer:
            word, _, arg = raw.decode().strip().partition(" ")
            if word == "go":
                self.duration = float(arg)
                self.go.set()
            elif word == "stop":
                self.stop.set()
            elif word == "finish":
                self.finish_timeout = float(arg)
                self.stop.set()
                self.finish.set()
        self.eof = True
        self.stop.set()
        self.finish.set()
        self.go.set()


_say_lock = threading.Lock()


def _say(msg: dict[str, Any]) -> None:
    with _say_lock:
        try:
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass  # the parent is gone: stdin's end stops us


def _die_with_parent() -> None:
    """SIGTERM when the thread that spawned us dies (Linux prctl PR_SET_PDEATHSIG = 1)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before the prctl
        sys.exit(1)


def load_process(config: dict[str, Any]) -> None:
    """One load process (module docstring): connect, say ready, load on `go` for the plan's
    duration or until `stop`, finish on `finish T`, close the shard."""
    from onceproof.plan import SourceFormat
    from onceproof.sources import make_source

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    commands = _Commands()
    commands.start()
    fmt = SourceFormat.model_validate(config["format"]).compiled if config["format"] is not None else None
    source = make_source(config["source"], cast(Any, _Endpoints(config["endpoints"])), config["partitions"], fmt)
    source.connect()
    history = HistoryWriter(Path(config["shard"]))
    history.t0 = config["t0"]
    workload = Workload(source, history, rate=config["rate"], keys=config["keys"], seed=config["seed"],
                        payload_bytes=config["payload_bytes"], share=(config["i"], config["n"]))
    try:
        _say({"ready": True})
        commands.go.wait()
        if commands.eof:
            return
        done = threading.Event()

        def report() -> None:
            s = workload.stats
            while not done.wait(REPORT_S):
                _say({"sent": s.sent, "ok": s.ok, "fail": s.fail, "info": s.info})

        threading.Thread(target=report, name="report", daemon=True).start()
        workload.run(commands.duration, commands.stop)
        s = workload.stats
        _say({"ran": True, "sent": s.sent, "ok": s.ok, "fail": s.fail, "info": s.info})
        commands.finish.wait()
        workload.finish(commands.finish_timeout)
        done.set()
        _say({"finished": True, "sent": s.sent, "ok": s.ok, "fail": s.fail, "info": s.info})
    finally:
        source.release()
        history.close()


def main() -> None:
    """`python -m onceproof.loadprocs CONFIG`: one load process (the harness spawns it);
    `python -m onceproof.loadprocs --merge RUN_DIR`: merge the shards a harness killed with
    SIGKILL left in RUN_DIR/logs/shards into its history.jsonl (then `onceproof check` it)."""
    if len(sys.argv) == 3 and sys.argv[1] == "--merge":
        try:
            merged = merge_shards(Path(sys.argv[2]))
        except (OSError, ValueError) as e:
            print(f"onceproof.loadprocs --merge {sys.argv[2]}: {e}", file=sys.stderr)
            sys.exit(2)
        print(f"{sys.argv[2]}: " + ("shards merged into history.jsonl" if merged else "no shards to merge"))
        return
    try:
        load_process(json.loads(sys.argv[1]))
    except Exception:  # noqa: BLE001 - the parent reports our exit code and last log line
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    os._exit(0)  # the client library's threads are not waited for


if __name__ == "__main__":
    main()
