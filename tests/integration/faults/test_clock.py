"""Clock faults move the wall clock the servers themselves read: Redis TIME, PostgreSQL
now(), the Kafka broker's LogAppendTime, a Python pipeline's time.time(); and back on heal."""
from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import psycopg
import pytest

from onceproof.faults.base import Context
from onceproof.faults.nemesis import Nemesis
from onceproof.faults.schedule import parse_entry
from onceproof.targets.process import CommandNode
from tests.integration.faults.util import nemesis_records, redis_via, wait_for

pytestmark = pytest.mark.integration


def make(nemesis, kind: str, **params):  # type: ignore[no-untyped-def]
    (step,) = parse_entry({"at": 0, kind: params})
    return nemesis.make(step)


def redis_skew(client) -> float:  # type: ignore[no-untyped-def]
    s, us = client.time()
    return s + us / 1e6 - time.time()


def test_every_server_runs_with_the_clock_shim_loaded(shared_targets):
    for node in shared_targets.servers():
        maps = Path(f"/proc/{node.pid}/maps").read_text()
        assert "libonceproof_clock" in maps, node.name


def test_clock_skew_moves_redis_time_by_the_offset_and_back(shared_targets, shared_nemesis):
    client = redis_via(shared_targets, None)
    assert abs(redis_skew(client)) < 0.05
    f = make(shared_nemesis, "clock-skew", target="redis", offset="-30s")
    shared_nemesis.apply(f)
    assert redis_skew(client) == pytest.approx(-30, abs=0.05)
    shared_nemesis.heal(f)
    assert abs(redis_skew(client)) < 0.05
    apply_ok = [r for r in nemesis_records(shared_nemesis.history) if r["type"] == "ok" and r["f"] == "apply"]
    assert apply_ok[0]["value"]["offsets"] == {"redis": -30.0}


def test_clock_skew_moves_postgres_now_forwards_and_back(shared_targets, shared_nemesis):
    with psycopg.connect(shared_targets.postgres_dsn(), autocommit=True, connect_timeout=5) as conn:
        def skew() -> float:
            now, clock = conn.execute("SELECT extract(epoch FROM now()), "
                                      "extract(epoch FROM clock_timestamp())").fetchone()
            return float(now) - time.time(), float(clock) - time.time()

        f = make(shared_nemesis, "clock-skew", target="postgres", offset="2m")
        shared_nemesis.apply(f)
        assert skew() == pytest.approx((120, 120), abs=0.05)
        shared_nemesis.heal(f)
        assert skew() == pytest.approx((0, 0), abs=0.05)


def test_clock_skew_moves_the_kafka_brokers_record_timestamps_and_back(shared_targets, shared_nemesis):
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    bootstrap = shared_targets.kafka_bootstrap()
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topic = "faults-clock"
    for fut in admin.create_topics([NewTopic(topic, 1, 1, config={"message.timestamp.type": "LogAppendTime"})]).values():
        fut.result(30)
    producer = Producer({"bootstrap.servers": bootstrap})

    def append(value: bytes) -> float:
        producer.produce(topic, value)
        assert producer.flush(10) == 0
        return time.time()

    f = make(shared_nemesis, "clock-skew", target="kafka-1", offset="-1h")
    sent = {b"before": append(b"before")}
    shared_nemesis.apply(f)
    sent[b"during"] = append(b"during")
    shared_nemesis.heal(f)
    sent[b"after"] = append(b"after")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "faults-clock", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    skews = {}
    deadline = time.monotonic() + 30
    while len(skews) < 3 and time.monotonic() < deadline:
        m = consumer.poll(1)
        if m is not None and not m.error():
            skews[m.value()] = m.timestamp()[1] / 1000 - sent[m.value()]
    consumer.close()
    assert skews[b"before"] == pytest.approx(0, abs=0.5)
    assert skews[b"during"] == pytest.approx(-3600, abs=0.5)
    assert skews[b"after"] == pytest.approx(0, abs=0.5)


def test_clock_strobe_flips_redis_time_between_the_offset_and_true_time(shared_targets, shared_nemesis):
    client = redis_via(shared_targets, None)
    f = make(shared_nemesis, "clock-strobe", target="redis", offset="10s", period="50ms")
    shared_nemesis.apply(f)
    seen = []
    t_end = time.monotonic() + 0.6
    while time.monotonic() < t_end:
        seen.append(round(redis_skew(client)))
        time.sleep(0.005)
    shared_nemesis.heal(f)
    flips = sum(1 for a, b in zip(seen, seen[1:]) if a != b)
    assert set(seen) == {0, 10}
    assert 8 <= flips <= 13  # every 50 ms for 0.6 s
    assert abs(redis_skew(client)) < 0.05


def test_overlapping_skews_add_up_and_each_heal_removes_its_own_share(shared_targets, shared_nemesis):
    client = redis_via(shared_targets, None)
    a = make(shared_nemesis, "clock-skew", target="redis", offset="30s")
    b = make(shared_nemesis, "clock-skew", target="redis", offset="-5s")
    shared_nemesis.apply(a)
    shared_nemesis.apply(b)
    assert redis_skew(client) == pytest.approx(25, abs=0.05)
    shared_nemesis.heal(a)  # out of order
    assert redis_skew(client) == pytest.approx(-5, abs=0.05)
    shared_nemesis.heal(b)
    assert abs(redis_skew(client)) < 0.05


def test_clock_skew_moves_a_python_pipeline_replicas_time(runtime, tmp_path):
    from onceproof.recorder import HistoryWriter

    script = "import time\nwhile True:\n    print(f'T {time.time():.3f}', flush=True)\n    time.sleep(0.01)\n"
    node = CommandNode(runtime, "pipeline-0", [sys.executable, "-c", script], {})
    node.start()
    history = HistoryWriter(tmp_path / "history.jsonl")
    nemesis = Nemesis(Context(nodes={"pipeline-0": node}, toxiproxy=None, proxies={}, rng=random.Random(1)), history)

    def stamps() -> list[float]:  # what the replica printed (its log also holds the command line)
        return [float(line[2:]) for line in node.log_path.read_text().splitlines() if line.startswith("T ")]

    def replica_skew() -> float:
        return stamps()[-1] - time.time()

    try:
        assert wait_for(lambda: len(stamps()) > 3, 10)
        f = make(nemesis, "clock-skew", target="pipeline", offset="45s")
        nemesis.apply(f)
        assert wait_for(lambda: abs(replica_skew() - 45) < 0.1, 2)
        nemesis.heal(f)
        assert wait_for(lambda: abs(replica_skew()) < 0.1, 2)
    finally:
        nemesis.heal_all()
        history.close()
        node.stop()


def test_clock_skew_on_a_process_that_does_not_load_the_shim_fails_instead_of_counting_as_applied(runtime, tmp_path):
    """A process whose C library cannot preload the shim (here: one that clears LD_PRELOAD and
    execs itself; on docker, a pipeline image not built on glibc) would take a skew that moves
    nothing. The fault fails, naming why, and the replica's clock never moved (found on docker:
    a skew of an image pipeline counted as applied while its time.time() never jumped)."""
    from onceproof.recorder import HistoryWriter

    script = "import time\nwhile True:\n    print(f'T {time.time():.3f}', flush=True)\n    time.sleep(0.01)\n"
    node = CommandNode(runtime, "pipeline-0", ["env", "LD_PRELOAD=", sys.executable, "-c", script], {})
    node.start()
    history = HistoryWriter(tmp_path / "history.jsonl")
    nemesis = Nemesis(Context(nodes={"pipeline-0": node}, toxiproxy=None, proxies={}, rng=random.Random(1)), history)

    def stamps() -> list[float]:
        return [float(line[2:]) for line in node.log_path.read_text().splitlines() if line.startswith("T ")]

    try:
        assert wait_for(lambda: len(stamps()) > 3, 10)
        assert node.clock_shim_loaded() is False
        f = make(nemesis, "clock-skew", target="pipeline", offset="45s")
        nemesis.apply(f)
        time.sleep(0.2)
        assert abs(stamps()[-1] - time.time()) < 1
        history.flush()
        fails = [r for r in nemesis_records(history) if r["type"] == "fail" and r["f"] == "apply"]
        assert fails and "does not load the clock shim" in fails[0]["value"]["error"], nemesis_records(history)
    finally:
        nemesis.heal_all()
        history.close()
        node.stop()
