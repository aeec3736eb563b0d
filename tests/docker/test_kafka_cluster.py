"""A 3-node KRaft cluster as containers (INTERNAL listener and controller quorum at the
containers' aliases): it elects a controller, takes writes through the proxies, keeps them
through a kill of one broker, and a broker cut off from the others by the engine's network
disconnect (the `partition-isolate` fault on docker) is visibly out of the ISR until healed,
when it is back on the run's network with its alias and address. One deployment per module."""
from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from onceproof.faults.base import Context, known_kinds
from onceproof.targets.deployment import Deployment

pytestmark = [pytest.mark.integration, pytest.mark.docker]


@pytest.fixture(scope="module")
def kafka3(docker_engine):
    from onceproof.targets.deployment import TargetsSpec
    from onceproof.targets.docker.runtime import DockerRuntime
    from tests.conftest import ARTIFACTS

    runtime = DockerRuntime(log_dir=ARTIFACTS / "docker-kafka3-logs")
    d = Deployment.create(runtime, TargetsSpec(kafka_nodes=3))
    try:
        d.start(timeout=180)  # three JVMs at once on a shared 2-core machine
        yield d
    finally:
        d.stop()


def _until(fn, timeout: float = 60.0, what: str = ""):
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - not yet
            last = e
        time.sleep(0.5)
    raise AssertionError(f"not {what} after {timeout:.0f}s; last: {last!r}")


def _isr(d: Deployment, topic: str) -> tuple[int, list[int]]:
    md = AdminClient({"bootstrap.servers": d.kafka_bootstrap("load")}).list_topics(topic, timeout=5)
    p = md.topics[topic].partitions[0]
    return p.leader, sorted(p.isrs)


def _create(d: Deployment, topic: str) -> None:
    admin = AdminClient({"bootstrap.servers": d.kafka_bootstrap("load")})
    admin.create_topics([NewTopic(topic, 1, 3, config={"min.insync.replicas": "2"})])[topic].result(30)
    _until(lambda: _isr(d, topic)[1] == [1, 2, 3], what="ISR [1, 2, 3]")


def _produce(d: Deployment, topic: str, values: range) -> None:
    p = Producer({"bootstrap.servers": d.kafka_bootstrap("pipeline"), "enable.idempotence": True, "acks": "all"})
    for i in values:
        p.produce(topic, key=b"k", value=str(i).encode())
    assert p.flush(60) == 0


def _read(d: Deployment, topic: str, count: int) -> list[bytes]:
    c = Consumer({"bootstrap.servers": d.kafka_bootstrap("pipeline"), "group.id": topic,
                  "enable.auto.commit": False})
    try:
        c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        got: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(got) < count and time.monotonic() < deadline:
            m = c.poll(1)
            if m is not None and not m.error():
                got.append(m.value())
        return got
    finally:
        c.close()


def test_three_containers_elect_a_controller_replicate_and_survive_a_broker_kill(kafka3):
    cluster = kafka3.kafka
    assert cluster.controller().name in {"kafka-1", "kafka-2", "kafka-3"}
    assert len({n.quorum()[0] for n in cluster.nodes if n.quorum()}) >= 1  # every node heard of a leader
    topic = f"k3-{uuid.uuid4().hex[:8]}"
    _create(kafka3, topic)
    _produce(kafka3, topic, range(50))
    victim = cluster.leader(topic)
    victim.kill()
    try:
        assert not victim.alive
        _until(lambda: _isr(kafka3, topic)[0] not in (-1, victim.node_id), what="a new leader elected")
        _produce(kafka3, topic, range(50, 100))  # acks=all with 2 of 3 in sync
    finally:
        victim.start()
    _until(lambda: _isr(kafka3, topic)[1] == [1, 2, 3], timeout=90, what="the killed broker back in the ISR")
    assert _read(kafka3, topic, 100) == [str(i).encode() for i in range(100)]


def test_partition_isolate_on_docker_cuts_a_broker_from_its_peers_and_heals(kafka3):
    from onceproof.targets.docker.cleanup import leftovers

    runtime = kafka3.runtime
    topic = f"iso-{uuid.uuid4().hex[:8]}"
    _create(kafka3, topic)
    _produce(kafka3, topic, range(20))
    run_net = runtime.network.name
    c1 = runtime.client.containers.get(f"op-{runtime.run_id}-kafka-1")
    ip_before = c1.attrs["NetworkSettings"]["Networks"][run_net]["IPAddress"]
    assert "docker" in known_kinds()["partition-isolate"].cls.runtimes
    fault = known_kinds()["partition-isolate"].cls("iso", Context.from_deployment(kafka3), ["kafka-1"], {})
    fault.apply()
    try:
        c1.reload()
        assert run_net not in c1.attrs["NetworkSettings"]["Networks"]
        assert fault.details["components"][0] == ["kafka-1"]
        # the isolated broker leaves the ISR (it cannot fetch from the leader, or lost leadership)
        seen: list[tuple[int, list[int]]] = []

        def out_of_isr() -> bool:
            seen.append(_isr(kafka3, topic))
            return 1 not in seen[-1][1] and seen[-1][0] in (2, 3)

        try:
            _until(out_of_isr, timeout=90, what="kafka-1 out of the ISR and not leading")
        except AssertionError as e:
            raise AssertionError(f"{e}; (leader, ISR) last seen: {seen[-3:]}") from None
        _produce(kafka3, topic, range(20, 40))  # the majority still takes acks=all writes
    finally:
        fault.heal()
    c1.reload()
    nets = c1.attrs["NetworkSettings"]["Networks"]
    assert list(nets) == [run_net] and nets[run_net]["IPAddress"] == ip_before
    assert "kafka-1" in (nets[run_net].get("Aliases") or [])
    assert not any("-cut-" in x for x in leftovers(runtime.run_id))
    _until(lambda: _isr(kafka3, topic)[1] == [1, 2, 3], timeout=120, what="kafka-1 back in the ISR")
    assert _read(kafka3, topic, 40) == [str(i).encode() for i in range(40)]
