"""Logical decoding re-delivers committed changes after PostgreSQL crashes: a slot's confirmed
position is kept in memory and written to disk only at a checkpoint (or a clean shutdown), so
after a SIGKILL the slot restarts from the position of the last checkpoint and every
transaction since is decoded again (PostgreSQL docs, "Logical Decoding Concepts": "...a slot may
return to an earlier LSN after a crash, and the changes since then will be sent again").

Found by a run of the kafka_to_postgres reference pipeline (2 replicas) with `kill postgres,
restart-after: 2s` at 8 s and 16 s of 25 s of load at 1000/s: the live `applied` counter reached 32484 for 24983 events sent, 7501 events were
recorded twice in the observer's incremental observes, and the verdict stayed VALID only
because the final read of our own effects table is a full SELECT. The same history without its
final-read record (a run whose final read failed, or that was cut short) is checked
INVALID with 7501 false `duplicate`s. And a mapped table the Follower tracks itself
(`applied: xmin` or a column, or no full select) returns the doubled rows as its final
content: the same exactly-once pipeline and faults with
`sink: {postgres: {table: onceproof_effects, id: event_id, key: key, seq: seq, applied: xmin}}`
(its table created by a wrapper before the pipeline starts) ended INVALID, `duplicate=15370`
for 24999 events (its final content is the decoded one, 47349 rows, not the table; with the
default sink, whose final read is a SELECT, the same run had each event in the table once): a
false `duplicate` on a correct pipeline.

The follower drops a transaction whose commit LSN is not above the last one it applied
(harness/pgdecode.py's module doc). Both plugins are checked: test_decoding (a table without a
replica identity) and pgoutput (REPLICA IDENTITY FULL, as our effects table)."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
import pytest

from onceproof.pgdecode import Follower, Rows
from onceproof.targets.postgres import PostgresNode

pytestmark = pytest.mark.integration


def _sql(node: PostgresNode, *statements: str) -> None:
    """Run each statement on `node`'s server (autocommit)."""
    with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as c:
        for statement in statements:
            c.execute(statement)


def _postgres(runtime, identity: str, *then: str) -> PostgresNode:  # type: ignore[no-untyped-def]
    """A PostgreSQL of the test's own (it is killed) with an empty effects table `eff`, its
    replica identity the default (followed by test_decoding) or FULL (pgoutput); then the
    statements `then`."""
    node = PostgresNode(runtime, fsync=False)
    node.start()
    _sql(node, "CREATE TABLE eff (event_id text, key text, seq bigint, replica int)",
         *(["ALTER TABLE eff REPLICA IDENTITY FULL"] if identity == "full" else []), *then)
    return node


@contextmanager
def _following(node: PostgresNode, rows: Rows, full_select: Callable[[], list] | None = None) -> Iterator[Follower]:
    """A Follower of `eff` whose slot exists from now on; closed (slot dropped) after."""
    follower = Follower(node.dsn(), "eff", rows, full_select=full_select)
    follower.create()
    try:
        yield follower
    finally:
        follower.close()


def _read(follower: Follower) -> list:
    """A read as the observer makes it: the first one after the restart finds the old connection
    dead (psycopg.Error, recorded as a failed observe) and the next one reconnects."""
    for _ in range(3):
        try:
            return follower.read()[0]
        except psycopg.Error:
            continue
    return follower.read()[0]


@pytest.mark.parametrize("identity", ["default", "full"])
def test_changes_read_before_a_postgres_crash_are_not_applied_again_after_it(runtime, identity: str) -> None:
    node = _postgres(runtime, identity, "CHECKPOINT")
    with _following(node, Rows("event_id", "key", "seq", "replica")) as follower:  # tracked: no full select
        assert follower.plugin == ("pgoutput" if identity == "full" else "test_decoding")
        # five transactions, read (and so confirmed) before the crash
        _sql(node, *(f"INSERT INTO eff VALUES ('e{i}', 'k', {i}, 0)" for i in range(5)))
        first, _ = follower.read()
        assert [e[0] for e in first] == [f"e{i}" for i in range(5)]
        node.kill()  # SIGKILL: no checkpoint, the slot's confirmed position since the last one is lost
        node.start()
        _sql(node, "INSERT INTO eff VALUES ('e5', 'k', 5, 0)")
        after = _read(follower)
        assert [e[0] for e in after] == ["e5"], "changes read before the crash were applied again"
        assert follower.redelivered == 5  # the server did send them again: the test is not vacuous
        final = sorted(e[0] for e in follower.final_read())
        assert final == [f"e{i}" for i in range(6)], "the final content has an effect twice"


def test_a_call_cut_off_after_the_slot_moved_on_makes_the_final_read_read_the_table(runtime) -> None:
    """The other way round (test_decoding, whose slot function calls consume what they decode):
    a slot function advances the slot on the server before its rows
    reach us, so a call whose socket is shut mid-way (a deadline, e.g. while the server was
    paused) consumed changes the slot will never give again. A follower that answered its
    final read from what it decoded would then miss those rows: a false `lost`. It sees that
    the slot moved on without it and reads the table in full instead."""
    node = _postgres(runtime, "default")

    def table() -> list:
        with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as c:
            return [list(r) for r in c.execute("SELECT event_id, key, seq, replica FROM eff")]

    # tracked by the follower (applied: a column), with a full select for when it cannot know
    with _following(node, Rows("event_id", "key", "seq", "replica", applied="replica"), table) as follower:
        _sql(node, "INSERT INTO eff SELECT 'e' || i, 'k', i, 1 FROM generate_series(0, 199999) i")
        with pytest.raises(psycopg.Error):
            follower.read(timeout=0.02)  # the server decodes 200,000 rows: far longer than 20 ms
        got: list = []
        for _ in range(100):  # the cut call's backend finishes (the slot is busy until then)
            try:
                got += follower.read()[0]
                break
            except psycopg.Error:
                time.sleep(0.2)
        assert len(got) < 200_000  # the cut call's rows were consumed on the server: not given again
        assert follower.blind
        final = follower.final_read()
        assert len(final) == 200_000 and len({e[0] for e in final}) == 200_000


def test_a_stream_cut_off_mid_way_loses_nothing_and_sends_nothing_twice(runtime) -> None:
    """pgoutput's stream (harness/pgstream.py) moves the slot on only as far as the follower
    confirms: a stream cut off while the server was sending (its walsender terminated, as a
    broken connection or a partition would) is opened again from the last transaction applied,
    and the final content has each of the 200,000 rows once. The follower never reads the
    table instead (it is not blind), and it did get part of them before the cut (the test is
    not vacuous)."""
    node = _postgres(runtime, "full")
    with _following(node, Rows("event_id", "key", "seq", "replica", applied="replica")) as follower:
        assert follower.plugin == "pgoutput"
        _sql(node, *(f"INSERT INTO eff SELECT 'e' || i, 'k', i, 1 FROM generate_series({t * 20_000}, "
                     f"{t * 20_000 + 19_999}) i" for t in range(10)))
        got: list = []
        for _ in range(200):  # until part of the rows came (a read lasts at most its budget)
            got += follower.read(budget_s=0.01)[0]
            if got:
                break
        assert 0 < len(got) < 200_000, len(got)
        _sql(node, "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                   f"WHERE slot_name = '{follower.slot}'")
        got += _read(follower)
        final = follower.final_read()
        assert not follower.blind
        assert len(final) == 200_000 and len({e[0] for e in final}) == 200_000
        assert len({e[0] for e in got}) == len(got), "a row read before the cut was read again after it"


def test_a_call_that_never_ran_leaves_the_follower_trusting_what_it_decoded(runtime) -> None:
    """A failed call that consumed nothing (the server was gone) must not make the follower
    blind: its decoded content (which alone counts re-applications by xmin) stays the answer."""
    node = _postgres(runtime, "full")
    with _following(node, Rows("event_id", "key", "seq", "replica", applied="xmin")) as follower:
        _sql(node, "INSERT INTO eff VALUES ('e0', 'k', 0, 0)",
             "UPDATE eff SET replica = 1")  # a re-application: two row versions
        assert [e[0] for e in follower.read()[0]] == ["e0", "e0"]
        node.kill()
        node.start()
        assert [e[0] for e in _read(follower)] == []
        assert not follower.blind
        assert [e[0] for e in follower.final_read()] == ["e0", "e0"]


def test_a_killed_postgres_takes_its_backends_with_it_and_starts_again_at_once(runtime) -> None:
    """A backend calls setsid(), so killing the postmaster's process group left it serving until
    it noticed its parent's death; a start right then failed ("pre-existing shared memory block
    ... is still in use", a CI trial under load). Node.kill takes every process below the node
    with it, and waits for them."""
    from onceproof.targets import procfs

    node = PostgresNode(runtime, fsync=False)
    node.start()
    try:
        with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as c:
            backend = c.execute("SELECT pg_backend_pid()").fetchone()[0]
            assert backend in procfs.descendants(node.pid)
            node.kill()
            assert procfs.state(backend) in "XZ"  # gone as kill() returns, not a moment later
        node.start()  # no shared memory held by an orphan
        _sql(node, "SELECT 1")
    finally:
        node.stop()
