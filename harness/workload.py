"""The load generator: uniquely identified events at the plan's rate, open loop.

Open loop means the schedule does not wait for the system: every tick sends as many events
as the elapsed time calls for, so a stalled pipeline or target cannot slow the load down and
hide behind it. Keys are drawn with the plan's seed; `seq` counts per key from 0."""
from __future__ import annotations

import random
import string
import threading
import time
from dataclasses import dataclass, field

from onceproof.recorder import HistoryWriter
from onceproof.sources import Event, Source

TICK_S = 0.005
MAX_BATCH = 5000
LANDED_FLUSH_S = 0.25  # `landed` records are batched: one per partition at most this often
LANDED_MAX = 5000


@dataclass
class LoadStats:
    asked_rate: float
    sent: int = 0
    ok: int = 0
    fail: int = 0
    info: int = 0
    started: float = 0.0
    ended: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def achieved_rate(self) -> float:
        span = (self.ended or time.monotonic()) - self.started
        return self.sent / span if span > 0 else 0.0

    def as_dict(self) -> dict:
        return {"asked_rate": self.asked_rate, "achieved_rate": round(self.achieved_rate, 1), "sent": self.sent,
                "ok": self.ok, "fail": self.fail, "info": self.info,
                "duration_s": round((self.ended or time.monotonic()) - self.started, 3)}


class EventFactory:
    """Events (id, key, seq, payload): keys drawn with `seed`, `seq` counting per key from 0.
    `share` (i, n): the share of load process i of n (`workload.processes`): only the keys
    k{j} with j % n == i, and ids e{m * n + i}, so the n shares are disjoint, every key's seq
    comes from one process, and (1 process) the events are exactly those of share (0, 1)."""

    def __init__(self, seed: int, keys: int, payload_bytes: int, share: tuple[int, int] = (0, 1)) -> None:
        i, n = share
        self.rng = random.Random(seed if n == 1 else f"{seed}/{i}/{n}")
        self.keys = [f"k{j}" for j in range(i, keys, n)]
        self.seq = [0] * len(self.keys)
        self.n = 0
        self.stride, self.offset = n, i
        alphabet = string.ascii_letters + string.digits
        self.payloads = ["".join(self.rng.choices(alphabet, k=payload_bytes)) for _ in range(256)]

    def make(self, count: int) -> list[Event]:
        out = []
        rand = self.rng.random
        nkeys = len(self.keys)
        stride, offset = self.stride, self.offset
        for _ in range(count):
            k = int(rand() * nkeys)
            seq = self.seq[k]
            self.seq[k] = seq + 1
            out.append((f"e{self.n * stride + offset}", self.keys[k], seq, self.payloads[self.n & 255]))
            self.n += 1
        return out


class Workload:
    def __init__(self, source: Source, history: HistoryWriter, *, rate: float, keys: int, seed: int,
                 payload_bytes: int = 16, process: str = "load", share: tuple[int, int] = (0, 1)) -> None:
        self.source = source
        self.history = history
        self.rate = rate
        self.factory = EventFactory(seed, keys, payload_bytes, share)
        self.process = process
        self.stats = LoadStats(asked_rate=rate)
        self._landed_buf: dict[int, list[tuple[str, int | str]]] = {}
        self._landed_n = 0
        self._landed_at = time.monotonic()
        source.on_landed = self._landed

    def _landed(self, partition: int, events: list[tuple[str, int | str]]) -> None:
        """Where acknowledged events landed in the source: buffered, then one `landed` record
        per partition at most every LANDED_FLUSH_S (checkers/HISTORY.md); the checker proves
        `lost` with them."""
        self._landed_buf.setdefault(partition, []).extend(events)
        self._landed_n += len(events)
        if self._landed_n >= LANDED_MAX or time.monotonic() - self._landed_at >= LANDED_FLUSH_S:
            self._flush_landed()

    def _flush_landed(self) -> None:
        buf, self._landed_buf, self._landed_n = self._landed_buf, {}, 0
        self._landed_at = time.monotonic()
        for partition, events in sorted(buf.items()):
            self.history.record(self.process, "info", "landed", {"partition": partition, "events": events})

    def _complete(self, events: list[tuple[str, str, int]], outcome: str) -> None:
        self.history.record_sends(self.process, outcome, events)
        with self.stats.lock:
            if outcome == "ok":
                self.stats.ok += len(events)
            elif outcome == "fail":
                self.stats.fail += len(events)
            else:
                self.stats.info += len(events)

    def run(self, duration_s: float, stop: threading.Event) -> LoadStats:
        """Send for duration_s (or until stop is set); returns when the load ends (sends
        still in flight are completed by finish())."""
        self.stats.started = start = time.monotonic()
        end = start + duration_s
        p = self.process
        while not stop.is_set():
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * self.rate) - self.stats.sent
            if due > 0:
                batch = self.factory.make(min(due, MAX_BATCH))
                self.history.record_sends(p, "invoke", batch)  # type: ignore[arg-type]
                self.stats.sent += len(batch)
                self.source.send(batch, self._complete)
            else:
                self.source.poll(self._complete)
                if self._landed_n and time.monotonic() - self._landed_at >= LANDED_FLUSH_S:
                    self._flush_landed()
                wait = (self.stats.sent + 1) / self.rate - (time.monotonic() - start)
                time.sleep(min(max(wait, 0.0005), TICK_S))
        self.stats.ended = time.monotonic()
        return self.stats

    def finish(self, timeout: float) -> None:
        """Wait for outstanding sends; the unresolved ones end as info (or fail if never sent)."""
        self.source.close(timeout, self._complete)
        self._flush_landed()
