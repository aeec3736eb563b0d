"""Network faults through Toxiproxy, observed by real clients of the shared Redis/PostgreSQL."""
from __future__ import annotations

import time

import psycopg
import pytest
import redis

from onceproof.faults.schedule import parse_entry
from tests.integration.faults.util import median, nemesis_records, redis_via, round_trips, within

pytestmark = pytest.mark.integration


def make(nemesis, kind: str, **params):  # type: ignore[no-untyped-def]
    (step,) = parse_entry({"at": 0, kind: params})
    return nemesis.make(step)


def test_blackhole_partition_makes_the_pipeline_time_out_leaves_the_load_generator_alone_and_heals(
        shared_targets, shared_nemesis):
    pipeline, load = redis_via(shared_targets, "pipeline"), redis_via(shared_targets, "load")
    assert pipeline.ping() and load.ping()
    f = make(shared_nemesis, "partition", target="redis", **{"from": "pipeline"})
    shared_nemesis.apply(f)
    t = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        pipeline.ping()
    assert 0.4 < time.monotonic() - t < 1.5  # nobody answered: the client's own 0.5 s timeout fired
    with pytest.raises(redis.TimeoutError):
        redis_via(shared_targets, "pipeline").ping()  # a new connection is swallowed too
    assert load.ping()  # the other group is not partitioned
    shared_nemesis.heal(f)
    assert redis_via(shared_targets, "pipeline").ping()
    recs = nemesis_records(shared_nemesis.history)
    assert [(r["type"], r["f"]) for r in recs] == [("invoke", "apply"), ("ok", "apply"), ("invoke", "heal"), ("ok", "heal")]
    assert recs[1]["value"]["proxies"] == ["pipeline-redis"] and recs[1]["value"]["targets"] == ["redis"]


def test_refuse_partition_closes_connections_and_refuses_new_ones_from_both_groups(shared_targets, shared_nemesis):
    pipeline, load = redis_via(shared_targets, "pipeline"), redis_via(shared_targets, "load")
    assert pipeline.ping() and load.ping()
    f = make(shared_nemesis, "partition", target="redis", style="refuse", **{"from": "both"})
    shared_nemesis.apply(f)
    for client in (pipeline, load, redis_via(shared_targets, "pipeline")):
        t = time.monotonic()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        assert time.monotonic() - t < 0.3  # refused at once, not a timeout
    assert redis_via(shared_targets, None).ping()  # the judge (direct) still sees the server
    shared_nemesis.heal(f)
    assert redis_via(shared_targets, "pipeline").ping() and redis_via(shared_targets, "load").ping()


def test_latency_raises_the_round_trip_by_at_least_the_configured_amount_and_heal_removes_it(
        shared_targets, shared_nemesis):
    dsn = shared_targets.postgres_dsn("pipeline")
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        before = median(round_trips(lambda: conn.execute("SELECT 1").fetchone(), 20))
        f = make(shared_nemesis, "latency", target="postgres", ms=120, jitter=0)
        shared_nemesis.apply(f)
        during = round_trips(lambda: conn.execute("SELECT 1").fetchone(), 5)
        shared_nemesis.heal(f)
        after = median(round_trips(lambda: conn.execute("SELECT 1").fetchone(), 20))
    assert min(during) >= before + 0.120
    assert min(during) < 0.120 + 0.1
    assert after < 0.02


def test_latency_in_both_directions_counts_twice_and_jitter_spreads_it(shared_targets, shared_nemesis):
    client = redis_via(shared_targets, "pipeline", timeout=2)
    f = make(shared_nemesis, "latency", target="redis", ms=40, jitter=20, direction="both")
    shared_nemesis.apply(f)
    rtts = round_trips(client.ping, 20)
    shared_nemesis.heal(f)
    assert median(rtts) >= 0.075  # 2 x 40 ms, jitter +-20 ms each way
    assert max(rtts) - min(rtts) > 0.01


def test_bandwidth_caps_throughput(shared_targets, shared_nemesis):
    direct, client = redis_via(shared_targets, None), redis_via(shared_targets, "pipeline", timeout=10)
    direct.set("faults:bandwidth", "x" * 200_000)
    t = time.perf_counter()
    client.get("faults:bandwidth")
    free = time.perf_counter() - t
    f = make(shared_nemesis, "bandwidth", target="redis", rate=100)  # KB/s
    shared_nemesis.apply(f)
    t = time.perf_counter()
    assert len(client.get("faults:bandwidth")) == 200_000
    capped = time.perf_counter() - t
    shared_nemesis.heal(f)
    rate_kb_s = 200_000 / 1000 / capped
    assert 70 <= rate_kb_s <= 110, f"{rate_kb_s:.0f} KB/s through a 100 KB/s cap (uncapped took {free * 1000:.1f} ms)"
    t = time.perf_counter()
    client.get("faults:bandwidth")
    assert time.perf_counter() - t < 0.2
    direct.delete("faults:bandwidth")


def test_reset_breaks_open_connections_and_new_ones_until_healed(shared_targets, shared_nemesis):
    client = redis_via(shared_targets, "pipeline")
    assert client.ping()
    f = make(shared_nemesis, "reset", target="redis")
    shared_nemesis.apply(f)
    with pytest.raises(redis.ConnectionError) as e:
        client.ping()
    with pytest.raises(redis.ConnectionError):
        redis_via(shared_targets, "pipeline").ping()
    shared_nemesis.heal(f)
    assert redis_via(shared_targets, "pipeline").ping()
    assert "reset" in str(e.value).lower() or "closed" in str(e.value).lower()


def test_slicer_slows_a_reply_by_its_slices(shared_targets, shared_nemesis):
    direct, client = redis_via(shared_targets, None), redis_via(shared_targets, "pipeline", timeout=5)
    direct.set("faults:slicer", "y" * 200)
    f = make(shared_nemesis, "slicer", target="redis", size=20, delay="5ms")
    shared_nemesis.apply(f)
    t = time.perf_counter()
    assert client.get("faults:slicer") == "y" * 200
    sliced = time.perf_counter() - t
    shared_nemesis.heal(f)
    assert sliced >= 9 * 0.005  # >= 10 slices of 20 bytes, 5 ms apart
    direct.delete("faults:slicer")


def test_limit_data_closes_a_connection_after_its_bytes(shared_targets, shared_nemesis):
    direct, client = redis_via(shared_targets, None), redis_via(shared_targets, "pipeline")
    direct.set("faults:limit", "z" * 5000)
    assert client.ping()
    f = make(shared_nemesis, "limit-data", target="redis", bytes=1000)
    shared_nemesis.apply(f)
    assert client.ping()  # small replies pass
    assert within(2, client.get, "faults:limit")[0] == "error"  # this one crosses the limit: closed
    shared_nemesis.heal(f)
    assert redis_via(shared_targets, "pipeline").get("faults:limit") == "z" * 5000
    direct.delete("faults:limit")


def test_overlapping_partitions_of_one_proxy_heal_only_when_the_last_one_heals(shared_targets, shared_nemesis):
    a = make(shared_nemesis, "partition", target="redis", style="refuse")
    b = make(shared_nemesis, "partition", target=["redis", "postgres"], style="refuse")
    shared_nemesis.apply(a)
    shared_nemesis.apply(b)
    shared_nemesis.heal(a)  # out of order: b still holds the redis proxy
    with pytest.raises(redis.ConnectionError):
        redis_via(shared_targets, "pipeline").ping()
    shared_nemesis.heal(b)
    assert redis_via(shared_targets, "pipeline").ping()


def test_kafka_roles_resolve_to_the_node_holding_them(shared_targets, shared_nemesis):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": shared_targets.kafka_bootstrap()})
    for fut in admin.create_topics([NewTopic("faults-roles", 1, 1)]).values():
        fut.result(30)
    leader = make(shared_nemesis, "latency", target="kafka-leader", topic="faults-roles", partition=0, ms=1)
    controller = make(shared_nemesis, "latency", target="kafka-controller", ms=1)
    for f in (leader, controller):
        shared_nemesis.apply(f)
        assert f.targets == ["kafka-1"] and f.details["proxies"] == ["pipeline-kafka-1"]
    assert leader.describe()["roles"] == {"kafka-leader": "kafka-1"}
    assert controller.describe()["roles"] == {"kafka-controller": "kafka-1"}


def test_the_leader_of_a_topic_that_does_not_exist_is_not_found_and_the_topic_not_created(
        shared_targets, shared_nemesis):
    """Looking a role up never changes the cluster: asking for the metadata of an absent topic
    (a producer-type client's default) would create it, and the fault would then apply."""
    from confluent_kafka.admin import AdminClient

    topic = f"faults-absent-{time.monotonic_ns()}"
    fault = make(shared_nemesis, "latency", target="kafka-leader", topic=topic, partition=0, ms=1)
    assert shared_nemesis.apply(fault) is False
    time.sleep(1.0)  # a topic created by the lookup would show up by now
    admin = AdminClient({"bootstrap.servers": shared_targets.kafka_bootstrap(), "allow.auto.create.topics": False})
    assert topic not in admin.list_topics(timeout=10).topics
