"""Replication links cut between hosts: a PostgreSQL streaming standby and a Redis replica
fall behind while cut from their primary, and catch up after heal. The harness still reaches
both sides (the cut is only between primary and replica)."""
from __future__ import annotations

import time

import psycopg
import pytest

from onceproof.faults.netns import Partitioner
from onceproof.targets.netns import NetnsRuntime
from onceproof.targets.postgres import PostgresNode, PostgresStandby
from onceproof.targets.redis import RedisNode, client
from tests.integration.netns.conftest import needs_root

pytestmark = [pytest.mark.integration, needs_root]


def eventually(check, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if check():
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001 - a probe failing means not yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout:.0f}s")


@pytest.fixture
def rt():
    runtime = NetnsRuntime()
    yield runtime
    runtime.close()
    assert runtime.leftovers() == []


def test_postgres_standby_cut_from_its_primary_falls_behind_and_catches_up_after_heal(rt):
    primary = PostgresNode(rt, "pg-primary")
    standby = PostgresStandby(rt, primary, "pg-standby")
    try:
        primary.start()
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE t (i int)")
            conn.execute("INSERT INTO t SELECT generate_series(1, 10)")
        standby.start()

        def standby_rows() -> int:
            with psycopg.connect(standby.dsn(), connect_timeout=2) as conn:
                return conn.execute("SELECT count(*) FROM t").fetchone()[0]

        eventually(lambda: standby_rows() == 10, 30, "the standby's first copy")
        cut = Partitioner(rt).isolate(["pg-standby"], from_=["pg-primary"])
        with psycopg.connect(primary.dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO t SELECT generate_series(11, 110)")
        time.sleep(2)
        assert standby_rows() == 10  # cut off: behind the primary
        cut.heal()
        took = eventually(lambda: standby_rows() == 110, 30, "the standby catching up")
        print(f"\npostgres standby caught up {took:.1f}s after heal")
    finally:
        standby.stop()
        primary.stop()


def test_redis_replica_cut_from_its_primary_falls_behind_and_catches_up_after_heal(rt):
    primary = RedisNode(rt, "redis-primary", persistence="none")
    replica = RedisNode(rt, "redis-replica", persistence="none", replicaof=primary)
    try:
        primary.start()
        replica.start()
        p = client(primary.host, primary.port, password=primary.password)
        r = client(replica.host, replica.port, password=replica.password)
        p.set("k", 1)
        eventually(lambda: r.get("k") == "1", 30, "the replica's first sync")
        cut = Partitioner(rt).isolate(["redis-replica"], from_=["redis-primary"])
        for i in range(2, 101):
            p.set("k", i)
        time.sleep(1.5)
        assert r.get("k") == "1"  # cut off: behind the primary
        cut.heal()
        took = eventually(lambda: r.get("k") == "100", 30, "the replica catching up")
        print(f"\nredis replica caught up {took:.1f}s after heal")
        p.close()
        r.close()
    finally:
        replica.stop()
        primary.stop()
