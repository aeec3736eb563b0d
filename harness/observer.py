"""The observer: reads the sink while the run goes on and records what it saw, so the
checker can tell when each effect first became visible (latency, premature effects) and
whether a visible effect later vanished (flicker)."""
from __future__ import annotations

import threading
import time
from typing import Callable

from onceproof.recorder import HistoryWriter
from onceproof.sinks import Sink


class Observer:
    def __init__(self, sink: Sink, history: HistoryWriter, interval_s: float = 0.5) -> None:
        self.sink = sink
        self.history = history
        self.interval_s = interval_s
        self.applied = 0  # effects seen so far (rows, duplicates included)
        self.last_change = time.monotonic()
        self.errors = 0
        # a read that can never succeed (MappingError: the plan names a column the sink lacks):
        # the error, and what to call on it (the runner ends the load: every event would be lost)
        self.fatal: Exception | None = None
        self.on_fatal: Callable[[Exception], None] | None = None
        self.last_full = True  # whether the last read was a full one (a re-read of the sink)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def observe_once(self) -> int:
        """One read of the sink, recorded as an `observe` operation. Returns new effects."""
        with self._lock:
            self.history.record("observer", "invoke", "observe", None)
            try:
                events, full = self.sink.read()
                self._check_ids(events)
            except Exception as e:  # noqa: BLE001 - a failed read is a fact, not a crash
                self.errors += 1
                self.history.record("observer", "fail", "observe", {"error": str(e)[:300]})
                from onceproof.pgdecode import MappingError

                if isinstance(e, MappingError) and self.fatal is None:
                    self.fatal = e
                    if self.on_fatal is not None:
                        self.on_fatal(e)
                return 0
            passing = self.sink.passing() if full else []
            if passing:  # seen on the way to the whole content: recorded first (see Sink.passing)
                self.history.record("observer", "ok", "observe", {"full": False, "events": passing})
                self.history.record("observer", "invoke", "observe", None)
            value: dict = {"full": full}
            if events and not full:
                self._visible(value, len(events))
            value["events"] = events  # last: the readers find the events array by its end
            self.history.record("observer", "ok", "observe", value)
            self.last_full = full
            new = len(events) if not full else max(0, len(events) - self.applied)
            self.applied = len(events) if full else self.applied + len(events)
            if events:
                self.last_change = time.monotonic()
            return new

    def _check_ids(self, events: list) -> None:
        """Raise MappingError when an effect read has no event id: the plan's mapping finds none
        where it says the id is (a typo in `json:/oid` ran the whole load, then the check failed
        on "each sink effect must be [id, key, seq, replica]", naming no field)."""
        bad = next((e for e in events if e[0] is None), None)
        if bad is not None:
            from onceproof.pgdecode import MappingError

            raise MappingError(f"{self.sink.id_field}: an effect read from the sink has no event id (read as "
                               f"[id, key, seq, replica] = {bad!r}): the id is not where the plan says it is")

    def _visible(self, value: dict, n: int) -> None:
        """`visible` (checkers/HISTORY.md) from the sink's visibility times: monotonic ns made the
        run's clock, each bounded by now (an effect cannot become visible after the read that saw
        it: a server clock ahead makes no sighting late) and by the run's start (a clock behind
        makes none before it); the checker measures latency to these times."""
        try:
            got = self.sink.visible()
        except Exception:  # noqa: BLE001 - no visibility times: the read's own time stands
            got = None
        if not got or sum(k for k, _ in got[0]) != n:
            return
        now, t0 = self.history.now(), self.history.t0
        runs: list[list[int]] = []
        for k, t in got[0]:
            t = min(max(t - t0, 0), now)
            if runs and runs[-1][1] == t:
                runs[-1][0] += k
            else:
                runs.append([k, t])
        value["visible"], value["visible_from"] = runs, got[1]

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.observe_once()
            spent = time.monotonic() - started
            # a big sink takes longer to read: never spend more than a fifth of the time reading
            # it in full; an incremental read (logical decoding, a stream) costs what is new, and
            # must keep up with the rate: it waits the interval at most
            self._stop.wait(max(self.interval_s, spent * 4) if self.last_full else max(0.0, self.interval_s - spent))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="observer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=60)

    def wait_idle(self, idle_s: float, max_s: float) -> bool:
        """Until nothing new has appeared for idle_s, or max_s passed. True if it went idle."""
        deadline = time.monotonic() + max_s
        self.last_change = max(self.last_change, time.monotonic())  # idle counts from now at the earliest
        while time.monotonic() < deadline:
            if time.monotonic() - self.last_change >= idle_s:
                return True
            time.sleep(min(0.1, idle_s / 5))
        return False

    def final_read(self) -> int:
        with self._lock:
            self.history.record("observer", "invoke", "final-read", None)
            try:
                events = self.sink.final_read()
                self._check_ids(events)
            except Exception as e:  # noqa: BLE001
                self.history.record("observer", "fail", "final-read", {"error": str(e)[:300]})
                raise
            self.history.record("observer", "ok", "final-read", {"full": True, "events": events})
            return len(events)

    def record_state(self, query: str | Callable[[], dict[str, dict[str, int]] | None]) -> None:
        """One `state` record: the declared derived state, from a SQL query on the sink or a
        reader function (harness/mappings.state_reader)."""
        self.history.record("observer", "invoke", "state", None)
        try:
            state = query() if callable(query) else self.sink.state(query)
        except Exception as e:  # noqa: BLE001
            self.history.record("observer", "fail", "state", {"error": str(e)[:300]})
            return
        self.history.record("observer", "ok", "state", state)
