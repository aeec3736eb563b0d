"""A deadline for one blocking PostgreSQL call: when it passes, the connection's socket is shut
down under the call, which then fails with a psycopg error instead of hanging.

A frozen server (SIGSTOP, a `pause` fault) or a proxy that swallows everything (a partition)
never answers and never closes, and libpq then waits for ever: neither psycopg's timeouts nor
a statement_timeout (the server is not running) help. Used by the harness's sink reads
(`harness/sinks.py`) and by the reference pipelines (`targets/pipelines/common.py`), which
may import `targets/` only.
"""
from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from typing import Any


class SocketDeadline:
    """`with SocketDeadline(conn, timeout_s):` shuts `conn`'s socket down (both directions) if the
    block still runs after `timeout_s` seconds. `conn`: a psycopg Connection (anything with
    `fileno()`). `on_shut`: called after the socket was shut down (e.g. to log it). `fired`:
    whether the deadline passed. Errors while shutting down (the connection already closed)
    are ignored; the block's own error (a psycopg OperationalError) is the caller's to handle."""

    def __init__(self, conn: Any, timeout_s: float, on_shut: Callable[[], None] | None = None) -> None:
        self.conn, self.timeout_s, self.on_shut = conn, timeout_s, on_shut
        self.timer: threading.Timer | None = None
        self.fired = False

    def _fire(self) -> None:
        self.fired = True
        try:
            s = socket.socket(fileno=os.dup(self.conn.fileno()))
            try:
                s.shutdown(socket.SHUT_RDWR)
            finally:
                s.close()
            if self.on_shut is not None:
                self.on_shut()
        except Exception:  # noqa: BLE001 - closed meanwhile: nothing left to unblock
            pass

    def __enter__(self) -> SocketDeadline:
        self.timer = threading.Timer(self.timeout_s, self._fire)
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.timer is not None:
            self.timer.cancel()
