"""The nemesis: applies and heals faults, on time, and writes each step into the history as
operations of the process `nemesis` (checkers/HISTORY.md):

    invoke apply {fault, kind, targets, ...params}  ->  ok {... what it did} | fail | info
    invoke heal  {fault, kind, targets}             ->  ok | fail | info

`fail` = certainly nothing changed; `info` = unknown (it may be half applied: it stays
active, and heal_all tries again). `heal_all()` heals whatever is active, last applied first;
it never raises, and `guard()` makes sure it runs at the end of a block, on an exception,
on SIGINT / SIGTERM and at interpreter exit: for a nemesis used on its own. The run engine
does not use guard(): it owns a run's signal handlers (harness/stages.py `interrupts`) and
heals when the nemesis's scope ends (`nemesis_for`)."""
from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
from typing import Any, Iterator, Protocol

from onceproof.faults.base import Context, Fault, FaultError, raise_priority
from onceproof.faults.schedule import Step, make_fault

SPIN_S = 0.002  # sleep until this close to a deadline, then spin: Event.wait overshoots by ~0.1-1 ms


class HistoryLike(Protocol):
    def record(self, process: str | int, type: str, f: str, value: Any = None) -> int: ...


def sleep_until(deadline: float, *stops: threading.Event) -> bool:
    """Sleep until time.monotonic() >= deadline; False as soon as one of `stops` is set."""
    while True:
        if any(s.is_set() for s in stops):
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        if remaining > SPIN_S:
            nap = min(remaining - SPIN_S, 0.05)
            if stops:
                stops[0].wait(nap)
            else:
                time.sleep(nap)


class Nemesis:
    def __init__(self, context: Context, history: HistoryLike, process: str = "nemesis",
                 realtime: bool = True) -> None:
        self.context = context
        self.realtime = realtime
        self.priority = "normal"
        self.history = history
        self.process = process
        self._active: list[Fault] = []
        self._lock = threading.RLock()
        self._ids = 0
        self._workers: list[threading.Thread] = []
        self._applied: dict[str, threading.Event] = {}  # set once a fault's apply is recorded
        self._run_thread: threading.Thread | None = None
        self._run_stop: threading.Event | None = None
        self.errors: list[str] = []

    # --- one fault ------------------------------------------------------------------
    def next_id(self) -> str:
        with self._lock:
            self._ids += 1
            return f"f{self._ids}"

    def make(self, step: Step) -> Fault:
        return make_fault(step, self.context, self.next_id())

    def active(self) -> list[Fault]:
        """Faults applied and not healed yet, in the order they were applied."""
        with self._lock:
            return list(self._active)

    def _record(self, type_: str, f: str, value: dict[str, Any]) -> None:
        try:
            self.history.record(self.process, type_, f, value)
        except Exception as e:  # noqa: BLE001 - a closed history must not stop a heal
            self.errors.append(f"history: {e}")

    def apply(self, fault: Fault) -> bool:
        """Apply a fault and record it. True if it is applied (ok), False otherwise."""
        with self._lock:
            if fault in self._active:
                return True
            self._active.append(fault)  # before acting: a signal during apply must heal it too
            done = self._applied[fault.id] = threading.Event()
        try:
            self._record("invoke", "apply", fault.describe())
            try:
                fault.apply()
            except Exception as e:  # noqa: BLE001 - every outcome is recorded, none escapes the nemesis
                certain = isinstance(e, FaultError) and e.certain and not fault.applied
                self._record("fail" if certain else "info", "apply", {**fault.describe(), "error": str(e)})
                if certain:
                    with self._lock:
                        self._active.remove(fault)
                self.errors.append(f"apply {fault.id} {fault.kind}: {e}")
                return False
            self._record("ok", "apply", fault.describe())
            return True
        finally:
            done.set()

    def heal(self, fault: Fault, timeout: float = 120.0) -> bool:
        """Heal a fault (no-op if it is not active) and record it. True if healed."""
        with self._lock:
            if fault not in self._active:
                return True
            applying = self._applied.get(fault.id)
        if applying is not None:
            # a heal due while its apply still runs (a slow one, on a busy machine) waits for it,
            # so that the history reads apply invoke, apply ok, heal invoke, heal ok
            applying.wait(timeout)
        value = {"fault": fault.id, "kind": fault.kind, "targets": list(fault.targets)}
        self._record("invoke", "heal", value)
        try:
            fault.heal()
        except Exception as e:  # noqa: BLE001
            certain = isinstance(e, FaultError) and e.certain
            self._record("fail" if certain else "info", "heal", {**value, "error": str(e)})
            self.errors.append(f"heal {fault.id} {fault.kind}: {e}")
            return False
        with self._lock:
            if fault in self._active:
                self._active.remove(fault)
        details = {k: v for k, v in fault.details.items() if k in ("started", "offsets", "flips", "proxies")}
        self._record("ok", "heal", {**value, **details})
        return True

    def heal_all(self, timeout: float = 120.0) -> list[str]:
        """Stop the schedule, then heal every active fault, last applied first. Never raises;
        returns the errors it met (also in the history)."""
        errors: list[str] = []
        try:
            self.stop(timeout=min(timeout, 10.0))
            for fault in reversed(self.active()):
                try:
                    if not self.heal(fault, timeout=5.0):
                        errors.append(f"{fault.id} {fault.kind}: heal failed")
                except BaseException as e:  # noqa: BLE001 - keep healing the others
                    errors.append(f"{fault.id} {fault.kind}: {e}")
        except BaseException as e:  # noqa: BLE001 - heal_all never raises
            errors.append(str(e))
        return errors

    def _flush(self) -> None:
        flush = getattr(self.history, "flush", None)
        if callable(flush):
            try:
                flush()
            except Exception as e:  # noqa: BLE001
                self.errors.append(f"history flush: {e}")

    # --- a schedule -----------------------------------------------------------------
    def run(self, schedule: list[Step], t0_monotonic: float, stop_event: threading.Event | None = None,
            block: bool = False) -> threading.Thread:
        """Apply and heal `schedule` on time (step times are seconds after t0_monotonic) in a
        thread of its own. Faults whose apply or heal may take seconds (node starts) run in
        worker threads so that they never delay the next step."""
        halt = threading.Event()  # ours: set by stop() / heal_all(); the caller's stop_event stays theirs
        stops = (halt,) if stop_event is None else (halt, stop_event)
        faults = [self.make(step) for step in schedule]  # resolved up front, in order: deterministic
        events: list[tuple[float, int, int, str]] = []
        for i, (step, fault) in enumerate(zip(schedule, faults)):
            events.append((step.at_s, 1, i, "apply"))
            if step.for_s is not None:
                events.append((step.at_s + step.for_s, 0, i, "heal"))  # heals first at equal times
        events.sort()
        self._run_stop = halt
        self._run_thread = threading.Thread(target=self._run, args=(events, faults, t0_monotonic, stops),
                                            name="nemesis", daemon=True)
        self._run_thread.start()
        if block:
            self._run_thread.join()
        return self._run_thread

    def _run(self, events: list[tuple[float, int, int, str]], faults: list[Fault], t0: float,
             stops: tuple[threading.Event, ...]) -> None:
        if self.realtime:
            self.priority = raise_priority()
            self._raise_proxy_priority()
        for at_s, _, i, what in events:
            if not sleep_until(t0 + at_s, *stops):
                return
            fault = faults[i]
            if fault.slow or (what == "apply" and fault.instant):
                worker = threading.Thread(target=self._work, args=(fault, what), name=f"nemesis-{fault.id}",
                                          daemon=True)
                with self._lock:
                    self._workers = [w for w in self._workers if w.is_alive()] + [worker]
                worker.start()
            else:
                self._do(fault, what)

    def _raise_proxy_priority(self) -> None:
        """A network fault takes effect when Toxiproxy handles the API call: on a loaded machine
        its threads wait for a CPU like any other. Nice -10 for its whole process group (every
        thread: PRIO_PGRP reaches all tasks of the group; the proxy is a group of its own)."""
        pid = self.context.toxiproxy_pid
        if not pid:
            return
        try:
            os.setpriority(os.PRIO_PGRP, os.getpgid(pid), -10)
        except OSError:
            pass

    def _work(self, fault: Fault, what: str) -> None:
        if self.realtime:
            raise_priority()  # a worker at normal priority holding the GIL would delay the clock
        self._do(fault, what)

    def _do(self, fault: Fault, what: str) -> None:
        try:
            if what == "apply":
                if self.apply(fault) and fault.instant:
                    self.heal(fault)
            else:
                self.heal(fault)
        except Exception as e:  # noqa: BLE001 - recorded already; the schedule goes on
            self.errors.append(f"{what} {fault.id}: {e}")

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the schedule (no further steps) and wait for steps in progress."""
        if self._run_stop is not None:
            self._run_stop.set()
        t = self._run_thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            if w is not threading.current_thread():
                w.join(max(0.0, deadline - time.monotonic()))

    def wait(self, timeout: float | None = None) -> None:
        """Until the schedule has run to its end (and its slow steps finished)."""
        if self._run_thread is not None:
            self._run_thread.join(timeout)
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.join(timeout)

    # --- the end of a run, whatever happens -----------------------------------------
    @contextlib.contextmanager
    def guard(self, signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator["Nemesis"]:
        """heal_all when the block ends (normally or by an exception), on SIGINT / SIGTERM
        (then the previous handler runs: KeyboardInterrupt, exit...) and at interpreter exit."""
        previous: dict[int, Any] = {}

        def on_signal(signum: int, frame: Any) -> None:
            # heal from another thread: the signal may have interrupted this one while it held
            # a lock that healing needs (the history's, a fault's)
            healer = threading.Thread(target=self.heal_all, name="nemesis-heal-all", daemon=True)
            healer.start()
            healer.join(60)
            self._flush()  # the process may end right below: the heal records must be on disk
            prev = previous.get(signum)
            if callable(prev):
                prev(signum, frame)
            elif prev == signal.SIG_IGN:
                return
            else:
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)

        if threading.current_thread() is threading.main_thread():
            for s in signals:
                previous[s] = signal.getsignal(s)
                signal.signal(s, on_signal)
        atexit.register(self.heal_all)
        try:
            yield self
        finally:
            try:
                self.heal_all()
            finally:
                atexit.unregister(self.heal_all)
                for s, prev in previous.items():
                    signal.signal(s, prev)
