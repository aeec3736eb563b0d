"""Where events landed and how far a consumer got, on real servers: every acknowledged event
has its source position (Kafka offset, Redis entry id, Postgres pos) in a `landed` record, and
the progress readers see a consumer's committed position against the end of the source."""
from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import psycopg
import pytest

from onceproof.progress import IsolatedKafkaGroups, KafkaGroups, ProgressQuery, RedisGroups, _postgres_ends
from onceproof.sources import KafkaSource, PostgresSource, RedisSource
from onceproof.targets.redis import client

from tests.integration.load import send_load

pytestmark = pytest.mark.integration


def _load(d: Any, kind: str, name: str, tmp_path: Any) -> dict[str, tuple[int, Any]]:
    source = {"kafka": KafkaSource, "redis": RedisSource, "postgres": PostgresSource}[kind](d, name, 2)
    send_load(source, tmp_path / "h.jsonl", 0.5)
    landed: dict[str, tuple[int, Any]] = {}
    acked = set()
    for line in open(tmp_path / "h.jsonl", "rb"):
        r = orjson.loads(line)
        if r["f"] == "landed":
            landed.update((eid, (r["value"]["partition"], pos)) for eid, pos in r["value"]["events"])
        elif r["f"] == "send" and r["type"] == "ok":
            acked.add(r["value"]["id"])
    assert acked and set(landed) == acked
    return landed


@pytest.mark.parametrize("reader_class", [KafkaGroups, IsolatedKafkaGroups])
def test_kafka_offsets_landed_and_a_groups_committed_offsets_are_its_progress(shared_targets, tmp_path, reader_class):
    from confluent_kafka import Consumer, TopicPartition

    d = shared_targets
    topic = f"prog_{uuid.uuid4().hex[:6]}"
    landed = _load(d, "kafka", topic, tmp_path)
    per_partition: dict[int, list[int]] = {}
    for p, off in landed.values():
        per_partition.setdefault(p, []).append(off)
    assert all(sorted(offs) == list(range(len(offs))) for offs in per_partition.values())
    group = f"g-{topic}"
    c = Consumer({"bootstrap.servers": d.kafka_bootstrap(), "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, 5)], asynchronous=False)  # 5 processed on partition 0
    c.close()
    reader = reader_class(d.kafka_bootstrap(), topic, [])
    groups = reader.read()
    assert [g.group for g in groups] == [group]  # found through the admin API
    ends = {p: len(offs) for p, offs in per_partition.items()}
    assert groups[0].partitions == [[0, 5, ends.get(0, 0)], [1, -1, ends.get(1, 0)]]
    assert groups[0].lag == sum(ends.values()) - 5
    reader.close()


def _topic_with_a_group_at(d: Any, tmp_path: Any, offset: int) -> tuple[str, str]:
    """A loaded topic and a consumer group that committed `offset` on its partition 0."""
    from confluent_kafka import Consumer, TopicPartition

    topic = f"prog_{uuid.uuid4().hex[:6]}"
    _load(d, "kafka", topic, tmp_path)
    group = f"g-{topic}"
    c = Consumer({"bootstrap.servers": d.kafka_bootstrap(), "group.id": group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    c.close()
    return topic, group


def test_a_crash_of_the_kafka_admin_client_is_one_failed_read_and_the_next_read_tracks_the_same_groups(
        shared_targets, tmp_path):
    """librdkafka aborts its process on a coordinator timeout (issues #3663, #4605): the reader's
    child takes the abort (SIGABRT here, as the assertion raises), the run does not."""
    import os
    import signal

    from onceproof.groups_worker import WorkerCrashed

    d = shared_targets
    topic, group = _topic_with_a_group_at(d, tmp_path, 3)
    reader = IsolatedKafkaGroups(d.kafka_bootstrap(), topic, [])
    try:
        assert [g.group for g in reader.read()] == [group]
        child = reader._worker.proc
        os.kill(child.pid, signal.SIGABRT)
        child.wait(timeout=10)
        with pytest.raises(WorkerCrashed, match="crashed"):
            reader.read()
        assert child.poll() is not None
        again = reader.read()  # a new child, still tracking the group found before the crash
        assert [g.group for g in again] == [group] and again[0].partitions[0][1] == 3
        assert reader._worker.proc.pid != child.pid
        assert reader.ends().keys() == {0, 1}
    finally:
        reader.close()
    assert reader._worker is None


def test_redis_entry_ids_landed_and_a_groups_pending_entries_hold_its_progress(shared_targets, tmp_path):
    d = shared_targets
    stream = f"prog_{uuid.uuid4().hex[:6]}"
    landed = _load(d, "redis", stream, tmp_path)
    r = client(d.redis.host, d.redis.port, password=d.redis.password)
    ids = [e[0] for e in r.xrange(stream)]
    assert sorted(pos for _, pos in landed.values()) == sorted(ids)
    r.xgroup_create(stream, "g", id="0")
    got = r.xreadgroup("g", "c1", {stream: ">"}, count=10)[0][1]
    r.xack(stream, "g", *[eid for eid, _ in got[:4]])  # 4 done, 6 delivered and pending
    groups = RedisGroups(d.redis.host, d.redis.port, stream, d.redis.password).read()
    assert len(groups) == 1 and groups[0].pending == 6
    (_, committed, end), = groups[0].partitions
    assert committed == got[4][0]  # everything before the oldest pending entry is done
    assert groups[0].lag == len(ids) - 4


def test_postgres_pos_landed_and_a_progress_query_is_the_pipelines_position(shared_targets, tmp_path):
    d = shared_targets
    table = f"prog_{uuid.uuid4().hex[:6]}"
    landed = _load(d, "postgres", table, tmp_path)
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        rows = dict(c.execute(f"SELECT id, pos FROM {table}").fetchall())
        c.execute(f"CREATE TABLE {table}_done (next bigint)")
        c.execute(f"INSERT INTO {table}_done VALUES (11)")
    assert {eid: pos for eid, (_, pos) in landed.items()} == rows
    reader = ProgressQuery(d.postgres_dsn(), f"SELECT 0, next FROM {table}_done",
                           _postgres_ends(d.postgres_dsn(), table))
    (g,) = reader.read()
    assert g.partitions == [[0, 11, max(rows.values()) + 1]]
    assert g.lag == max(rows.values()) + 1 - 11
    reader.close()


def test_reads_recover_after_the_broker_was_paused_past_its_session_and_restarted(shared_targets, tmp_path):
    """A broker paused past broker.session.timeout.ms is fenced, then killed and restarted, and
    comes back with new leader epochs: the reader's next reads must succeed again (a new user's runs had every progress read
    after such a pause fail with FENCED_LEADER_EPOCH, so the drain always waited quiesce.max)."""
    d = shared_targets
    topic, group = _topic_with_a_group_at(d, tmp_path, 2)
    broker = next(n for n in d.servers() if n.kind == "kafka")
    reader = IsolatedKafkaGroups(d.kafka_bootstrap(), topic, [])
    errors: list[str] = []
    try:
        assert [g.group for g in reader.read()] == [group]
        broker.pause()
        try:
            time.sleep(6)  # > broker.session.timeout.ms (4 s): the broker is fenced
        finally:
            broker.resume()
        broker.kill()  # and restarted: new leader epochs
        broker.start()
        ok = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ok = reader.read()
                if ok and ok[0].partitions[0][1] == 2:
                    break
            except Exception as e:  # noqa: BLE001 - reads may fail while the broker rejoins
                errors.append(str(e))
            time.sleep(1)
        assert ok and [g.group for g in ok] == [group] and ok[0].partitions[0][1] == 2, errors[-3:]
        for _ in range(3):  # and keep succeeding
            assert reader.read()[0].partitions[0][1] == 2
    finally:
        reader.close()
    print(f"{len(errors)} failed reads before recovering: {errors[:2]}")


def test_a_redis_hash_of_partition_to_next_offset_is_the_progress_of_a_pipeline_keeping_it_in_redis(
        shared_targets, tmp_path):
    """A Kafka pipeline that keeps its offsets in Redis (the dedup-cache pattern) had no way to
    show its progress: every run waited out quiesce.max as "stalled" (found by a new user).
    `pipeline.progress: {redis: {hash: NAME}}` reads partition -> next offset from a hash; a
    partition not in it is at -1 (nothing processed), junk fields are skipped."""
    from onceproof.plan import load_plan
    from onceproof.progress import RedisHashProgress, make_reader

    d = shared_targets
    topic = f"prog-{uuid.uuid4().hex[:6]}"
    landed = _load(d, "kafka", topic, tmp_path)
    ends: dict[int, int] = {}
    for _, (p, off) in landed.items():
        ends[p] = max(ends.get(p, 0), off + 1)
    name = f"offsets-{uuid.uuid4().hex[:6]}"
    r = client(d.redis.host, d.redis.port, password=d.redis.password)
    r.hset(name, mapping={"0": 3, "junk": "x"})
    plan = tmp_path / "p.yaml"
    plan.write_text(f"name: t\ntargets: {{kafka: {{nodes: 1}}, redis: {{}}}}\npipeline: {{command: [x], progress: "
                    f"{{redis: {{hash: {name}}}}}}}\nworkload: {{source: 'kafka:{topic}', sink: 'kafka:out'}}\n")
    reader = make_reader(f"kafka:{topic}", d, [], load_plan(plan).pipeline.progress)
    try:
        assert isinstance(reader, RedisHashProgress)
        (g,) = reader.read()
        assert g.partitions == [[p, 3 if p == 0 else -1, e] for p, e in sorted(ends.items())]
        assert g.lag == sum(e - (3 if p == 0 else 0) for p, e in ends.items())
        r.hset(name, mapping={str(p): e for p, e in ends.items()})  # caught up
        (g,) = reader.read()
        assert g.lag == 0
    finally:
        reader.close()
        r.delete(name)
    bad = tmp_path / "bad.yaml"  # a progress hash needs the redis target
    bad.write_text(plan.read_text().replace(", redis: {}", ""))
    from onceproof.plan import PlanError

    with pytest.raises(PlanError, match="pipeline.progress.redis"):
        load_plan(bad)
