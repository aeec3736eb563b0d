"""PostgreSQL's `pgoutput` logical decoding messages, parsed for one table.

The binary messages of the built-in `pgoutput` plugin, protocol version 1 (PostgreSQL docs,
"Logical Replication Message Formats"), as the replication stream carries them (one in each
XLogData; harness/pgstream.py) and `pg_logical_slot_get_binary_changes(slot, NULL, n,
'proto_version', '1', 'publication_names', pub)` returns them, one message a row:

    B  Begin:    final LSN (int64), commit time (int64 us since 2000-01-01 UTC), xid (int32)
    C  Commit:   flags (int8), commit LSN, end LSN, commit time (int64 us since 2000-01-01 UTC)
    R  Relation: oid (int32), schema, name (C strings), replica identity (int8), column count
                 (int16), per column: flags (int8), name (C string), type oid, type modifier (int32)
    I  Insert:   oid, 'N', TupleData
    U  Update:   oid, optional 'K' (the old key) or 'O' (the old row) TupleData, 'N' TupleData
    D  Delete:   oid, 'K' or 'O', TupleData
    T  Truncate: relation count (int32), options (int8), oids (int32 each)
    TupleData:   column count (int16), per column 'n' (null), 'u' (an unchanged TOASTed value,
                 not sent), or 't' (text) / 'b' (binary) + length (int32) + bytes

Integers are big-endian. Values are asked for as text (the types' output functions: the same
text as test_decoding gives, unquoted): `binary 'true'` was measured no faster for an effects
table (benchmarks/observer.py) and would need a decoder per type. Other message kinds (origin
'O', type 'Y', logical message 'M') are skipped.
"""
from __future__ import annotations

import struct
from typing import Any

PG_EPOCH_S = 946_684_800  # 2000-01-01 00:00:00 UTC in seconds since the Unix epoch
UNCHANGED = object()  # a 'u' column: an unchanged TOASTed value the message does not carry
OPTIONS = ("'proto_version', '1'",)  # what every fetch passes (with publication_names)

_U32 = struct.Struct(">I").unpack_from
_I64 = struct.Struct(">q").unpack_from
_U16 = struct.Struct(">H").unpack_from


def final_lsn(m: bytes) -> int:
    """A Begin message ('B') -> the LSN its transaction's Commit will carry."""
    return _I64(m, 1)[0]


def commit_lsn(m: bytes) -> int:
    """A Commit message ('C') -> its commit LSN."""
    return _I64(m, 2)[0]


def end_lsn(m: bytes) -> int:
    """A Commit message ('C') -> the end LSN of its transaction (where the next one may start)."""
    return _I64(m, 10)[0]


def commit_time(m: bytes) -> float:
    """A Commit message ('C') -> its commit time, seconds since the Unix epoch (server clock)."""
    return PG_EPOCH_S + _I64(m, 18)[0] / 1e6


def _cstring(m: bytes, pos: int) -> tuple[str, int]:
    end = m.index(b"\0", pos)
    return m[pos:end].decode(), end + 1


def _columns(m: bytes) -> tuple[str, str, list[tuple[str, int]]]:
    """A Relation message ('R') -> (schema, table, [(column name, flags), ...])."""
    schema, pos = _cstring(m, 5)
    name, pos = _cstring(m, pos)
    n = _U16(m, pos + 1)[0]
    pos += 3
    cols = []
    for _ in range(n):
        flags = m[pos]
        col, pos = _cstring(m, pos + 1)
        cols.append((col, flags))
        pos += 8
    return schema, name, cols


def relation(m: bytes) -> tuple[bytes, str, str, list[str]]:
    """A Relation message ('R') -> (oid as its 4 bytes, schema, table, column names)."""
    schema, name, cols = _columns(m)
    return m[1:5], schema, name, [c for c, _ in cols]


def key_columns(m: bytes) -> list[str]:
    """A Relation message ('R') -> the names of the columns of its replica identity (flag bit
    1): the primary key's, a REPLICA IDENTITY USING INDEX's, or every column with FULL."""
    return [c for c, flags in _columns(m)[2] if flags & 1]


def tuple_data(m: bytes, pos: int) -> tuple[list[Any], int]:
    """The TupleData at `pos` -> (values: bytes, None for null, UNCHANGED; position after it).
    Raises ValueError on a column kind the protocol does not have."""
    n = _U16(m, pos)[0]
    pos += 2
    vals: list[Any] = []
    for _ in range(n):
        k = m[pos]
        if k == 116 or k == 98:  # 't', 'b'
            ln = _U32(m, pos + 1)[0]
            pos += 5
            vals.append(m[pos:pos + ln])
            pos += ln
        elif k == 110:  # 'n'
            vals.append(None)
            pos += 1
        elif k == 117:  # 'u'
            vals.append(UNCHANGED)
            pos += 1
        else:
            raise ValueError(f"pgoutput: unknown column kind {k!r} in a TupleData")
    return vals, pos


def row(cols: list[str], vals: list[Any], old: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """Column names and a TupleData's values -> {column: text or None}. An UNCHANGED value is
    taken from `old` (the old row of an update, when sent) or left out."""
    out: dict[str, str | None] = {}
    for c, v in zip(cols, vals):
        if v is UNCHANGED:
            if old is not None and c in old:
                out[c] = old[c]
        else:
            out[c] = v.decode() if v is not None else None
    return out


def update_tuples(m: bytes) -> tuple[list[Any] | None, list[Any]]:
    """An Update message ('U') -> (old values or None when not sent, new values)."""
    pos = 5
    old = None
    if m[pos] in (75, 79):  # 'K', 'O'
        old, pos = tuple_data(m, pos + 1)
    return old, tuple_data(m, pos + 1)[0]


def truncated(m: bytes) -> list[bytes]:
    """A Truncate message ('T') -> the oids (4 bytes each) of the truncated relations."""
    n = _U32(m, 1)[0]
    return [m[6 + 4 * i:10 + 4 * i] for i in range(n)]


# --- the compiled scanner (harness/pgoutput_scan.c) ------------------------------------------
_lib: Any = None
_tried = False


def native() -> Any:
    """The compiled INSERT scanner (a ctypes CDLL, loaded once per process) that `onceproof
    setup` builds into `$ONCEPROOF_HOME/lib/libonceproof_pgoutput.so`, or None when it is not
    built (the pure-Python reader then does the same work, slower)."""
    global _lib, _tried
    if not _tried:
        _tried = True
        import ctypes

        from onceproof.home import library

        try:
            lib = ctypes.CDLL(str(library("libonceproof_pgoutput.so")))
        except OSError:
            lib = None
        if lib is not None:
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            lib.po_frame.restype = i64
            lib.po_frame.argtypes = [p, i64, p, p, i64]
            lib.po_scan.restype = i64
            lib.po_scan.argtypes = [p, p, p, i64, i64, ctypes.c_uint32, p, p, i64, p, i64, p, p, p, p, p, p]
        _lib = lib
    return _lib


def _lists(cols: list[list[Any]]) -> list[list[Any]]:
    """Columns -> rows as lists, with the cyclic garbage collector paused meanwhile: a batch
    makes up to ~200,000 new lists, and the collections their allocations would trigger (each
    going over every young container) took 5x the time of making them (measured: 850 vs 170 ns
    a row). Lists of strings and ints make no cycle: nothing is left for the collector. The
    pause is process-wide, a few ms; the collector is enabled again only if it was."""
    import gc

    was = gc.isenabled()
    gc.disable()
    try:
        return list(map(list, zip(*cols)))
    finally:
        if was:
            gc.enable()


class OrderError(RuntimeError):
    """A Commit whose LSN is not its Begin's final LSN: the messages are not in the server's
    order (never seen: a guard on the order the stream and the scanner keep)."""


class Batch:
    """A batch of messages laid out for the scanner: one buffer, where each message starts and
    ends in it (int64 arrays), and the scanner's outputs sized so that they never fill up
    (values are parts of the buffer). Raises ValueError when a framed buffer's lengths do not
    add up."""

    def __init__(self, buf: bytes, starts: Any, ends: Any) -> None:
        import numpy as np

        self.buf, self.starts, self.ends = buf, starts, ends
        self.n = n = len(starts)
        cap = len(buf) + n + 1
        self.ids = np.empty(cap, dtype=np.uint8)
        self.keys = np.empty(cap, dtype=np.uint8)
        self.seqs = np.empty(n, dtype=np.int64)
        self.reps = np.empty(n, dtype=np.int64)
        self.nulls = np.empty(n, dtype=np.uint8)
        self.commit_row = np.empty(n, dtype=np.int64)
        self.commit_us = np.empty(n, dtype=np.int64)
        self.counts = np.zeros(5, dtype=np.int64)

    @classmethod
    def framed(cls, buf: bytes, lib: Any) -> "Batch":
        """A buffer of messages each preceded by its int32 length (benchmarks/observer.py fetches
        slot calls so)."""
        import numpy as np

        if lib is not None:
            cap = len(buf) // 5 + 1  # a message is at least 1 byte after its length
            starts, ends = np.empty(cap, dtype=np.int64), np.empty(cap, dtype=np.int64)
            n = lib.po_frame(buf, len(buf), starts.ctypes.data, ends.ctypes.data, cap)
            if n < 0:
                raise ValueError("pgoutput: the lengths of a fetched batch do not add up")
            return cls(buf, starts[:n], ends[:n])
        s, e, pos = [], [], 0
        while pos < len(buf):
            ln = _U32(buf, pos)[0]
            if pos + 4 + ln > len(buf):
                raise ValueError("pgoutput: the lengths of a fetched batch do not add up")
            s.append(pos + 4)
            e.append(pos + 4 + ln)
            pos += 4 + ln
        return cls(buf, np.array(s, dtype=np.int64), np.array(e, dtype=np.int64))

    @classmethod
    def of(cls, msgs: list[bytes]) -> "Batch":
        """Messages one bytes each (as `pg_logical_slot_get_binary_changes` gives them a row each)."""
        from itertools import accumulate

        import numpy as np

        offs = np.fromiter(accumulate(map(len, msgs), initial=0), dtype=np.int64, count=len(msgs) + 1)
        return cls(b"".join(msgs), offs[:-1], offs[1:])

    def message(self, i: int) -> bytes:
        return self.buf[int(self.starts[i]):int(self.ends[i])]

    def scan(self, lib: Any, start: int, rel: bytes, want: list[int],
             final_lsn: int) -> tuple[int, list[list[Any]], list[list[Any]], int]:
        """Messages from `start` on, until one the scanner leaves to Python -> (its index, or n;
        effects [id, key, seq, replica] of the INSERTs of `rel`; commits [[rows before it in
        this scan, commit time s since the Unix epoch], ...]; the last Begin's final LSN, given
        as `final_lsn`). Raises OrderError."""
        import numpy as np

        w = np.array(want, dtype=np.int32)
        self.counts[4] = final_lsn
        end = lib.po_scan(self.buf, self.starts.ctypes.data, self.ends.ctypes.data, start, self.n,
                          int.from_bytes(rel, "big"), w.ctypes.data,
                          self.ids.ctypes.data, len(self.ids), self.keys.ctypes.data, len(self.keys),
                          self.seqs.ctypes.data, self.reps.ctypes.data, self.nulls.ctypes.data,
                          self.commit_row.ctypes.data, self.commit_us.ctypes.data, self.counts.ctypes.data)
        if end < 0:
            raise OrderError(f"pgoutput: the Commit at message {-1 - end} is not its Begin's")
        rows, commits, id_len, key_len, final_lsn = (int(x) for x in self.counts)
        commit_list = [[r, PG_EPOCH_S + us / 1e6] for r, us in
                       zip(self.commit_row[:commits].tolist(), self.commit_us[:commits].tolist())]
        if not rows:
            return end, [], commit_list, final_lsn
        none: list[Any] = [None] * rows
        cols: list[list[Any]] = [
            self.ids[:id_len].tobytes().decode().split("\0")[:-1] if want[0] >= 0 else none,
            self.keys[:key_len].tobytes().decode().split("\0")[:-1] if want[1] >= 0 else none,
            self.seqs[:rows].tolist() if want[2] >= 0 else none,
            self.reps[:rows].tolist() if want[3] >= 0 else none]
        effects = _lists(cols)
        mask = sum(1 << k for k in range(4) if want[k] >= 0)
        nulls = self.nulls[:rows] & mask
        for r in np.flatnonzero(nulls).tolist():  # a null (or a seq that is no integer): None
            bits = int(nulls[r])
            for k in range(4):
                if bits & (1 << k):
                    effects[r][k] = None
        return end, effects, commit_list, final_lsn
