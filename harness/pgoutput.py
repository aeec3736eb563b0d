"""PostgreSQL's `pgoutput` logical decoding messages, parsed for one table.

The binary messages of the built-in `pgoutput` plugin, protocol version 1 (PostgreSQL docs,
"Logical Replication Message Formats"), as `pg_logical_slot_get_binary_changes(slot, NULL, n,
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


def commit_time(m: bytes) -> float:
    """A Commit message ('C') -> its commit time, seconds since the Unix epoch (server clock)."""
    return PG_EPOCH_S + _I64(m, 18)[0] / 1e6


def _cstring(m: bytes, pos: int) -> tuple[str, int]:
    end = m.index(b"\0", pos)
    return m[pos:end].decode(), end + 1


def relation(m: bytes) -> tuple[bytes, str, str, list[str]]:
    """A Relation message ('R') -> (oid as its 4 bytes, schema, table, column names)."""
    schema, pos = _cstring(m, 5)
    name, pos = _cstring(m, pos)
    n = _U16(m, pos + 1)[0]
    pos += 3
    cols = []
    for _ in range(n):
        col, pos = _cstring(m, pos + 1)
        cols.append(col)
        pos += 8
    return m[1:5], schema, name, cols


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
