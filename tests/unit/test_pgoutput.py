"""pgoutput messages (harness/pgoutput.py) read into applications by the Follower: the pure-Python
reader and the compiled scanner (harness/pgoutput_scan.c, built by `onceproof setup`) give the
same effects and the same commits, from messages laid out as PostgreSQL's "Logical Replication
Message Formats" (protocol version 1) says."""
from __future__ import annotations

import struct

import pytest

from onceproof import pgoutput
from onceproof.pgdecode import Follower, Rows

REL = 16384
US = 1_000_000


def _tuple(vals: list) -> bytes:
    b = struct.pack(">H", len(vals))
    for v in vals:
        b += b"n" if v is None else b"u" if v is pgoutput.UNCHANGED else b"t" + struct.pack(">I", len(v)) + v
    return b


def relation(oid: int, table: str, cols: list[str], schema: str = "public", keys: tuple[str, ...] = ()) -> bytes:
    b = b"R" + struct.pack(">I", oid) + schema.encode() + b"\0" + table.encode() + b"\0" + b"f" + struct.pack(">H", len(cols))
    for c in cols:
        b += (b"\1" if c in keys else b"\0") + c.encode() + b"\0" + struct.pack(">Ii", 25, -1)
    return b


_LSN = [0]  # the last Begin's final LSN: each transaction's is above the one before, as on a server


def begin(at_us: int) -> bytes:
    _LSN[0] += 1000
    return b"B" + struct.pack(">qqI", _LSN[0], at_us, 7)


def commit(at_us: int) -> bytes:
    return b"C" + struct.pack(">bqqq", 0, _LSN[0], _LSN[0] + 100, at_us)


def insert(vals: list, oid: int = REL) -> bytes:
    return b"I" + struct.pack(">I", oid) + b"N" + _tuple(vals)


def update(new: list, old: list | None = None) -> bytes:
    return b"U" + struct.pack(">I", REL) + (b"O" + _tuple(old) if old is not None else b"") + b"N" + _tuple(new)


def delete(old: list) -> bytes:
    return b"D" + struct.pack(">I", REL) + b"O" + _tuple(old)


COLS = ["event_id", "key", "seq", "replica", "applied_at", "pos"]


def effects_row(i: int, key: bytes | None = b"k", seq: bytes | None = None) -> list:
    return [f"e{i}".encode(), key, seq if seq is not None else str(i).encode(), b"0", b"2026-01-01 00:00:00+00",
            str(i).encode()]


@pytest.fixture(params=["python", "native"])
def reader(request, monkeypatch):
    if request.param == "native":
        if pgoutput.native() is None:
            pytest.fail("the compiled pgoutput scanner is not built: run `onceproof setup`")
    else:
        monkeypatch.setattr(pgoutput, "native", lambda: None)
    return request.param


def _messages() -> list[bytes]:
    t = 820_000_000 * US  # 2025-12-24 ... in us since 2000-01-01
    return [begin(t), relation(REL, "t", COLS), insert(effects_row(0)), insert(effects_row(1, key=None)),
            insert([b"x"], oid=REL + 1), commit(t),
            begin(t + US), commit(t + US),  # a transaction of another table only
            begin(t + 2 * US), insert(effects_row(2, seq=b"1.5")), insert(effects_row(3)), commit(t + 2 * US)]


def test_inserts_and_commits_of_the_table_are_read_with_their_commit_times(reader) -> None:
    f = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    out: list = []
    assert f._apply_pgoutput(_messages(), out) is False
    assert out == [["e0", "k", 0, 0], ["e1", None, 1, 0], ["e2", "k", None, 0], ["e3", "k", 3, 0]]
    t = pgoutput.PG_EPOCH_S + 820_000_000
    assert f._commits == [[2, t], [2, t + 2.0]]


def test_a_mapping_with_key_and_seq_only_and_tracked_rows(reader) -> None:
    f = Follower("", "t", Rows("event_id", "key", None))
    out: list = []
    msgs = _messages()
    assert f._apply_pgoutput(msgs[:6], out) is False
    assert out == [["e0", "k", None, None], ["e1", None, None, None]]
    assert sorted(f.rows.by_id) == ["e0", "e1"]


def test_updates_count_by_xmin_and_a_delete_is_a_vanishing(reader) -> None:
    f = Follower("", "orders", Rows("order_id", "customer", "n", None, "xmin"))
    cols = ["order_id", "customer", "n"]
    out: list = []
    msgs = [begin(0), relation(REL, "orders", cols), insert([b"e1", b"c", b"0"]), insert([b"e2", b"c", b"1"]),
            update([b"e1", b"c", b"0"], old=[b"e1", b"c", b"0"]), commit(0)]
    assert f._apply_pgoutput(msgs, out) is False
    assert [e[0] for e in out] == ["e1", "e2", "e1"] and f._commits == [[3, pgoutput.PG_EPOCH_S]]
    assert f._apply_pgoutput([begin(US), delete([b"e2", b"c", b"1"]), commit(US)], []) is True
    assert sorted(e[0] for e in f.rows.expand()) == ["e1", "e1"]


def test_an_update_of_the_effects_table_reads_it_in_full_and_an_unchanged_value_comes_from_the_old_row(reader) -> None:
    f = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    msgs = _messages()
    assert f._apply_pgoutput(msgs + [begin(0), update(effects_row(9)), commit(0)], []) is True
    cols = ["id", "big"]
    assert pgoutput.row(cols, [b"e1", pgoutput.UNCHANGED], {"id": "e1", "big": "x" * 3000}) == {"id": "e1", "big": "x" * 3000}
    assert pgoutput.row(cols, [b"e1", pgoutput.UNCHANGED]) == {"id": "e1"}


def test_the_scanner_and_python_agree_on_a_large_batch(monkeypatch) -> None:
    if pgoutput.native() is None:
        pytest.fail("the compiled pgoutput scanner is not built: run `onceproof setup`")
    msgs = [relation(REL, "t", COLS)]
    for tx in range(50):
        msgs.append(begin(tx * US))
        msgs += [insert(effects_row(tx * 100 + i, key=f"k'é{i}\\n".encode())) for i in range(100)]
        msgs.append(commit(tx * US))
    results = []
    for native in (True, False):
        if not native:
            monkeypatch.setattr(pgoutput, "native", lambda: None)
        f = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
        out: list = []
        f._apply_pgoutput(msgs, out)
        results.append((out, f._commits))
    assert results[0] == results[1] and len(results[0][0]) == 5000


def test_transactions_decoded_again_after_a_server_crash_are_dropped(reader) -> None:
    """A slot goes back to its last checkpointed position after a crash and sends those
    transactions again (harness/pgdecode.py's module doc): their Begin's final LSN is not above
    the last one applied, so they are skipped, and what follows them is applied."""
    f = Follower("", "t", Rows("event_id", "key", "seq", "replica"))
    first = [begin(0), relation(REL, "t", COLS), insert(effects_row(0)), commit(0),
             begin(US), insert(effects_row(1)), commit(US)]
    out: list = []
    f._apply_pgoutput(first, out)
    assert [e[0] for e in out] == ["e0", "e1"]
    again: list = []
    f._apply_pgoutput(first[:4] + first[4:] + [begin(2 * US), insert(effects_row(2)), commit(2 * US)], again)
    assert [e[0] for e in again] == ["e2"] and f.redelivered == 2
    assert f._commits[-1][0] == 1


def test_an_update_that_overwrites_a_rows_event_id_takes_the_old_ones_applications_away(reader) -> None:
    """An upsert keyed by customer (the replica identity) that overwrites the order id: the row
    now holds e3, and e1's application is gone (a user's pipeline was VALID with 14,959 of its
    effects overwritten; its `query:` twin was INVALID). The WAL carries no old row (the key
    did not change): the row is found by its key's value, which the plan maps (`customer`)."""
    f = Follower("", "orders", Rows("order_id", "customer", "n", None))
    cols = ["order_id", "customer", "n"]
    out: list = []
    msgs = [begin(0), relation(REL, "orders", cols, keys=("customer",)), insert([b"e1", b"c", b"0"]),
            insert([b"e2", b"d", b"1"]), commit(0)]
    assert f._apply_pgoutput(msgs, out) is False and [e[0] for e in out] == ["e1", "e2"]
    out = []
    assert f._apply_pgoutput([begin(US), update([b"e3", b"c", b"2"]), commit(US)], out) is True
    assert out == [["e3", "c", 2, None]]
    assert sorted(e[0] for e in f.rows.expand()) == ["e2", "e3"] and not f.blind
    # the same event's row updated (its key unchanged): no application taken away
    assert f._apply_pgoutput([begin(2 * US), update([b"e3", b"c", b"5"]), commit(2 * US)], []) is False
    assert sorted(e[0] for e in f.rows.expand()) == ["e2", "e3"]


def test_an_update_that_renames_an_event_with_the_old_row_sent_takes_its_application_away(reader) -> None:
    """REPLICA IDENTITY FULL sends the old row: e1 renamed e1-old is e1 gone and e1-old new."""
    f = Follower("", "orders", Rows("order_id", "customer", "n", None))
    cols = ["order_id", "customer", "n", "note"]
    msgs = [begin(0), relation(REL, "orders", cols, keys=tuple(cols)), insert([b"e1", b"c", b"0", b"x"]), commit(0)]
    f._apply_pgoutput(msgs, [])
    out: list = []
    assert f._apply_pgoutput([begin(US), update([b"e1-old", b"c", b"0", b"x"], old=[b"e1", b"c", b"0", b"x"]),
                              commit(US)], out) is True
    assert [e[0] for e in f.rows.expand()] == ["e1-old"] and not f.blind


def test_an_update_whose_row_the_wal_does_not_identify_makes_the_follower_blind(reader) -> None:
    """The key is a column the plan does not map (`pk`) and the event id changed: which row
    held the old effect cannot be told, so the final read reads the table."""
    f = Follower("", "orders", Rows("order_id", "customer", "n", None))
    cols = ["pk", "order_id", "customer", "n"]
    f._apply_pgoutput([begin(0), relation(REL, "orders", cols, keys=("pk",)), insert([b"1", b"e1", b"c", b"0"]),
                       commit(0)], [])
    assert not f.blind
    f._apply_pgoutput([begin(US), update([b"1", b"e9", b"c", b"1"]), commit(US)], [])
    assert f.blind
