"""A 3-node KRaft cluster (combined roles), every broker a host of its own: isolating the
active controller elects a new one, transactions go on on the majority side, and the isolated
broker rejoins after heal. One cluster is shared by the tests of this module, in order."""
from __future__ import annotations

import json
import time
import uuid

import pytest

from onceproof.faults.netns import Partitioner
from onceproof.targets.kafka import KafkaCluster
from onceproof.targets.netns import NetnsRuntime
from tests.integration.netns.conftest import needs_root

pytestmark = [pytest.mark.integration, needs_root]

TOPIC = "netns-txn"


def quorum(node) -> tuple[int, int]:
    """(epoch, leader id) as this node last wrote it."""
    path = node.data_dir / "log" / "__cluster_metadata-0" / "quorum-state"
    state = json.loads(path.read_text())
    return int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))


def active_controller(cluster: KafkaCluster):
    epoch, leader = max(quorum(n) for n in cluster.nodes)
    return next(n for n in cluster.nodes if n.node_id == leader), epoch


class Cluster:
    def __init__(self, rt: NetnsRuntime, kafka: KafkaCluster, started_in: float) -> None:
        self.rt, self.kafka, self.started_in = rt, kafka, started_in
        self.partitioner = Partitioner(rt)
        self.state: dict = {}


@pytest.fixture(scope="module")
def cluster():
    from confluent_kafka.admin import AdminClient, NewTopic

    rt = NetnsRuntime()
    try:
        kafka = KafkaCluster(rt, 3)
        rt.add_host("load")
        t0 = time.monotonic()
        kafka.start(120)
        started_in = time.monotonic() - t0
        print(f"\n3-node KRaft cluster in netns ready in {started_in:.1f}s")
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap_direct})
        admin.create_topics([NewTopic(TOPIC, num_partitions=3, replication_factor=3)])[TOPIC].result(30)
        c = Cluster(rt, kafka, started_in)
        yield c
        c.partitioner.heal()
        if "producer" in c.state:
            c.state.pop("producer").flush(5)
        del admin
        kafka.stop()
    finally:
        rt.close()


def transactional_producer(c: Cluster):
    from confluent_kafka import Producer

    with c.rt.entered("load"):  # the load generator's client lives in its own namespace
        p = Producer({"bootstrap.servers": c.kafka.bootstrap_direct, "transactional.id": f"netns-{uuid.uuid4()}",
                      "transaction.timeout.ms": 60000, "socket.timeout.ms": 5000,
                      "request.timeout.ms": 5000, "topic.metadata.refresh.interval.ms": 1000,
                      "message.timeout.ms": 60000})
        p.init_transactions(60)
    return p


def run_transactions(p, count: int, batch: int, deadline_s: float) -> list[str]:
    """Commit `count` transactions of `batch` messages; an aborted one is retried. Returns the
    ids of committed messages."""
    from confluent_kafka import KafkaException

    committed: list[str] = []
    deadline = time.monotonic() + deadline_s
    done = 0
    while done < count:
        assert time.monotonic() < deadline, f"only {done} of {count} transactions committed in {deadline_s}s"
        ids = [str(uuid.uuid4()) for _ in range(batch)]
        try:
            p.begin_transaction()
            for i in ids:
                p.produce(TOPIC, key=i[:4], value=i)
            while True:
                try:
                    p.commit_transaction(30)
                    break
                except KafkaException as e:
                    if not e.args[0].retriable() or time.monotonic() > deadline:
                        raise
                    print(f"commit retried: {e.args[0]}")
        except KafkaException as e:
            if e.args[0].txn_requires_abort():
                print(f"transaction aborted: {e.args[0]}")
                p.abort_transaction(30)
                continue
            raise
        committed += ids
        done += 1
    return committed


def read_committed(c: Cluster, expect: int, timeout: float = 60) -> list[str]:
    from confluent_kafka import Consumer

    consumer = Consumer({"bootstrap.servers": c.kafka.bootstrap_direct, "group.id": f"check-{uuid.uuid4()}",
                         "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.subscribe([TOPIC])
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            m = consumer.poll(0.5)
            if m is not None and m.error() is None:
                seen.append(m.value().decode())
            elif m is None and len(seen) >= expect:
                break
    finally:
        consumer.close()
    return seen


def test_clients_reach_each_broker_at_its_own_address_from_their_own_namespace(cluster):
    p = transactional_producer(cluster)
    cluster.state["producer"] = p
    cluster.state["committed"] = run_transactions(p, 2, 5, 60)
    addresses = {n.host for n in cluster.kafka.nodes}
    assert len(addresses) == 3
    ss = cluster.rt.exec("load", "ss", "-tnH", "state", "established").stdout
    peers = {line.split()[-1].rsplit(":", 1)[0] for line in ss.splitlines()}
    assert peers & addresses, ss  # the producer's connections leave from the load namespace
    local = {line.split()[-2].rsplit(":", 1)[0] for line in ss.splitlines()}
    assert local == {cluster.rt.address_of("load")}


def test_isolating_the_active_controller_elects_a_new_one(cluster):
    old, epoch = active_controller(cluster.kafka)
    majority = [n for n in cluster.kafka.nodes if n is not old]
    t0 = time.monotonic()
    cluster.partitioner.isolate([old.name])
    new = None
    while time.monotonic() - t0 < 30:
        states = [quorum(n) for n in majority]
        best = max(states)
        if best[0] > epoch and best[1] != old.node_id and best[1] >= 0:
            new = best[1]
            break
        time.sleep(0.05)
    failover = time.monotonic() - t0
    print(f"\ncontroller {old.name} isolated; new controller kafka-{new} elected after {failover:.1f}s")
    assert new in {n.node_id for n in majority}, f"no new controller after {failover:.0f}s"
    cluster.state.update(isolated=old, failover=failover)


def test_transactions_continue_on_the_majority_side(cluster):
    assert "isolated" in cluster.state, "needs the isolation of the previous test"
    p = cluster.state["producer"]
    t0 = time.monotonic()
    cluster.state["committed"] += run_transactions(p, 10, 5, 90)
    print(f"\n10 transactions committed with {cluster.state['isolated'].name} isolated in "
          f"{time.monotonic() - t0:.1f}s")
    seen = read_committed(cluster, len(cluster.state["committed"]))
    assert sorted(seen) == sorted(cluster.state["committed"])  # each committed once, nothing else


def test_the_isolated_broker_rejoins_after_heal(cluster):
    from confluent_kafka.admin import AdminClient

    old = cluster.state.get("isolated")
    assert old is not None, "needs the isolation of the earlier test"
    cluster.partitioner.heal()
    admin = AdminClient({"bootstrap.servers": cluster.kafka.bootstrap_direct})
    t0 = time.monotonic()
    isr_ok = False
    while time.monotonic() - t0 < 60 and not isr_ok:
        try:
            md = admin.list_topics(TOPIC, timeout=5)
        except Exception:  # noqa: BLE001 - metadata from the healing broker may time out
            continue
        parts = md.topics[TOPIC].partitions.values()
        isr_ok = len(md.brokers) == 3 and all(old.node_id in p.isrs for p in parts)
        time.sleep(0.2)
    print(f"\n{old.name} back in every ISR of {TOPIC} {time.monotonic() - t0:.1f}s after heal")
    assert isr_ok
    p = cluster.state["producer"]
    cluster.state["committed"] += run_transactions(p, 2, 5, 60)
    assert old.alive

    assert cluster.started_in < 90
