"""The workload's sources and the observer's sinks on real servers: what is sent arrives with
its outcome recorded, what is applied is seen, and an effect that vanishes is a flicker."""
from __future__ import annotations

import threading
import uuid

import orjson
import psycopg
import pytest

from onceproof.checkers import exactly_once
from onceproof.checkers.history import read_history
from onceproof.recorder import HistoryWriter
from onceproof.observer import Observer
from onceproof.sinks import PostgresSink, RedisSetSink, RedisStreamSink
from onceproof.sources import KafkaSource, PostgresSource, RedisSource
from onceproof.workload import Workload
from onceproof.targets.redis import client

from tests.integration.load import send_load

pytestmark = pytest.mark.integration


def _sends(path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in open(path, "rb"):
        r = orjson.loads(line)
        if r["f"] == "send":
            out.setdefault(r["value"]["id"], []).append(r["type"])
    return out


@pytest.mark.parametrize("kind", ["kafka", "redis", "postgres"])
def test_every_event_sent_is_recorded_with_invoke_and_ok_and_lands_in_the_source(shared_targets, tmp_path, kind):
    d = shared_targets
    name = f"src_{kind}_{uuid.uuid4().hex[:6]}"
    source = {"kafka": KafkaSource, "redis": RedisSource, "postgres": PostgresSource}[kind](d, name, 2)
    w = send_load(source, tmp_path / "h.jsonl", 1.0, rate=2000, keys=7, seed=3)
    sends = _sends(tmp_path / "h.jsonl")
    assert len(sends) == w.stats.sent >= 1500
    assert all(types == ["invoke", "ok"] for types in sends.values())
    if kind == "redis":
        r = client(d.redis.host, d.redis.port, password=d.redis.password)
        entries = r.xrange(name)
        assert [e[1]["id"] for e in entries] == [f"e{i}" for i in range(len(sends))]
        per_key: dict[str, list[int]] = {}
        for _, f in entries:
            per_key.setdefault(f["key"], []).append(int(f["seq"]))
        assert all(seqs == list(range(len(seqs))) for seqs in per_key.values())  # seq counts per key from 0
    elif kind == "postgres":
        with psycopg.connect(d.postgres_dsn()) as c:
            assert c.execute(f"SELECT count(DISTINCT id) FROM {name}").fetchone()[0] == len(sends)


def test_a_refused_redis_connection_is_fail_and_nothing_is_written(shared_targets, tmp_path):
    d = shared_targets
    name = f"src_refused_{uuid.uuid4().hex[:6]}"
    source = RedisSource(d, name, 1)
    source.setup()
    source.address = ("127.0.0.1", d.runtime.free_port())  # nobody listens there
    history = HistoryWriter(tmp_path / "h.jsonl")
    w = Workload(source, history, rate=500, keys=3, seed=1)
    w.run(0.3, threading.Event())
    history.close()
    sends = _sends(tmp_path / "h.jsonl")
    assert sends and all(types == ["invoke", "fail"] for types in sends.values())
    assert client(d.redis.host, d.redis.port, password=d.redis.password).xlen(name) == 0



def test_postgres_observer_sees_new_effects_and_a_deleted_one_is_a_flicker(shared_targets, tmp_path):
    d = shared_targets
    name = f"eff_{uuid.uuid4().hex[:6]}"
    sink = PostgresSink(d, name)
    sink.setup()
    history = HistoryWriter(tmp_path / "h.jsonl")
    for i in range(3):  # three events sent and acknowledged
        history.record("load", "invoke", "send", {"id": f"e{i}", "key": "k", "seq": i})
        history.record("load", "ok", "send", {"id": f"e{i}", "key": "k", "seq": i})
    obs = Observer(sink, history)
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) VALUES ('e0','k',0,0), ('e1','k',1,0)")
        assert obs.observe_once() == 2
        c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) VALUES ('e2','k',2,0)")
        assert obs.observe_once() == 1
        c.execute(f"DELETE FROM {name} WHERE event_id = 'e1'")  # a visible effect rolled back
        obs.observe_once()
        c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) VALUES ('e1','k',1,1)")
    obs.final_read()
    sink.close()
    history.close()
    result = exactly_once.check(read_history(tmp_path / "h.jsonl"))
    assert result["valid"] is False
    assert result["anomalies"]["flicker"] == 1
    assert result["examples"]["flicker"][0]["id"] == "e1"
    assert result["anomalies"]["duplicate"] == 0 and result["anomalies"]["lost"] == 0


def test_postgres_observer_records_when_each_effect_was_committed_not_when_it_was_read(shared_targets, tmp_path):
    """Latency is measured to the commit (logical decoding's commit time, mapped to the run's
    clock), not to the poll: two transactions 0.4 s apart, read once 0.4 s after the second."""
    import time

    d = shared_targets
    name = f"eff_{uuid.uuid4().hex[:6]}"
    sink = PostgresSink(d, name)
    sink.setup()
    history = HistoryWriter(tmp_path / "h.jsonl")
    obs = Observer(sink, history)
    spans = []
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        for rows in ("('e0','k',0,0), ('e1','k',1,0)", "('e2','k',2,0)"):
            before = history.now()
            c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) VALUES {rows}")
            spans.append((before, history.now()))
            time.sleep(0.4)
    assert obs.observe_once() == 3
    sink.close()
    history.close()
    rec = [orjson.loads(ln) for ln in open(tmp_path / "h.jsonl", "rb")][-1]
    assert rec["f"] == "observe" and rec["value"]["visible_from"] == "commit"
    runs = rec["value"]["visible"]
    assert [n for n, _ in runs] == [2, 1], runs
    slack = 50_000_000  # the server's clock is read over a round trip: its midpoint is the estimate
    for (n, t), (lo, hi) in zip(runs, spans):
        assert lo - slack <= t <= hi + slack, (runs, spans)
    assert rec["time"] - runs[-1][1] >= 350_000_000  # the read came 0.4 s after the commit
    lat = read_history(tmp_path / "h.jsonl").eff_vis
    assert lat is not None and lat.tolist() == [runs[0][1], runs[0][1], runs[1][1]]


def test_redis_stream_and_set_sinks_read_incrementally_and_fully(shared_targets):
    d = shared_targets
    r = client(d.redis.host, d.redis.port, password=d.redis.password)
    stream = RedisStreamSink(d, f"effs_{uuid.uuid4().hex[:6]}")
    stream.setup()
    r.xadd(stream.name, {"id": "e1", "key": "k", "seq": 0, "replica": 0})
    r.xadd(stream.name, {"id": "e2", "key": "k", "seq": 1, "replica": 1})
    assert stream.read() == ([["e1", "k", 0, 0], ["e2", "k", 1, 1]], False)
    r.xadd(stream.name, {"id": "e2", "key": "k", "seq": 1, "replica": 0})
    assert stream.read() == ([["e2", "k", 1, 0]], False)
    assert [e[0] for e in stream.final_read()] == ["e1", "e2", "e2"]
    members = RedisSetSink(d, f"effset_{uuid.uuid4().hex[:6]}")
    members.setup()
    r.sadd(members.name, "e1", "e2")
    assert sorted(e[0] for e in members.read()[0]) == ["e1", "e2"]
    r.srem(members.name, "e1")
    events, full = members.read()
    assert full is True and [e[0] for e in events] == ["e2"]


@pytest.mark.parametrize("transactional", [False, True])
def test_kafka_sink_reads_effects_while_the_run_goes_on_not_only_at_the_final_read(shared_targets, transactional):
    """The observer's incremental reads of a Kafka sink see committed effects as they come (the
    latency of an effect is when a read first saw it); found: every read of a run was empty
    and only the final read saw the effects."""
    import json
    import time
    import uuid

    from confluent_kafka import Producer

    from onceproof.sinks import KafkaSink

    d = shared_targets
    name = f"sink_{uuid.uuid4().hex[:6]}"
    sink = KafkaSink(d, name)
    sink.setup()
    conf = {"bootstrap.servers": d.kafka_bootstrap()}
    if transactional:
        conf["transactional.id"] = f"t-{name}"
    producer = Producer(conf)
    if transactional:
        producer.init_transactions(30)
    seen: list = []
    try:
        for batch in range(3):
            if transactional:
                producer.begin_transaction()
            for i in range(10):
                eid = f"e{batch * 10 + i}"
                producer.produce(name, json.dumps({"id": eid, "key": "k", "seq": i, "replica": 0}).encode(), key=b"k")
            if transactional:
                producer.commit_transaction(30)
            else:
                producer.flush(30)
            deadline = time.monotonic() + 20
            while len(seen) < (batch + 1) * 10 and time.monotonic() < deadline:
                effects, _full = sink.read()
                seen += effects
                if effects:  # when each became visible: the messages' timestamps, mapped to this clock
                    runs, clock = sink.visible()
                    assert sum(n for n, _ in runs) == len(effects) and clock in ("CreateTime", "LogAppendTime")
                    assert all(time.monotonic_ns() - 60 * 10**9 < t <= time.monotonic_ns() + 10**9 for _, t in runs)
            assert len(seen) == (batch + 1) * 10, (batch, len(seen))
        assert sorted(e[0] for e in seen) == sorted(f"e{i}" for i in range(30))
        assert len(sink.final_read()) == 30
    finally:
        sink.close()


def test_kafka_sink_reads_partitions_the_topic_did_not_list_when_the_observer_started(shared_targets):
    """Right after a topic is created its metadata may list no partition: the observer's
    consumer then had an empty assignment and read nothing for the whole run (found with Quix
    Streams: 0 of 34 reads saw an effect, the final read saw all 3,599). It now assigns the
    partitions it finds later."""
    import json
    import time
    import uuid

    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient

    from onceproof.sinks import KafkaSink
    from onceproof.topics import create_topic

    d = shared_targets
    name = f"late_{uuid.uuid4().hex[:6]}"
    sink = KafkaSink(d, name)
    sink.admin = AdminClient({"bootstrap.servers": d.kafka_bootstrap()})
    sink.consumer = sink._consumer()  # the topic does not exist yet: nothing to assign
    try:
        assert sink.consumer.assignment() == []
        create_topic(d, name, 3)
        producer = Producer({"bootstrap.servers": d.kafka_bootstrap()})
        for i in range(30):
            producer.produce(name, json.dumps({"id": f"e{i}", "key": f"k{i % 3}", "seq": i, "replica": 0}).encode(),
                             key=f"k{i % 3}".encode())
        producer.flush(30)
        seen: list = []
        deadline = time.monotonic() + 30
        while len(seen) < 30 and time.monotonic() < deadline:
            seen += sink.read()[0]
            time.sleep(0.2)
        assert sorted(e[0] for e in seen) == sorted(f"e{i}" for i in range(30))
        assert {tp.partition for tp in sink.consumer.assignment()} == {0, 1, 2}
    finally:
        sink.close()


def test_source_copies_counts_the_records_an_event_has_in_a_kafka_source(shared_targets):
    """What the checker allows a pipeline is what the source held: read back by id, in the
    contract's JSON or from a header whose template is exactly `{id}`."""
    import json
    import uuid

    from confluent_kafka import Producer

    from onceproof.formats import Format
    from onceproof.source_copies import kafka_copies
    from onceproof.topics import create_topic

    d = shared_targets
    plain, headed = f"sc_{uuid.uuid4().hex[:6]}", f"sch_{uuid.uuid4().hex[:6]}"
    for t in (plain, headed):
        create_topic(d, t, 2)
    p = Producer({"bootstrap.servers": d.kafka_bootstrap()})
    for eid in ["e0", "e1", "e1", "e2", "e2", "e2"]:
        p.produce(plain, json.dumps({"id": eid, "key": "k", "seq": 0}).encode(), key=eid.encode())
        p.produce(headed, f"k,0,{eid}".encode(), key=b"k", headers=[("onceproof-id", eid.encode())])
    p.flush(30)
    got = kafka_copies(d.kafka_bootstrap(), plain, None)
    assert got == {"source": f"kafka:{plain}", "records": 6, "copies": {"e1": 2, "e2": 3}}
    fmt = Format({"value": "{key},{seq},{id}", "headers": {"onceproof-id": "{id}"}})
    assert kafka_copies(d.kafka_bootstrap(), headed, fmt)["copies"] == {"e1": 2, "e2": 3}
    hidden = kafka_copies(d.kafka_bootstrap(), headed, Format({"value": "{key},{seq},{id}"}))
    assert hidden["copies"] is None and "cannot be read back" in hidden["note"]
    # the user's own JSON, the id a plain string field nested in it (a new user's format was
    # "cannot be read back", so a producer's copy would have counted as a duplicate)
    nested = f"scj_{uuid.uuid4().hex[:6]}"
    create_topic(d, nested, 2)
    for eid in ["e0", "e1", "e1"]:
        p.produce(nested, json.dumps({"order": {"evt": eid}, "cust": "k", "n": 0}).encode(), key=b"k")
    p.produce(nested, b"not json", key=b"k")
    p.flush(30)
    fmt = Format({"value": {"order": {"evt": "{id}"}, "cust": "{key}", "n": "{seq}"}})
    assert kafka_copies(d.kafka_bootstrap(), nested, fmt)["copies"] == {"e1": 2}
