"""Each target, real: start, write and read through its fault proxy, kill -9, restart, and the
data its persistence setting promises is still there (and what it does not promise is gone)."""
from __future__ import annotations

import socket
import time
import uuid
from urllib.parse import urlsplit

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.redis import client

pytestmark = pytest.mark.integration


def _redis_via(d: Deployment, group: str = "pipeline"):
    url = urlsplit(d.redis_url(group))
    assert url.hostname is not None and url.port is not None
    return client(url.hostname, url.port, password=url.password)


@pytest.mark.parametrize("persistence,survives", [("aof-always", True), ("none", False)])
def test_redis_keeps_exactly_what_its_persistence_promises_after_kill_9(runtime, persistence, survives):
    d = Deployment.create(runtime, TargetsSpec(redis=persistence))
    try:
        d.start()
        r = _redis_via(d)
        for i in range(200):
            r.set(f"k{i}", i)
        assert r.get("k199") == "199"
        pid = d.redis.pid
        d.redis.kill()
        assert not d.redis.alive
        with pytest.raises(ProcessLookupError):
            import os
            os.kill(pid, 0)
        d.redis.start()
        r = _redis_via(d)
        present = sum(1 for i in range(200) if r.get(f"k{i}") is not None)
        assert present == (200 if survives else 0)
    finally:
        d.stop()


def test_redis_pause_stalls_a_client_until_resume(shared_targets):
    r = _redis_via(shared_targets)
    r.set("pause-probe", "1")
    shared_targets.redis.pause()
    try:
        slow = client(shared_targets.redis.host, shared_targets.redis.port, timeout=0.5,
                      password=shared_targets.redis.password)
        t = time.monotonic()
        with pytest.raises(Exception):
            slow.get("pause-probe")
        assert time.monotonic() - t >= 0.4
    finally:
        shared_targets.redis.resume()
    assert r.get("pause-probe") == "1"


def test_postgres_keeps_committed_rows_after_kill_9_and_recovers_fast(runtime):
    d = Deployment.create(runtime, TargetsSpec(postgres=True))
    try:
        d.start()
        with psycopg.connect(d.postgres_dsn("pipeline"), autocommit=True) as c:
            c.execute("CREATE TABLE t (x int)")
            c.execute("INSERT INTO t SELECT generate_series(1, 1000)")
        old_pid = d.postgres.pid
        d.postgres.kill()
        t = time.monotonic()
        d.postgres.start()
        recovery = time.monotonic() - t
        assert d.postgres.pid != old_pid
        with psycopg.connect(d.postgres_dsn("pipeline")) as c:
            assert c.execute("SELECT count(*) FROM t").fetchone()[0] == 1000
        assert recovery < 15
    finally:
        d.stop()


def _topic(admin: AdminClient, name: str, partitions: int = 1, rf: int = 1) -> None:
    for f in admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=30).values():
        f.result(60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        md = admin.list_topics(name, timeout=5).topics.get(name)
        if md and md.error is None and all(p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.1)


def _read_committed(bootstrap: str, topic: str, partitions: int = 1, expect: int = 0, timeout: float = 20) -> list[bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex}",
                  "isolation.level": "read_committed", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    out: list[bytes] = []
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        msgs = c.consume(1000, 0.2)
        out += [m.value() for m in msgs if m.error() is None]
        if msgs:
            quiet_since = time.monotonic()
        elif len(out) >= expect and time.monotonic() - quiet_since > 1.5:
            break
    c.close()
    return out


def _transactions(bootstrap: str, topic: str, txid: str, rounds: int = 3) -> tuple[list[bytes], list[bytes]]:
    p = Producer({"bootstrap.servers": bootstrap, "transactional.id": txid, "transaction.timeout.ms": 10000})
    p.init_transactions(30)
    committed, aborted = [], []
    for r in range(rounds):
        for outcome in ("commit", "abort"):
            p.begin_transaction()
            batch = [f"{txid}-{r}-{outcome}-{i}".encode() for i in range(10)]
            for v in batch:
                p.produce(topic, v)
            if outcome == "commit":
                p.commit_transaction(30)
                committed += batch
            else:
                p.flush(10)
                p.abort_transaction(30)
                aborted += batch
    return committed, aborted


def test_kafka_read_committed_sees_exactly_the_committed_transactions_through_the_proxy(shared_targets):
    d = shared_targets
    topic = f"txn-{uuid.uuid4().hex[:8]}"
    _topic(AdminClient({"bootstrap.servers": d.kafka_bootstrap()}), topic)
    committed, aborted = _transactions(d.kafka_bootstrap("pipeline"), topic, f"tx-{topic}")
    seen = _read_committed(d.kafka_bootstrap("load"), topic, expect=len(committed))
    assert sorted(seen) == sorted(committed)
    assert not set(seen) & set(aborted)


def test_kafka_clients_cannot_bypass_the_proxy(shared_targets):
    """Metadata advertises the group's proxy port, never the broker's own port."""
    d = shared_targets
    proxy_port = d.proxies["pipeline-kafka-1"].listen
    admin = AdminClient({"bootstrap.servers": d.kafka_bootstrap("pipeline")})
    brokers = admin.list_topics(timeout=10).brokers
    assert [b.port for b in brokers.values()] == [proxy_port]
    assert d.kafka.nodes[0].port != proxy_port


def test_three_node_kafka_keeps_committing_transactions_with_the_active_controller_killed(runtime):
    """Also proves the Kafka-aware selectors on a real cluster: the controller and a partition
    leader are found by role, and after the controller dies another node takes the role."""
    from onceproof.faults.base import Context
    from onceproof.faults.selectors import resolve_role

    d = Deployment.create(runtime, TargetsSpec(kafka_nodes=3))
    try:
        d.start(timeout=90)
        topic = "txn3"
        admin = AdminClient({"bootstrap.servers": d.kafka_bootstrap()})
        _topic(admin, topic, partitions=3, rf=3)
        context = Context.from_deployment(d, [], seed=1)
        leader = resolve_role(context, "kafka-leader", topic, 1)
        md_leader = admin.list_topics(topic, timeout=5).topics[topic].partitions[1].leader
        assert context.nodes[leader].node_id == md_leader
        committed, aborted = _transactions(d.kafka_bootstrap("pipeline"), topic, "tx-a", rounds=2)
        controller = resolve_role(context, "kafka-controller", None, 0)
        context.nodes[controller].kill()
        more, more_aborted = _transactions(d.kafka_bootstrap("pipeline"), topic, "tx-b", rounds=2)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and resolve_role(context, "kafka-controller", None, 0) == controller:
            time.sleep(0.2)
        assert resolve_role(context, "kafka-controller", None, 0) != controller
        seen = _read_committed(d.kafka_bootstrap(), topic, partitions=3, expect=len(committed) + len(more), timeout=40)
        assert sorted(seen) == sorted(committed + more)
        assert not set(seen) & set(aborted + more_aborted)
    finally:
        d.stop()


def test_teardown_leaves_no_process_port_or_directory(runtime):
    d = Deployment.create(runtime, TargetsSpec(redis="none", postgres=True))
    d.start()
    ports = [n.port for n in d.servers()] + [p.listen for p in d.proxies.values()]
    pids = [n.pid for n in d.nodes().values()]
    scratch = runtime.scratch
    d.stop()
    import os
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0
    assert not scratch.exists()
    assert not runtime.entry.path.exists()
