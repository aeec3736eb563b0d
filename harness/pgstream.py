"""A logical replication slot read as a stream: `START_REPLICATION SLOT ... LOGICAL` over the
replication protocol (PostgreSQL docs, "Streaming Replication Protocol"; the CopyBoth messages
XLogData 'w', primary keepalive 'k' and standby status update 'r'), with the `pgoutput` plugin.

Why a stream and not `pg_logical_slot_get_binary_changes` calls: each call decodes again from
the slot's restart point (the start of the oldest transaction running when the slot last moved
on), so a busy server decodes much of its WAL many times, and nothing is decoded between two
calls. On a stream the server's walsender decodes the WAL once, continuously, in a process of
its own while we parse (benchmarks/observer.py measures both). And the slot moves on only when
we say so (`confirm`, the end LSN of the last transaction applied): a read cut off by a
deadline, a broken connection or a server crash loses nothing, the server sends again from the
last position confirmed (and what it sends twice is dropped by the follower by commit LSN,
harness/pgdecode.py).

The messages are drained from libpq without blocking by the compiled library
(harness/pgoutput_scan.c, `po_stream_*`: one call takes every message buffered, through the
PQgetCopyData of the libpq psycopg loaded), or by psycopg's `PGconn.get_copy_data` when the
library is not built. `take()` hands over whole transactions only (up to the last Commit
received); the rest waits for the next call.

Errors: every failure (connecting, the server ending the stream, a broken connection, a
malformed message) raises psycopg.OperationalError, and the stream is closed (`open()` again)."""
from __future__ import annotations

import select
import struct
import time
from typing import Any

from onceproof import pgoutput

PG_EPOCH_US = pgoutput.PG_EPOCH_S * 1_000_000
_STATUS = struct.Struct(">cqqqqB")  # 'r', written, flushed, applied (LSNs), clock (us since 2000), reply asked


def stream_error(message: str) -> Exception:
    """A psycopg.OperationalError saying `message`: what every failure of a stream raises."""
    import psycopg

    return psycopg.OperationalError(message)


_functions: list[int] | None = None


def _libpq_functions() -> list[int] | None:
    """Addresses of PQgetCopyData, PQfreemem and PQconsumeInput in the libpq psycopg loaded
    into this process (found in /proc/self/maps), or None when it cannot be found: the stream
    is then drained by psycopg."""
    global _functions
    if _functions is None:
        import ctypes

        import psycopg.pq  # noqa: F401 - loads libpq

        try:
            with open("/proc/self/maps") as fh:
                paths = [ln.split(None, 5)[-1].strip() for ln in fh if "/libpq" in ln and ".so" in ln]
            lib = ctypes.CDLL(paths[0])
            _functions = [ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0
                          for name in ("PQgetCopyData", "PQfreemem", "PQconsumeInput")]
        except (OSError, IndexError, AttributeError):
            _functions = []
    return _functions or None


def _native() -> Any:
    """The compiled library with its `po_stream_*` functions typed, or None (not built, or built
    by an older onceproof without them)."""
    import ctypes

    lib = pgoutput.native()
    if lib is None or not hasattr(lib, "po_stream_drain"):
        return None
    if lib.po_stream_new.restype is not ctypes.c_void_p:
        p, i64 = ctypes.c_void_p, ctypes.c_int64
        lib.po_stream_new.restype = p
        lib.po_stream_new.argtypes = []
        lib.po_stream_free.argtypes = [p]
        lib.po_stream_shift.argtypes = [p]
        lib.po_stream_clear.argtypes = [p]
        lib.po_stream_info.argtypes = [p, p, ctypes.POINTER(p), ctypes.POINTER(p), ctypes.POINTER(p)]
        lib.po_stream_drain.restype = i64
        lib.po_stream_drain.argtypes = [p, p, p, p, p, i64, i64]
    return lib


class ReplicationStream:
    """The pgoutput stream of slot `slot` (publication `publication`) of the database at `dsn`.

    `open(timeout)` connects and starts streaming from the slot's confirmed position; `pump()`
    reads what has arrived; `take()` -> a pgoutput.Batch of the whole transactions received, or
    None; `wal_end`: the highest WAL position the server said it has sent up to (its
    keepalives; every transaction committed before it has been sent); `request_reply()` asks for
    a keepalive now; `confirm(lsn)` tells the server everything before `lsn` is applied (the
    slot may move on); `wait(s)` waits until the socket has data or `s` seconds passed."""

    MAX_MESSAGES = 200_000  # messages of whole transactions held before a pump returns (a batch's size)
    MAX_BYTES = 64 << 20

    def __init__(self, dsn: str, slot: str, publication: str) -> None:
        self.dsn, self.slot, self.publication = dsn, slot, publication
        self.conn: Any = None  # psycopg.pq.PGconn in CopyBoth mode
        self.wal_end = 0
        self.confirmed = 0
        self._lib = _native()
        self._fns = _libpq_functions() if self._lib is not None else None
        self._s: Any = None  # the library's po_stream
        self._msgs: list[bytes] = []  # without the library: messages held
        self._whole = 0  # without the library: messages of whole transactions among them
        self._reply = False

    @property
    def is_open(self) -> bool:
        return self.conn is not None

    def open(self, timeout: float) -> None:
        """Connect (replication=database) and START_REPLICATION from the slot's confirmed
        position, within `timeout` s. Raises psycopg.OperationalError."""
        from psycopg import pq
        from psycopg.conninfo import make_conninfo

        self.close()
        info = make_conninfo(self.dsn, replication="database", connect_timeout=str(max(2, int(timeout))))
        conn = pq.PGconn.connect(info.encode())
        if conn.status != pq.ConnStatus.OK:
            msg = conn.get_error_message()
            conn.finish()
            raise stream_error(f"replication connection: {msg}")
        conn.nonblocking = 1
        try:
            conn.send_query((f'START_REPLICATION SLOT "{self.slot}" LOGICAL 0/0 '
                             f"(proto_version '1', publication_names '{self.publication}')").encode())
            deadline = time.monotonic() + timeout
            while True:
                conn.flush()
                conn.consume_input()
                if not conn.is_busy():
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise stream_error(f"START_REPLICATION of slot {self.slot}: no answer within {timeout:g} s")
                select.select([conn.socket], [], [], left)
            res = conn.get_result()
            if res is None or res.status != pq.ExecStatus.COPY_BOTH:
                raise stream_error(f"START_REPLICATION of slot {self.slot}: {conn.get_error_message()}")
        except Exception:
            conn.finish()
            raise
        self.conn = conn
        self._clear()
        if self._lib is not None and self._fns is not None and getattr(conn, "pgconn_ptr", None):
            if self._s is None:
                self._s = self._lib.po_stream_new()
        else:
            self._lib = None

    def _clear(self) -> None:
        """Drop whatever was held (a transaction cut off by a broken connection is sent again)."""
        if self._s is not None:
            self._lib.po_stream_clear(self._s)
        self._msgs, self._whole = [], 0

    def close(self) -> None:
        """Close the connection (the slot becomes inactive once the server sees it). Never raises."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                conn.finish()
            except Exception:  # noqa: BLE001 - a connection already broken
                pass

    def free(self) -> None:
        """close(), and free the library's buffers. Never raises."""
        self.close()
        s, self._s = self._s, None
        if s is not None:
            self._lib.po_stream_free(s)

    def _failed(self, message: str) -> Exception:
        self.close()
        return stream_error(message)

    def pump(self) -> int:
        """Read every message that has arrived (until whole transactions of MAX_MESSAGES /
        MAX_BYTES are held) without blocking -> 0: none left to read, 1: the limit was reached (more may be waiting).
        Answers a keepalive that asks for a reply. Raises psycopg.OperationalError (closed)."""
        conn = self.conn
        if conn is None:
            raise stream_error("replication stream: not open")
        if self._lib is not None:
            get, free, consume = self._fns  # type: ignore[misc]
            st = self._lib.po_stream_drain(self._s, conn.pgconn_ptr, get, free, consume,  # type: ignore[attr-defined]
                                           self.MAX_MESSAGES, self.MAX_BYTES)
            held = self._info()
            self.wal_end = max(self.wal_end, held[4])
            self._reply = self._reply or bool(held[5])
        else:
            st = self._py_drain(conn)
        if st == -1:
            raise self._failed("replication stream: the server ended it")
        if st == -2:
            raise self._failed(f"replication stream: {conn.get_error_message() or 'connection lost'}")
        if st < 0:
            raise self._failed("replication stream: a malformed message (or no memory)")
        if self._reply:
            self._send_status(reply=False)
        return int(st)

    def _py_drain(self, conn: Any) -> int:
        """pump() without the library: psycopg's get_copy_data, message by message."""
        import psycopg

        consumed = False
        while self._whole < self.MAX_MESSAGES:
            try:
                n, data = conn.get_copy_data(1)
            except psycopg.Error:
                return -2
            if n == 0:
                if consumed:
                    return 0
                try:
                    conn.consume_input()
                except psycopg.Error:
                    return -2
                consumed = True
                continue
            if n == -1:
                return -1
            if n < 0:
                return -2
            consumed = False
            data = bytes(data)
            if data[:1] == b"w" and n > 25:
                self._msgs.append(data[25:])
                if data[25] == 67:  # 'C'
                    self._whole = len(self._msgs)
            elif data[:1] == b"k" and n >= 18:
                self.wal_end = max(self.wal_end, struct.unpack_from(">q", data, 1)[0])
                self._reply = self._reply or bool(data[17])
            else:
                return -3
        return 1

    def _info(self) -> list[int]:
        import ctypes

        held = (ctypes.c_int64 * 6)()
        buf, starts, ends = ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
        self._lib.po_stream_info(self._s, held, ctypes.byref(buf), ctypes.byref(starts), ctypes.byref(ends))
        self._ptrs = (buf.value or 0, starts.value or 0, ends.value or 0)
        return list(held)

    @property
    def partial(self) -> bool:
        """Whether part of a transaction is held (its Commit has not arrived yet)."""
        if self._lib is not None and self._s is not None:
            held = self._info()
            self._reply = self._reply or bool(held[5])
            return held[1] > held[2]
        return len(self._msgs) > self._whole

    def take(self) -> pgoutput.Batch | None:
        """The whole transactions received so far, as one Batch (handed over: not given
        again), or None when there is none."""
        if self._lib is not None and self._s is not None:
            import ctypes

            import numpy as np

            held = self._info()
            self._reply = self._reply or bool(held[5])
            n, used = held[2], held[3]
            if n == 0:
                return None
            buf_p, starts_p, ends_p = self._ptrs
            buf = ctypes.string_at(buf_p, used)
            starts = np.ctypeslib.as_array(ctypes.cast(starts_p, ctypes.POINTER(ctypes.c_int64)), (n,)).copy()
            ends = np.ctypeslib.as_array(ctypes.cast(ends_p, ctypes.POINTER(ctypes.c_int64)), (n,)).copy()
            self._lib.po_stream_shift(self._s)
            return pgoutput.Batch(buf, starts, ends)
        if self._whole == 0:
            return None
        msgs, self._msgs, self._whole = self._msgs[:self._whole], self._msgs[self._whole:], 0
        return pgoutput.Batch.of(msgs)

    def confirm(self, lsn: int) -> None:
        """Everything before `lsn` is applied: say so to the server (the slot may move on).
        Raises psycopg.OperationalError (closed)."""
        if lsn > self.confirmed:
            self.confirmed = lsn
            self._send_status(reply=False)

    def request_reply(self) -> None:
        """Ask the server for a keepalive now (it carries how far it has sent: `wal_end`).
        Raises psycopg.OperationalError (closed)."""
        self._send_status(reply=True)

    def _send_status(self, reply: bool) -> None:
        import psycopg

        conn = self.conn
        if conn is None:
            raise stream_error("replication stream: not open")
        lsn = self.confirmed
        clock = int(time.time() * 1_000_000) - PG_EPOCH_US
        try:
            conn.put_copy_data(_STATUS.pack(b"r", lsn, lsn, lsn, clock, 1 if reply else 0))
            conn.flush()
        except psycopg.Error as e:
            raise self._failed(f"replication stream: {e}") from e
        self._reply = False

    def wait(self, seconds: float) -> None:
        """Wait until the socket has something to read, at most `seconds`."""
        if self.conn is not None and seconds > 0:
            select.select([self.conn.socket], [], [], seconds)
