"""The read workload (`workload.reads`): clients that read the per-key state the pipeline
maintains, through the pipeline's own read endpoint, while the load runs; every read is an
operation of the history (checkers/HISTORY.md, "Reads"), checked by checkers/reads.py.

The read contract (README, "Read workload"): each replica of a plan with `workload.reads` gets
ONCEPROOF_READ_PORT (a free port on 127.0.0.1) and ONCEPROOF_READ_PATH (`primary`, `standby` or
`cache`: where the plan asks it to serve reads from), and answers `GET /read?key=<key>` with
`200 {"value": <the highest seq of the key's events applied, or null>}`, or with a 5xx when it
could not read (a definite failure: it read nothing). The pipeline serves the reads, rather than
the harness reading the store itself, because what is under test is the pipeline's read path:
whether it waits for the standby to replay past the primary's LSN, how it fills its cache.

Each client is a thread with one keep-alive HTTP connection at a time, one read at a time
(Jepsen's single-threaded process), reading at rate/clients per second a key drawn with the
plan's seed, the replicas taken in turn. A read is recorded `invoke` before the request and
`ok` with the value, `fail` on a 5xx/4xx answer, `info` on a timeout or a broken connection
(it may have been served: nobody knows), each with the client's own process name `reader-N`."""
from __future__ import annotations

import contextlib
import http.client
import json
import random
import threading
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any, Protocol


class _History(Protocol):
    def record(self, process: str | int, type: str, f: str, value: Any = None, time_ns: int | None = None) -> int: ...


F_READ = "read"


class ReadClients:
    """`clients` reader threads against the replicas' read endpoints `ports` (127.0.0.1), each
    reading one of `keys` at `rate`/clients per second, a read unanswered after `timeout` s an
    `info`. start() / stop() (stop joins the threads, at most timeout + 1 s each)."""

    def __init__(self, history: _History, ports: list[int], keys: list[str], *, rate: float, clients: int,
                 timeout: float, seed: int) -> None:
        if not ports or not keys:
            raise ValueError("reads need at least one replica's read port and one key")
        self.history, self.ports, self.keys = history, ports, keys
        self.interval = clients / rate
        self.timeout, self.seed = timeout, seed
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"reader-{i}", daemon=True)
                         for i in range(clients)]
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self._lock = threading.Lock()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(self.timeout + 1.0)

    def _run(self, i: int) -> None:
        rng = random.Random(f"{self.seed}/reads/{i}")
        name = f"reader-{i}"
        conn: http.client.HTTPConnection | None = None
        port_i = i
        next_t = time.monotonic() + rng.uniform(0, self.interval)
        while not self._stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            next_t = max(next_t + self.interval, time.monotonic() - self.interval)
            key = self.keys[int(rng.random() * len(self.keys))]
            port = self.ports[port_i % len(self.ports)]
            port_i += 1
            if conn is not None and conn.port != port:
                conn.close()
                conn = None
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=self.timeout)
            outcome, value = self._read(name, conn, key)
            if outcome != "ok":
                conn.close()
                conn = None
            with self._lock:
                self.counts[outcome] += 1
            self.history.record(name, outcome, F_READ, value)
        if conn is not None:
            conn.close()

    def _read(self, name: str, conn: http.client.HTTPConnection, key: str) -> tuple[str, dict[str, Any]]:
        """One read: (outcome, the completion record's value). The invoke is recorded here,
        right before the request leaves."""
        self.history.record(name, "invoke", F_READ, {"key": key})
        deadline = time.monotonic() + self.timeout
        try:
            conn.request("GET", "/read?" + urllib.parse.urlencode({"key": key}))
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as e:
            return "info", {"key": key, "error": f"{type(e).__name__}: {e}"[:200]}
        if time.monotonic() > deadline:
            return "info", {"key": key, "error": "answered after the timeout"}
        if resp.status != 200:
            return "fail", {"key": key, "error": f"HTTP {resp.status}: {body[:200].decode(errors='replace')}"}
        try:
            got = json.loads(body)["value"]
        except (ValueError, KeyError, TypeError):
            return "info", {"key": key, "broken": True,
                            "error": f'not a read answer (expected {{"value": <seq or null>}}): {body[:200]!r}'}
        if got is not None and (not isinstance(got, int) or isinstance(got, bool) or got < 0):
            return "info", {"key": key, "broken": True, "error": f"not a seq (an integer >= 0 or null): {str(got)[:60]!r}"}
        return "ok", {"key": key, "value": got}


@contextlib.contextmanager
def reading(history: _History, ports: list[int], keys: list[str], *, rate: float, clients: int, timeout: float,
            seed: int) -> Iterator[ReadClients]:
    """ReadClients started for the scope, stopped (joined) on the way out."""
    clients_ = ReadClients(history, ports, keys, rate=rate, clients=clients, timeout=timeout, seed=seed)
    clients_.start()
    try:
        yield clients_
    finally:
        clients_.stop()
