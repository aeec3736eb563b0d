"""The recorder: writes the run's history as it happens, JSON Lines, one operation per line
(checkers/HISTORY.md; `onceproof.checkers.history` reads it back). Records are buffered in memory and written to the file by a
background thread every `flush_s`, so a harness killed with SIGKILL loses at most the last
fraction of a second, and what is on disk always ends at a line boundary or in a truncated
last line that the reader ignores."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson

# One send line of the workload (checkers/HISTORY.md, "The byte shape of send lines"): the
# readers parse lines of exactly this shape in bulk, any other shape one by one (slower).
SEND_TEMPLATE = ('{"index":%d,"time":%d,"process":"%s","type":"%s","f":"send",'
                 '"value":{"id":"%s","key":"%s","seq":%d}}\n')


class HistoryWriter:
    """Appends operations to the history file at `path` (created, or emptied); `flush_s`:
    seconds between writes of the buffer. Thread-safe; a context manager that closes (flushes
    and fsyncs) on exit. The faults room writes through it without importing it
    (`faults/nemesis.py`'s `HistoryLike` protocol: `record`, optional `flush`)."""

    def __init__(self, path: Path, flush_s: float = 0.05) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        self.t0 = time.monotonic_ns()
        self._lock = threading.Lock()
        self._buf: list[bytes] = []
        self._index = 0
        self._closed = False
        self._flush_s = flush_s
        self._wake = threading.Event()
        self._flusher = threading.Thread(target=self._flush_loop, name="history-flush", daemon=True)
        self._flusher.start()

    def now(self) -> int:
        """Nanoseconds since the run started (monotonic)."""
        return time.monotonic_ns() - self.t0

    def record(self, process: str | int, type: str, f: str, value: Any = None, time_ns: int | None = None) -> int:
        """Append one operation; returns its index. Thread-safe."""
        with self._lock:
            index = self._index
            self._index += 1
            t = self.now() if time_ns is None else time_ns
            self._buf.append(orjson.dumps({"index": index, "time": t, "process": process, "type": type,
                                           "f": f, "value": value}) + b"\n")
        return index

    def record_many(self, records: list[tuple[str | int, str, str, Any, int | None]]) -> None:
        """Append several operations under one lock (the workload's hot path)."""
        with self._lock:
            now = self.now()
            for process, type_, f, value, t in records:
                self._buf.append(orjson.dumps({"index": self._index, "time": now if t is None else t,
                                               "process": process, "type": type_, "f": f, "value": value}) + b"\n")
                self._index += 1

    def record_sends(self, process: str, type: str, events: list[tuple[str, str, int]]) -> None:
        """The workload's hot path: `send` operations of events (id, key, seq) whose ids and keys
        are the generator's own (letters and digits only), formatted without building dicts, in
        the byte shape the readers parse in bulk (checkers/HISTORY.md, "The byte shape of send
        lines"; `SEND_TEMPLATE`)."""
        # process and type filled in once (the first two %s), the rest per event
        template = SEND_TEMPLATE.replace("%s", process, 1).replace("%s", type, 1)
        with self._lock:
            now = self.now()
            i = self._index
            self._buf.append("".join([template % (i + n, now, e[0], e[1], e[2])
                                      for n, e in enumerate(events)]).encode())
            self._index = i + len(events)

    def __len__(self) -> int:
        return self._index

    def flush(self) -> None:
        """Write what is buffered now (the background thread does it every `flush_s`)."""
        with self._lock:
            buf, self._buf = self._buf, []
        if buf:
            data = b"".join(buf)
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]

    def _flush_loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_s)
            self._wake.clear()
            try:
                self.flush()
            except OSError:
                return

    def close(self) -> None:
        """Flush, fsync and close the file; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._flusher.join(timeout=5)
        self.flush()
        os.fsync(self._fd)
        os.close(self._fd)

    def __enter__(self) -> "HistoryWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
