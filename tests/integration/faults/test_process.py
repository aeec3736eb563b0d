"""Process faults on nodes of their own (they are destructive): kill makes the process vanish
and the restart brings it back with its data; a graceful restart keeps committed data;
pause stalls requests until resume."""
from __future__ import annotations

import random
import sys
import time

import psycopg
import pytest
import redis

from onceproof.faults.base import Context
from onceproof.faults.nemesis import Nemesis
from onceproof.faults.schedule import expand
from onceproof.recorder import HistoryWriter
from onceproof.targets.postgres import PostgresNode
from onceproof.targets.process import CommandNode
from onceproof.targets import redis as redis_target
from onceproof.targets.redis import RedisNode
from tests.integration.faults.util import nemesis_records, wait_for, within


pytestmark = pytest.mark.integration


def exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def nemesis_for(runtime, tmp_path):
    made = []

    def build(*nodes):  # type: ignore[no-untyped-def]
        history = HistoryWriter(tmp_path / "history.jsonl")
        n = Nemesis(Context(nodes={x.name: x for x in nodes}, toxiproxy=None, proxies={}, rng=random.Random(3)),
                    history)
        made.append((n, history, nodes))
        return n

    yield build
    for n, history, nodes in made:
        n.heal_all()
        history.close()
        for node in nodes:
            node.stop(timeout=5)


def test_kill_makes_redis_vanish_and_the_restart_brings_it_back_with_its_data(runtime, nemesis_for):
    node = RedisNode(runtime, persistence="aof-always")
    node.start()
    direct = redis_target.client(node.host, node.port, timeout=0.5, password=node.password)
    direct.set("k", "kept")
    nemesis = nemesis_for(node)
    steps = expand([{"at": "0.2s", "kill": "redis", "restart-after": "1s"}], 1, 10, ["redis"])
    old_pid = node.pid
    t0 = time.monotonic()
    nemesis.run(steps, t0)
    assert wait_for(lambda: not exists(old_pid), 1.0)
    assert 0.19 <= time.monotonic() - t0 < 0.5
    with pytest.raises(redis.ConnectionError):
        redis_target.client(node.host, node.port, timeout=0.5, password=node.password).ping()
    nemesis.wait(30)
    assert time.monotonic() - t0 >= 1.2
    assert node.alive and node.pid != old_pid
    assert redis_target.client(node.host, node.port, timeout=0.5, password=node.password).get("k") == "kept"
    recs = nemesis_records(nemesis.history)
    assert [(r["type"], r["f"]) for r in recs] == [("invoke", "apply"), ("ok", "apply"), ("invoke", "heal"),
                                                   ("ok", "heal")], [(r["time"] / 1e6, r["type"], r["f"]) for r in recs]
    assert recs[1]["value"]["killed"] == {"redis": old_pid}
    assert recs[3]["value"]["started"] == {"redis": node.pid}


def test_a_killed_replica_without_restart_stays_down_until_heal_all_starts_it(runtime, nemesis_for):
    replica = CommandNode(runtime, "pipeline-0", [sys.executable, "-c", "import time; time.sleep(600)"], {})
    replica.start()
    nemesis = nemesis_for(replica)
    (step,) = expand([{"at": 0, "kill": "pipeline"}], 1, None, ["pipeline-0"])
    old = replica.pid
    nemesis.apply(nemesis.make(step))
    assert not exists(old) and not replica.alive
    assert nemesis.heal_all() == []
    assert replica.alive and replica.pid != old


def test_graceful_restart_of_postgres_keeps_committed_rows(runtime, nemesis_for):
    node = PostgresNode(runtime, fsync=False)
    node.start()
    with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("INSERT INTO t VALUES (42)")
    nemesis = nemesis_for(node)
    (step,) = expand([{"at": 0, "restart": "postgres"}], 1, None, ["postgres"])
    old = node.pid
    nemesis.run([step], time.monotonic(), block=True)
    nemesis.wait(60)
    assert not exists(old) and node.alive and node.pid != old
    with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as conn:
        assert conn.execute("SELECT v FROM t").fetchall() == [(42,)]
    assert [(r["type"], r["f"]) for r in nemesis_records(nemesis.history)] == [
        ("invoke", "apply"), ("ok", "apply"), ("invoke", "heal"), ("ok", "heal")]


def test_pause_stalls_redis_until_resume_and_a_write_that_timed_out_is_applied_after_all(runtime, nemesis_for):
    node = RedisNode(runtime, persistence="none")
    node.start()
    nemesis = nemesis_for(node)
    client = redis_target.client(node.host, node.port, timeout=0.3, password=node.password)
    client.set("n", "0")
    (step,) = expand([{"at": 0, "pause": "redis"}], 1, None, ["redis"])
    f = nemesis.make(step)
    nemesis.apply(f)
    assert state(node.pid) == "T"  # apply returns once the kernel has stopped it
    t = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.set("n", "1")  # indeterminate: the client gave up, the server has the request
    assert time.monotonic() - t < 1.0
    nemesis.heal(f)
    assert state(node.pid) in "SR"
    fresh = redis_target.client(node.host, node.port, timeout=0.5, password=node.password)
    assert wait_for(lambda: fresh.get("n") == "1", 2)


def test_pause_of_postgres_hangs_open_sessions_and_new_connections_until_resume(runtime, nemesis_for):
    node = PostgresNode(runtime, fsync=False)
    node.start()
    nemesis = nemesis_for(node)
    session = psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5)
    try:
        (step,) = expand([{"at": 0, "pause": "postgres"}], 1, None, ["postgres"])
        f = nemesis.make(step)
        nemesis.apply(f)
        # backends are process groups of their own (setsid): the pause reaches them too
        assert f.details["processes"] > 2
        assert within(1.0, lambda: psycopg.connect(node.dsn(), connect_timeout=3).close())[0] == "timeout"
        assert within(1.0, lambda: session.execute("SELECT 1").fetchone())[0] == "timeout"
        nemesis.heal(f)
        assert within(10, lambda: session.execute("SELECT 2").fetchone())[1] == (2,)
        with psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5) as conn:
            assert conn.execute("SELECT 3").fetchone() == (3,)
    finally:
        session.close()


def test_kill_of_postgres_takes_its_backends_down_with_it(runtime, nemesis_for):
    node = PostgresNode(runtime, fsync=False)
    node.start()
    nemesis = nemesis_for(node)
    session = psycopg.connect(node.dsn(), autocommit=True, connect_timeout=5)
    backend = session.execute("SELECT pg_backend_pid()").fetchone()[0]
    (step,) = expand([{"at": 0, "kill": "postgres"}], 1, None, ["postgres"])
    nemesis.apply(nemesis.make(step))
    assert not exists(backend)
    assert within(2, lambda: session.execute("SELECT 1"))[0] == "error"
    session.close()
