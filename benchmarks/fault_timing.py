"""How late does a fault's EFFECT start and stop, compared with its schedule?

For each fault kind, the nemesis runs a schedule of N applications (default 100) against real
targets (Redis behind Toxiproxy, and a `sleep` replica for the process faults), while an
observer watches the effect from outside:

- network faults: a prober pipelines `ECHO <seq>` to Redis through the pipeline proxy every
  ~0.5 ms (reconnecting as fast as it can when the connection breaks). A probe is affected
  when it is never answered (partition, reset, limit-data) or answered late (latency,
  bandwidth, slicer).
- clock faults: `TIME` on a direct connection to Redis, back to back.
- process faults: /proc/<pid>/stat of the replica, polled every ~0.2 ms.

start error = first affected observation - scheduled apply time;
stop error  = first of a run of unaffected observations after the effect - scheduled heal time
(restart: the moment the new process runs - scheduled time, i.e. its downtime).
`nemesis late` is when the nemesis began the step, minus its scheduled time.

Usage: .venv/bin/python benchmarks/fault_timing.py [--n 100] [--kinds latency,kill]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from onceproof.faults.base import Context  # noqa: E402
from onceproof.faults.nemesis import Nemesis  # noqa: E402
from onceproof.faults.schedule import Step, parse_entry  # noqa: E402
from onceproof.targets.deployment import Deployment, TargetsSpec  # noqa: E402
from onceproof.targets.local import LocalRuntime  # noqa: E402
from onceproof.targets.process import CommandNode  # noqa: E402

GOAL_MS = 20.0


# --- what the history sees ------------------------------------------------------------
class TimingHistory:
    def __init__(self) -> None:
        self.invokes: dict[str, float] = {}

    def record(self, process: str | int, type: str, f: str, value: Any = None) -> int:  # noqa: A002
        if type == "invoke" and f == "apply":
            self.invokes[value["fault"]] = time.monotonic()
        return 0


# --- observers: a list of samples (t_seen, affected, t_released) ----------------------
@dataclass
class Samples:
    rows: list[tuple[float, bool, float]] = field(default_factory=list)


class EchoProber:
    """Pipelined ECHO probes to Redis at host:port; each probe: [send_t, recv_t or None]."""

    def __init__(self, host: str, port: int, interval: float = 0.0005) -> None:
        self.addr = (host, port)
        self.interval = interval
        self.sent: dict[int, float] = {}
        self.received: dict[int, float] = {}
        self._stop = threading.Event()
        self._seq = 0
        self._sock: socket.socket | None = None
        self._writer = threading.Thread(target=self._write, daemon=True)

    def start(self) -> None:
        self._writer.start()

    def stop(self) -> None:
        self._stop.set()
        self._writer.join()

    def _connect(self) -> socket.socket | None:
        try:
            s = socket.create_connection(self.addr, timeout=0.05)
        except OSError:
            return None
        s.settimeout(None)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=self._read, args=(s,), daemon=True).start()
        return s

    def _write(self) -> None:
        sock: socket.socket | None = None
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += self.interval
            self._seq += 1
            seq = self._seq
            now = time.monotonic()
            self.sent[seq] = now
            if sock is None:
                sock = self._connect()  # a failed connect counts as an unanswered probe
            if sock is not None:
                try:
                    sock.sendall(b"ECHO %d\r\n" % seq)
                except OSError:
                    sock.close()
                    sock = None
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()
        if sock is not None:
            sock.close()

    def _read(self, sock: socket.socket) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.monotonic()
            buf += data
            lines = buf.split(b"\r\n")
            buf = lines.pop()
            for line in lines:
                if line and line[:1] not in (b"$", b"-", b"+"):
                    try:
                        self.received.setdefault(int(line), now)
                    except ValueError:
                        pass

    def samples(self, delay_threshold: float | None) -> Samples:
        out = Samples()
        for seq, s in sorted(self.sent.items()):
            r = self.received.get(seq)
            if delay_threshold is None:  # broken connection kinds: never answered = affected
                out.rows.append((s, r is None, s))
            elif r is not None:  # slow kinds: answered late = affected; released when received
                out.rows.append((s, r - s >= delay_threshold, r))
        return out


class ClockProber:
    """Redis TIME back to back on a direct connection: the server's clock minus ours."""

    def __init__(self, host: str, port: int, threshold: float) -> None:
        self.addr = (host, port)
        self.threshold = threshold
        self.rows: list[tuple[float, bool, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def _run(self) -> None:
        s = socket.create_connection(self.addr)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        f = s.makefile("rb")
        while not self._stop.is_set():
            t1 = time.monotonic()
            s.sendall(b"TIME\r\n")
            f.readline()
            f.readline()
            sec = int(f.readline())
            f.readline()
            usec = int(f.readline())
            t2 = time.monotonic()
            wall = time.time()
            skew = sec + usec / 1e6 - wall + (t2 - t1) / 2
            mid = (t1 + t2) / 2
            self.rows.append((mid, abs(skew) > self.threshold, mid))
            time.sleep(0.0002)
        s.close()

    def samples(self, _: Any = None) -> Samples:
        return Samples(list(self.rows))


class ProcessProber:
    """The replica's process state: affected = `dead` (no live process) or `stopped`. It runs
    in another process, so it learns the replica's current pid from the run registry (which
    the node rewrites whenever it starts a process)."""

    def __init__(self, registry: str, name: str, what: str) -> None:
        self.registry, self.name, self.what = registry, name, what
        self.rows: list[tuple[float, bool, float]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._t.start()

    def stop(self) -> None:
        self._stop.set()
        self._t.join()

    def _pid(self) -> int:
        try:
            with open(self.registry) as f:
                return int(json.load(f)["processes"][self.name]["pid"])
        except (OSError, ValueError, KeyError):
            return -1

    def _run(self) -> None:
        pid = self._pid()
        while not self._stop.is_set():
            st = _state(pid)
            if st in (b"X", b"Z"):
                newer = self._pid()
                if newer != pid:
                    pid, st = newer, _state(newer)
            now = time.monotonic()
            affected = st in (b"X", b"Z") if self.what == "dead" else st in (b"T", b"t")
            self.rows.append((now, affected, now))
            time.sleep(0.0002)

    def samples(self, _: Any = None) -> Samples:
        return Samples(list(self.rows))


def _state(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b"X"


def _prober_main(observe: str, cfg: dict[str, Any], conn: Any) -> None:
    """Runs in a process of its own: the probes never compete with the nemesis for the GIL.
    The instrument gets a real-time priority too (if allowed): on a loaded machine a probe
    that waits for a CPU would be counted as the fault's lateness."""
    try:
        os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(5))
    except OSError:
        pass
    prober: Any
    if observe.startswith("echo"):
        prober = EchoProber(cfg["host"], cfg["port"])
    elif observe == "clock":
        prober = ClockProber(cfg["host"], cfg["port"], cfg["threshold"])
    else:
        prober = ProcessProber(cfg["registry"], cfg["name"], observe)
    prober.start()
    conn.send("started")
    conn.recv()  # stop
    prober.stop()
    conn.send(prober.samples(cfg.get("delay")).rows)


class ProbeProcess:
    def __init__(self, observe: str, cfg: dict[str, Any]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_prober_main, args=(observe, cfg, child), daemon=True)
        self.proc.start()
        assert self.conn.recv() == "started"

    def stop(self) -> list[tuple[float, bool, float]]:
        self.conn.send("stop")
        rows = self.conn.recv()
        self.proc.join(10)
        return rows


# --- one kind -------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    entry: dict[str, Any]  # the plan entry (without `at`)
    observe: str  # echo | echo-slow | clock | dead | stopped
    threshold: float = 0.0
    instant: bool = False


def cases() -> list[Case]:
    net = {"target": "redis", "from": "pipeline"}
    return [
        Case("kill", {"kill": "pipeline-0"}, "dead"),
        Case("restart", {"restart": "pipeline-0"}, "dead", instant=True),
        Case("pause", {"pause": "pipeline-0"}, "stopped"),
        Case("partition (blackhole)", {"partition": {**net, "style": "blackhole"}}, "echo"),
        Case("partition (refuse)", {"partition": {**net, "style": "refuse"}}, "echo"),
        Case("latency 20ms", {"latency": {**net, "ms": 20}}, "echo-slow", 0.010),
        Case("bandwidth 1KB/s", {"bandwidth": {**net, "rate": 1}}, "echo-slow", 0.005),
        Case("reset", {"reset": net}, "echo"),
        Case("slicer", {"slicer": {**net, "size": 2, "delay": "2ms"}}, "echo-slow", 0.004),
        Case("limit-data", {"limit-data": {**net, "bytes": 1}}, "echo"),
        Case("clock-skew", {"clock-skew": {"target": "redis", "offset": "5s"}}, "clock", 2.5),
        Case("clock-strobe", {"clock-strobe": {"target": "redis", "offset": "5s", "period": "15ms"}}, "clock", 2.5),
    ]


def _settled(window: list[tuple[float, bool, float]], hit: list[int], last: bool, run: int = 10) -> float | None:
    """When the effect stopped: the first observation after the first affected one that starts
    a run of `run` unaffected observations (so a probe that a busy machine delayed a few ms
    later is not taken for the fault). A strobe is unaffected half of the time while it is
    on: for it, after the last affected observation."""
    start = hit[-1] + 1 if last else hit[0] + 1
    for j in range(start, len(window)):
        chunk = window[j:j + run]
        if len(chunk) == run and not any(r[1] for r in chunk):
            return min(r[2] for r in chunk)
    return None


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def measure(case: Case, d: Deployment, replica: CommandNode, n: int, for_s: float, gap_s: float) -> dict[str, Any]:
    context = Context.from_deployment(d, [replica], seed=1)
    history = TimingHistory()
    nemesis = Nemesis(context, history)
    steps: list[Step] = []
    lead = 0.3
    for i in range(n):
        entry = {"at": round(lead + i * gap_s, 6), **case.entry}
        if not case.instant:
            entry["for"] = for_s
        if case.name == "kill":
            entry = {"at": entry["at"], "kill": "pipeline-0", "restart-after": for_s}
        parsed = parse_entry(entry)
        assert isinstance(parsed, list)
        steps += parsed
    cfg: dict[str, Any] = {"delay": case.threshold if case.observe == "echo-slow" else None}
    if case.observe.startswith("echo"):
        cfg.update(host="127.0.0.1", port=d.proxies["pipeline-redis"].listen)
    elif case.observe == "clock":
        assert d.redis is not None
        cfg.update(host=d.redis.host, port=d.redis.port, threshold=case.threshold)
    else:
        cfg.update(registry=str(replica.runtime.entry.path), name=replica.name)
    prober = ProbeProcess(case.observe, cfg)
    time.sleep(0.1)
    t0 = time.monotonic()
    nemesis.run(steps, t0)
    time.sleep(lead + n * gap_s + 0.2)
    nemesis.wait(30)
    nemesis.heal_all()
    time.sleep(0.05)
    rows = prober.stop()
    starts, stops, late, missed = [], [], [], 0
    for i, step in enumerate(steps):
        at = t0 + step.at_s
        heal = at + (step.for_s or 0.0)
        window = [r for r in rows if at - 0.25 * gap_s <= r[0] < at + (step.for_s or 0.0) + 0.6 * gap_s]
        hit = [j for j, r in enumerate(window) if r[1]]
        if not hit:
            missed += 1
            print(f"    {case.name}: no effect seen for application {i} (at {step.at_s:.3f}s, "
                  f"{len(window)} observations)", file=sys.stderr)
            continue
        starts.append((window[hit[0]][0] - at) * 1000)
        off = _settled(window, hit, last=case.name == "clock-strobe")
        if off is not None:
            stops.append((off - heal) * 1000)
        fid = f"f{i + 1}"
        if fid in history.invokes:
            late.append((history.invokes[fid] - at) * 1000)
    return {"kind": case.name, "n": n, "missed": missed, "starts": starts, "stops": stops, "late": late}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="applications per kind (default 100)")
    ap.add_argument("--for-ms", type=float, default=40.0, help="how long each application lasts")
    ap.add_argument("--gap-ms", type=float, default=120.0, help="time between applications")
    ap.add_argument("--kinds", default="", help="comma-separated subset (names as in the table, prefix match)")
    args = ap.parse_args(argv)
    chosen = [c for c in cases() if not args.kinds or any(c.name.startswith(k) for k in args.kinds.split(","))]
    runtime = LocalRuntime()
    d = Deployment.create(runtime, TargetsSpec(redis="none", groups=("pipeline",)))
    replica = CommandNode(runtime, "pipeline-0", ["sleep", "100000"], {})
    results = []
    try:
        d.start()
        replica.start()
        for case in chosen:
            print(f"... {case.name}", file=sys.stderr, flush=True)
            results.append(measure(case, d, replica, args.n, args.for_ms / 1000, args.gap_ms / 1000))
    finally:
        replica.stop(timeout=5)
        d.stop()
    print_table(results, args)
    return 0


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    fmt: Callable[[float], str] = lambda x: f"{x:7.2f}"  # noqa: E731
    print(f"\nfault timing: effect vs schedule, ms ({args.n} applications per kind, each {args.for_ms:g} ms, "
          f"every {args.gap_ms:g} ms); goal p99 <= {GOAL_MS:g} ms")
    head = (f"{'kind':<22} {'n':>4} {'miss':>4} | {'start p50':>9} {'p99':>7} {'max':>7} | "
            f"{'stop p50':>8} {'p99':>7} {'max':>7} | {'nemesis late p99':>16} | goal")
    print(head)
    print("-" * len(head))
    for r in results:
        s, e, late = r["starts"], r["stops"], r["late"]
        p99s, p99e = percentile(s, 99), percentile(e, 99)
        ok = "ok" if s and e and p99s <= GOAL_MS and p99e <= GOAL_MS and not r["missed"] else "MISS"
        if r["kind"] == "restart":
            ok += " (stop = downtime)"
        print(f"{r['kind']:<22} {len(s):>4} {r['missed']:>4} | {fmt(percentile(s, 50)):>9} {fmt(p99s)} "
              f"{fmt(max(s) if s else float('nan'))} | {fmt(percentile(e, 50)):>8} {fmt(p99e)} "
              f"{fmt(max(e) if e else float('nan'))} | {fmt(percentile(late, 99)):>16} | {ok}")


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
