"""Bring your own pipeline (issue 17) on real servers: source formats put each event where the
plan says (value/key/header templates, stream fields, table columns); sink mappings read the
user's own store back as applications (a query, a table followed by logical decoding with
re-applications of an upsert visible, a topic with the id in a header or a regex, Redis lists
and hashes); state comes from a compacted topic of 8-byte longs; the decoding slot is dropped."""
from __future__ import annotations

import uuid

import orjson
import psycopg
import pytest

from onceproof.formats import Format
from onceproof.mappings import (KafkaMapping, MappedKafkaSink, PostgresMapping, PostgresQuerySink, PostgresTableSink,
                                RedisMapping, RedisMappedHash, RedisMappedList, RedisMappedSet, RedisMappedStream, StateSpec, state_reader)
from onceproof.recorder import HistoryWriter
from onceproof.sinks import PostgresSink
from onceproof.sources import KafkaSource, PostgresSource, RedisSource
from onceproof.targets.kafka import clients as kafka_clients
from onceproof.targets.redis import client
from onceproof.topics import create_topic
from onceproof.workload import Workload

from tests.integration.load import send_load

pytestmark = pytest.mark.integration


def _send(source, tmp_path, n_s: float = 0.5) -> Workload:
    w = send_load(source, tmp_path / f"h-{uuid.uuid4().hex[:4]}.jsonl", n_s, seed=2)
    assert w.stats.ok == w.stats.sent >= 300
    return w


def _slots(d) -> list[str]:
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots")]


def test_kafka_text_value_with_the_id_in_a_header_is_read_back_by_a_header_mapping(shared_targets, tmp_path):
    d = shared_targets
    topic = f"fmt_{uuid.uuid4().hex[:6]}"
    fmt = Format({"value": "{key},{seq}", "key": "cust-{key}", "headers": {"onceproof-id": "{id}"}})
    w = _send(KafkaSource(d, topic, 2, fmt), tmp_path)
    sink = MappedKafkaSink(d, KafkaMapping(topic=topic, id="header:onceproof-id", key="regex:^([^,]+),",
                                           seq="regex:,(?P<v>\\d+)$"))
    sink.setup()
    try:
        effects = sink.final_read()
    finally:
        sink.close()
    assert len(effects) == w.stats.sent
    assert {e[0] for e in effects} == {f"e{i}" for i in range(w.stats.sent)}
    assert all(e[1].startswith("k") and isinstance(e[2], int) for e in effects)


def test_kafka_json_template_is_the_users_shape_and_a_json_pointer_finds_the_id(shared_targets, tmp_path):
    d = shared_targets
    topic = f"fmtj_{uuid.uuid4().hex[:6]}"
    fmt = Format({"value": {"order": {"id": "{id}", "customer": "{key}"}, "n": "{seq}", "note": "x{{y}}"}})
    w = _send(KafkaSource(d, topic, 1, fmt), tmp_path)
    sink = MappedKafkaSink(d, KafkaMapping(topic=topic, id="json:/order/id", key="json:/order/customer", seq="json:/n"))
    sink.setup()
    try:
        effects = sink.final_read()
    finally:
        sink.close()
    assert len(effects) == w.stats.sent and effects[0][0] == "e0" and effects[0][2] == 0


def test_redis_fields_and_postgres_columns_are_mapped_from_the_format(shared_targets, tmp_path):
    d = shared_targets
    stream = f"fmts_{uuid.uuid4().hex[:6]}"
    w = _send(RedisSource(d, stream, 1, Format({"fields": {"order_id": "{id}", "customer": "{key}", "n": "{seq}"}})),
              tmp_path)
    entries = client(d.redis.host, d.redis.port, password=d.redis.password).xrange(stream)
    assert len(entries) == w.stats.sent and set(entries[0][1]) == {"order_id", "customer", "n"}
    table = f"fmtp_{uuid.uuid4().hex[:6]}"
    w = _send(PostgresSource(d, table, 1, Format({"columns": {"order_id": "{id}", "customer": "c-{key}", "n": "{seq}"}})),
              tmp_path)
    with psycopg.connect(d.postgres_dsn()) as c:
        rows = c.execute(f"SELECT order_id, customer, n, pg_typeof(n)::text FROM {table} ORDER BY pos").fetchall()
    assert len(rows) == w.stats.sent and rows[0][0] == "e0" and rows[0][1].startswith("c-k") and rows[0][3] == "bigint"


def test_default_postgres_sink_follows_by_logical_decoding_and_drops_its_slot(shared_targets):
    d = shared_targets
    name = f"effd_{uuid.uuid4().hex[:6]}"
    sink = PostgresSink(d, name)
    sink.setup()
    assert sink.follower is not None and sink.follower.slot in _slots(d)
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) SELECT 'e' || i, 'k', i, 0 "
                  "FROM generate_series(0, 999) i")
        events, full = sink.read()
        assert (len(events), full) == (1000, False) and events[5] == ["e5", "k", 5, 0]
        c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) VALUES ('e5', 'k', 5, 1)")  # a duplicate
        assert sink.read() == ([["e5", "k", 5, 1]], False)
        c.execute(f"DELETE FROM {name} WHERE event_id = 'e7'")  # a visible effect rolled back
        events, full = sink.read()
        assert full is True and len(events) == 1000 and "e7" not in {e[0] for e in events}
    assert len(sink.final_read()) == 1000
    slot = sink.follower.slot
    sink.close()
    assert slot not in _slots(d)


def test_an_upserted_table_shows_reapplications_by_xmin_and_by_an_applied_count_column(shared_targets):
    d = shared_targets
    table = f"orders_{uuid.uuid4().hex[:6]}"
    by_xmin = PostgresTableSink(d, PostgresMapping(table=table, id="order_id", key="customer", seq="n", applied="xmin"))
    by_xmin.setup()
    query = PostgresQuerySink(d, PostgresMapping(query=f"SELECT order_id, customer, n, applied_count FROM {table}",
                                                 applied="applied_count"))
    try:
        assert query.read() == ([], False)  # the table does not exist yet: nothing applied
        upsert = (f"INSERT INTO {table} VALUES (%s, 'k1', %s, 1) ON CONFLICT (order_id) DO UPDATE "
                  "SET applied_count = {t}.applied_count + 1").replace("{t}", table)
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (order_id text PRIMARY KEY, customer text, n bigint, applied_count int)")
            for eid, seq in (("e1", 0), ("e2", 1), ("e1", 0)):  # e1 applied twice
                c.execute(upsert, (eid, seq))
            assert sorted(e[0] for e in by_xmin.read()[0]) == ["e1", "e1", "e2"]
            assert sorted(e[0] for e in query.read()[0]) == ["e1", "e1", "e2"]
            c.execute(f"DELETE FROM {table} WHERE order_id = 'e2'")
            events, full = by_xmin.read()
            assert full is True and sorted(e[0] for e in events) == ["e1", "e1"]
            events, full = query.read()
            assert full is True and sorted(e[0] for e in events) == ["e1", "e1"]
        assert sorted(e[0] for e in by_xmin.final_read()) == ["e1", "e1"]
    finally:
        slot = by_xmin.follower.slot
        by_xmin.close()
        query.close()
    assert slot not in _slots(d)


def test_redis_list_and_hash_per_key_mappings(shared_targets):
    d = shared_targets
    r = client(d.redis.host, d.redis.port, password=d.redis.password)
    name = f"out_{uuid.uuid4().hex[:6]}"
    lst = RedisMappedList(d, RedisMapping(list=name, id="json:/id", key="json:/k"))
    lst.setup()
    r.rpush(name, orjson.dumps({"id": "e1", "k": "a"}), orjson.dumps({"id": "e2", "k": "b"}))
    assert lst.read() == ([["e1", "a", None, None], ["e2", "b", None, None]], False)
    r.rpush(name, orjson.dumps({"id": "e1", "k": "a"}))
    assert lst.read() == ([["e1", "a", None, None]], False)
    hashes = RedisMappedHash(d, RedisMapping(hash=f"{name}:*", id="last_id", key="@name", seq="n"))
    hashes.setup()
    r.hset(f"{name}:a", mapping={"last_id": "e1", "n": 0})
    assert hashes.read() == ([["e1", "a", 0, None]], False)  # @name: what the pattern's * matched
    r.delete(f"{name}:a")
    assert hashes.read() == ([], True)
    r.delete(name)
    by_name = RedisMappedHash(d, RedisMapping(hash=f"{name}:*", id="@name", key="c"))  # the id only in the name
    by_name.setup()
    r.hset(f"{name}:e-7", mapping={"c": "k1"})
    assert by_name.read() == ([["e-7", "k1", None, None]], False)
    r.delete(f"{name}:e-7")


def test_a_redis_stream_mapping_reads_the_users_stream_from_its_start_and_then_only_new_entries(shared_targets):
    d = shared_targets
    r = client(d.redis.host, d.redis.port, password=d.redis.password)
    name = f"out_{uuid.uuid4().hex[:6]}"
    r.xadd(name, {"order_id": "e0", "customer": "a", "n": 0})  # written before the observer starts: kept
    stream = RedisMappedStream(d, RedisMapping(stream=name, id="order_id", key="customer", seq="n"))
    stream.setup()
    r.xadd(name, {"order_id": "e1", "customer": "b", "n": 1})
    assert stream.read() == ([["e0", "a", 0, None], ["e1", "b", 1, None]], False)
    r.xadd(name, {"order_id": "e1", "customer": "b", "n": 1})
    assert stream.read() == ([["e1", "b", 1, None]], False)
    assert stream.read() == ([], False)
    assert [e[0] for e in stream.final_read()] == ["e0", "e1", "e1"]
    r.delete(name)


def test_state_from_a_compacted_topic_of_big_endian_longs(shared_targets):
    d = shared_targets
    from confluent_kafka import Producer

    topic = f"counts_{uuid.uuid4().hex[:6]}"
    create_topic(d, topic, 2)
    p = Producer(kafka_clients.config({"bootstrap.servers": d.kafka_bootstrap()}))
    for key, n in (("k1", 1), ("k2", 1), ("k1", 2), ("k3", 7)):
        p.produce(topic, (n).to_bytes(8, "big", signed=True), key.encode())
    p.produce(topic, None, b"k3")  # a tombstone deletes k3
    p.flush(10)
    assert state_reader(StateSpec(topic=topic, value="long"), d)() == {"k1": {"count": 2}, "k2": {"count": 1}}


@pytest.mark.parametrize("field, mapping", [
    ("key", {"id": "order_id", "key": "custmer", "seq": "n"}),  # was a silent VALID, every key null
    ("id", {"id": "orderid", "key": "customer", "seq": "n"}),  # would make every event lost
])
def test_a_table_mapping_naming_a_column_the_table_lacks_is_an_error_naming_the_field(shared_targets, field, mapping):
    from onceproof.pgdecode import MappingError

    d = shared_targets
    table = f"orders_{uuid.uuid4().hex[:6]}"
    sink = PostgresTableSink(d, PostgresMapping(table=table, **mapping))
    sink.setup()
    try:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (order_id text, customer text, n bigint)")
            c.execute(f"INSERT INTO {table} VALUES ('e1', 'k1', 0), ('e2', 'k1', 1)")
        with pytest.raises(MappingError, match=rf"workload\.sink\.postgres\.{field}: the table has no column "
                                               r"'(custmer|orderid)' \(its columns: order_id, customer, n\)"):
            sink.read()
        # the final read fails too: never an "empty" table (every event lost) after a failed read
        with pytest.raises(MappingError, match=rf"workload\.sink\.postgres\.{field}: the table has no column"):
            sink.final_read()
        fresh = PostgresTableSink(d, PostgresMapping(table=table, **mapping))  # no observe saw a row
        fresh.setup()
        try:
            with pytest.raises(MappingError, match=rf"workload\.sink\.postgres\.{field}: the table has no column"):
                fresh.final_read()
        finally:
            fresh.close()
    finally:
        sink.close()


def test_derived_state_in_redis_hashes_one_per_key_or_one_for_all(shared_targets):
    from onceproof.mappings import RedisState, StateSpec, state_reader

    d = shared_targets
    r = client(d.redis.host, d.redis.port, password=d.redis.password)
    run = uuid.uuid4().hex[:6]
    r.hset(f"count{run}:k1", mapping={"count": 3, "total": 6, "other": "x"})
    r.hset(f"count{run}:k2", mapping={"count": 1, "total": 0})
    r.hset(f"count{run}:k3", mapping={"other": "no count field"})  # not a counted key
    r.hincrby(f"words{run}", "k1", 2)
    r.hincrby(f"words{run}", "k2", 5)
    per_key = state_reader(StateSpec(redis=RedisState(hash=f"count{run}:*", sum="total")), d)
    assert per_key() == {"k1": {"count": 3, "sum": 6}, "k2": {"count": 1, "sum": 0}}
    assert state_reader(StateSpec(redis=RedisState(hash=f"words{run}")), d)() == {"k1": {"count": 2}, "k2": {"count": 5}}
    r.hset(f"count{run}:k2", "count", "many")
    with pytest.raises(ValueError, match=f"count{run}:k2 field count: expected an integer, got 'many'"):
        per_key()


def test_a_query_on_a_table_that_never_appears_fails_the_final_read_naming_the_server_error(shared_targets):
    """During the run a missing table is "nothing applied yet" (the pipeline makes it); at the
    final read it is an error naming the field and the server's message (a misspelt `orderz`
    gave a silent "vacuous run" with every event lost: found by a new user)."""
    from onceproof.pgdecode import MappingError

    missing = f"orderz_{uuid.uuid4().hex[:6]}"
    sink = PostgresQuerySink(shared_targets, PostgresMapping(query=f"SELECT order_id, customer, n FROM {missing}"))
    try:
        assert sink.read() == ([], False)
        with pytest.raises(MappingError, match=rf'workload\.sink\.postgres\.query: .*relation "{missing}" does not exist'):
            sink.final_read()
    finally:
        sink.close()


def test_a_query_mapping_gives_its_rows_in_the_order_reads_first_saw_them_not_in_heap_order(shared_targets):
    """A query without ORDER BY returns rows in heap order, and an UPDATE moves a row to the
    end of the heap: taken as the order of application, a correct pipeline updating a status
    column got `reorder=3008` (found by a new user). The final read orders rows by the read that
    first saw them, then by seq; a Redis set (no order) likewise."""
    d = shared_targets
    table = f"orders_{uuid.uuid4().hex[:6]}"
    sink = PostgresQuerySink(d, PostgresMapping(query=f"SELECT order_id, customer, n FROM {table}"))
    try:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (order_id text PRIMARY KEY, customer text, n bigint, status text) "
                      "WITH (fillfactor = 10)")
            c.execute(f"INSERT INTO {table} VALUES ('e1', 'k', 1, 'new')")
            assert [e[0] for e in sink.read()[0]] == ["e1"]
            c.execute(f"INSERT INTO {table} VALUES ('e3', 'k', 3, 'new'), ('e2', 'k', 2, 'new')")
            assert sorted(e[0] for e in sink.read()[0]) == ["e2", "e3"]
            c.execute(f"UPDATE {table} SET status = repeat('x', 7000) WHERE order_id = 'e1'")  # moves its tuple
            heap = [r[0] for r in c.execute(f"SELECT order_id FROM {table}")]
            assert heap.index("e1") > heap.index("e3")  # the row order a reader gets is not the order of commits
            c.execute(f"INSERT INTO {table} VALUES ('e0', 'k', 0, 'new')")  # a real reorder, seen in a later read
        assert [e[0] for e in sink.final_read()] == ["e1", "e2", "e3", "e0"]
    finally:
        sink.close()
    members = f"set-{uuid.uuid4().hex[:6]}"
    rset = RedisMappedSet(d, RedisMapping.model_validate({"set": members, "id": "json:/id", "seq": "json:/seq"}))
    rset.setup()
    r = rset.client
    try:
        r.sadd(members, orjson.dumps({"id": "e10", "seq": 10}))
        rset.read()
        r.sadd(members, orjson.dumps({"id": "e9", "seq": 9}))  # sorts before e10 by member: applied after it
        rset.read()
        assert [e[0] for e in rset.final_read()] == ["e10", "e9"]
    finally:
        r.delete(members)
    # hashes by SCAN: a read is no snapshot (seq 155 may be missed while 156 is returned), so a
    # later read first seeing a lower seq proves nothing: ordered by seq (a false `reorder` in 3
    # runs of 4 of a correct pipeline, found by a new user)
    prefix = f"order-{uuid.uuid4().hex[:6]}:"
    hashes = RedisMappedHash(d, RedisMapping.model_validate({"hash": prefix + "*", "id": "oid", "key": "c", "seq": "n"}))
    hashes.setup()
    try:
        r.hset(prefix + "2", mapping={"oid": "e156", "c": "k", "n": 156})
        hashes.read()
        r.hset(prefix + "1", mapping={"oid": "e155", "c": "k", "n": 155})
        hashes.read()
        assert [e[0] for e in hashes.final_read()] == ["e155", "e156"]
    finally:
        r.delete(prefix + "1", prefix + "2")


def test_an_applied_column_missing_from_the_querys_result_is_an_error_naming_the_field(shared_targets):
    """`applied: applied_count` with a query that does not SELECT it counted one application a
    row: a pipeline applying every event twice passed (found by a new user)."""
    from onceproof.pgdecode import MappingError

    d = shared_targets
    table = f"orders_{uuid.uuid4().hex[:6]}"
    sink = PostgresQuerySink(d, PostgresMapping(query=f"SELECT order_id, customer, n FROM {table}",
                                                applied="applied_count"))
    try:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (order_id text PRIMARY KEY, customer text, n bigint, applied_count int)")
            c.execute(f"INSERT INTO {table} VALUES ('e1', 'k', 1, 2)")
        with pytest.raises(MappingError, match=r"workload\.sink\.postgres\.applied: 'applied_count' is not a column "
                                               r"of the query's result \(its columns: order_id, customer, n\)"):
            sink.read()
    finally:
        sink.close()


@pytest.mark.parametrize("mapping", ["table", "default"])
def test_a_row_inserted_and_deleted_between_two_reads_is_seen_then_gone_a_flicker_not_never_applied(
        shared_targets, tmp_path, mapping):
    """A pipeline that deletes rows (an app archiving orders): a read that decodes a delete
    returns the whole content, and rows inserted and deleted since the last read were in
    neither, so they were `lost` "never applied" (865 of them, with 6 flickers: found by a new
    user). The observer now records what the read saw on the way first (Sink.passing): each
    such row is a `flicker`, and its `lost` says it was seen."""
    from onceproof.checkers import exactly_once
    from onceproof.checkers.history import read_history
    from onceproof.observer import Observer

    d = shared_targets
    table = f"orders_{uuid.uuid4().hex[:6]}"
    if mapping == "table":
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"CREATE TABLE {table} (order_id text PRIMARY KEY, customer text, n bigint, "
                      "applied_count int)")
        sink = PostgresTableSink(d, PostgresMapping(table=table, id="order_id", key="customer", seq="n",
                                                    applied="applied_count"))
        insert, delete = (f"INSERT INTO {table} VALUES (%s, 'c', %s, 1)", f"DELETE FROM {table} WHERE order_id = %s")
    else:
        sink = PostgresSink(d, table)
        insert = f"INSERT INTO {table} (event_id, key, seq, replica) VALUES (%s, 'c', %s, 0)"
        delete = f"DELETE FROM {table} WHERE event_id = %s"
    sink.setup()
    history = HistoryWriter(tmp_path / "h.jsonl")
    for i in range(4):
        history.record("load", "invoke", "send", {"id": f"e{i}", "key": "c", "seq": i})
        history.record("load", "ok", "send", {"id": f"e{i}", "key": "c", "seq": i})
    obs = Observer(sink, history)
    try:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(insert, ("e0", 0))
            obs.observe_once()
            for i in (1, 2, 3):
                c.execute(insert, (f"e{i}", i))
            c.execute(delete, ("e1",))  # inserted and deleted between two reads
            c.execute(delete, ("e0",))
            obs.observe_once()
        obs.final_read()
    finally:
        sink.close()
    history.close()
    observes = [r for r in map(orjson.loads, open(tmp_path / "h.jsonl", "rb"))
                if r["f"] == "observe" and r["type"] == "ok"]
    assert [(r["value"]["full"], sorted(e[0] for e in r["value"]["events"])) for r in observes] == \
        [(False, ["e0"]), (False, ["e1", "e2", "e3"]), (True, ["e2", "e3"])]
    result = exactly_once.check(read_history(tmp_path / "h.jsonl"))
    assert result["anomalies"]["flicker"] == 2 and result["anomalies"]["lost"] == 2, result["anomalies"]
    lost = result["examples"]["lost"]
    assert {x["id"] for x in lost} == {"e0", "e1"}
    assert all(x["why"].startswith(exactly_once.SEEN_LOST) for x in lost), lost


def _pubs(d) -> list[str]:
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        return [r[0] for r in c.execute("SELECT pubname FROM pg_publication")]


def test_pgoutput_follows_inserts_updates_and_deletes_with_their_ids_and_commit_times(shared_targets, tmp_path):
    """A user's upserted table with a primary key, there before the run: followed by pgoutput
    (a publication of the table cannot block the pipeline: it has a replica identity). A
    re-application (an upsert's UPDATE, counted by xmin) is a duplicate, a deleted effect a
    flicker, both caught by the checker; each effect's visible time is its commit's."""
    import time

    from onceproof.checkers import exactly_once
    from onceproof.checkers.history import read_history
    from onceproof.observer import Observer

    d = shared_targets
    table = f"orders_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {table} (order_id text PRIMARY KEY, customer text, n bigint)")
    sink = PostgresTableSink(d, PostgresMapping(table=table, id="order_id", key="customer", seq="n", applied="xmin"))
    sink.setup()
    history = HistoryWriter(tmp_path / "h.jsonl")
    for i in range(3):
        history.record("load", "invoke", "send", {"id": f"e{i}", "key": "c", "seq": i})
        history.record("load", "ok", "send", {"id": f"e{i}", "key": "c", "seq": i})
    obs = Observer(sink, history)
    upsert = f"INSERT INTO {table} VALUES (%s, 'c', %s) ON CONFLICT (order_id) DO UPDATE SET n = excluded.n"
    spans = []
    try:
        assert sink.follower.plugin == "pgoutput" and sink.follower.slot in _pubs(d)
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            for rows in ((("e0", 0), ("e1", 1)), (("e2", 2),)):
                before = history.now()
                with c.transaction():
                    for eid, seq in rows:
                        c.execute(upsert, (eid, seq))
                spans.append((before, history.now()))
                time.sleep(0.3)
            assert obs.observe_once() == 3
            history.flush()
            rec = [orjson.loads(ln) for ln in open(tmp_path / "h.jsonl", "rb")][-1]
            assert [e[0] for e in rec["value"]["events"]] == ["e0", "e1", "e2"]
            assert rec["value"]["events"][2] == ["e2", "c", 2, None]
            runs = rec["value"]["visible"]
            assert rec["value"]["visible_from"] == "commit" and [n for n, _ in runs] == [2, 1], runs
            for (_, t), (lo, hi) in zip(runs, spans):
                assert lo - 50_000_000 <= t <= hi + 50_000_000, (runs, spans)
            c.execute(upsert, ("e1", 1))  # the pipeline applied e1 again: an UPDATE of its row
            assert obs.observe_once() == 1
            c.execute(f"DELETE FROM {table} WHERE order_id = 'e2'")  # a visible effect rolled back
            obs.observe_once()
            c.execute(upsert, ("e2", 2))
        obs.final_read()
    finally:
        slot = sink.follower.slot
        sink.close()
        history.close()
    assert slot not in _slots(d) and slot not in _pubs(d)
    result = exactly_once.check(read_history(tmp_path / "h.jsonl"))
    assert result["anomalies"]["duplicate"] == 1 and result["examples"]["duplicate"][0]["id"] == "e1"
    assert result["anomalies"]["flicker"] == 1 and result["examples"]["flicker"][0]["id"] == "e2"
    assert result["anomalies"]["lost"] == 0


def test_a_table_without_a_replica_identity_is_not_published_and_the_pipeline_can_update_it(shared_targets):
    """Publishing a table without a replica identity would refuse the pipeline's UPDATEs and
    DELETEs: such a table is followed by test_decoding (no publication), and the pipeline's own
    UPDATE and DELETE go through and are seen."""
    d = shared_targets
    table = f"nokey_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {table} (order_id text, customer text, n bigint, applied_count int)")
    sink = PostgresTableSink(d, PostgresMapping(table=table, id="order_id", key="customer", seq="n",
                                                applied="applied_count"))
    sink.setup()
    try:
        assert sink.follower.plugin == "test_decoding" and sink.follower.slot not in _pubs(d)
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"INSERT INTO {table} VALUES ('e1', 'c', 0, 1), ('e2', 'c', 1, 1)")
            c.execute(f"UPDATE {table} SET applied_count = 2 WHERE order_id = 'e1'")
            c.execute(f"DELETE FROM {table} WHERE order_id = 'e2'")
        events, full = sink.read()  # the WAL does not say which row went: the final read reads the table
        assert full is True and sorted(e[0] for e in events) == ["e1", "e1", "e2"]
        assert sorted(e[0] for e in sink.final_read()) == ["e1", "e1"]
    finally:
        sink.close()


def test_the_slot_and_publication_of_an_observer_that_died_are_dropped_between_runs(shared_targets):
    """A run killed with its Follower open leaves a slot (holding the WAL back) and a publication;
    a session's data reset between runs drops them (pgdecode.drop_leftovers), nothing else."""
    from onceproof.pgdecode import drop_leftovers

    d = shared_targets
    name = f"effl_{uuid.uuid4().hex[:6]}"
    sink = PostgresSink(d, name)
    sink.setup()
    slot = sink.follower.slot
    sink.follower.conn.close()  # the harness died: nothing dropped
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute("CREATE PUBLICATION not_ours_pub FOR TABLE " + name)
        try:
            assert slot in _slots(d) and slot in _pubs(d)
            assert drop_leftovers(c) == [slot]
            assert slot not in _slots(d) and slot not in _pubs(d) and "not_ours_pub" in _pubs(d)
        finally:
            c.execute("DROP PUBLICATION not_ours_pub")
            c.execute(f"DROP TABLE {name}")


@pytest.mark.parametrize("native", [True, False], ids=["compiled", "python"])
def test_pgoutput_streams_in_order_and_a_delete_still_reads_the_whole_content(shared_targets, monkeypatch, native):
    """Batches of at most 100 messages from the stream (harness/pgstream.py), so transactions
    of 100 rows span batches. Every effect comes once, in commit order; a delete among them
    returns the whole content with everything committed before the read applied, and nothing
    is left pending. The stream drained by the compiled library and by psycopg alone."""
    from onceproof import pgstream
    from onceproof.pgstream import ReplicationStream

    monkeypatch.setattr(ReplicationStream, "MAX_MESSAGES", 100)
    if not native:
        monkeypatch.setattr(pgstream, "_native", lambda: None)
    d = shared_targets
    name = f"effa_{uuid.uuid4().hex[:6]}"
    sink = PostgresSink(d, name)
    sink.setup()
    try:
        assert sink.follower.plugin == "pgoutput"
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            for t in range(10):  # ten transactions of 100 rows: about ten batches
                c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) SELECT 'e' || i, 'k', i, 0 "
                          f"FROM generate_series({t * 100}, {t * 100 + 99}) i")
            events, full = sink.read()
            assert full is False and events == [[f"e{i}", "k", i, 0] for i in range(1000)]
            runs = sink.visible()
            assert runs is not None and sum(n for n, _ in runs[0]) == 1000
            for t in range(10, 15):
                c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) SELECT 'e' || i, 'k', i, 0 "
                          f"FROM generate_series({t * 100}, {t * 100 + 99}) i")
            c.execute(f"DELETE FROM {name} WHERE event_id = 'e3'")
            c.execute(f"INSERT INTO {name} (event_id, key, seq, replica) VALUES ('e1500', 'k', 1500, 0)")
            events, full = sink.read()
            assert full is True and len(events) == 1500 and "e3" not in {e[0] for e in events}
            assert sink.read() == ([], False)
    finally:
        slot = sink.follower.slot
        sink.close()
    assert slot not in _slots(d) and slot not in _pubs(d)


@pytest.mark.parametrize("plugin", ["pgoutput", "created-later", "test_decoding"])
def test_an_upsert_that_overwrites_the_order_id_takes_the_overwritten_effects_away(shared_targets, plugin):
    """A user's pipeline: a table keyed by customer, each event upserted over the customer's
    row (`ON CONFLICT (customer) DO UPDATE SET order_id = ...`). Only the last order of each
    customer is in the table, so the others were applied, then removed: the final content is
    the table's (it was the decoded history of every order id, a pipeline VALID with 14,959
    effects overwritten, found by a new user). With pgoutput the table exists when the run
    starts; created later, the pipeline creates it (and the stream follows it); with
    test_decoding (forced) too. Neither follower is blind: each row is found by its key's value."""
    from onceproof.pgdecode import Follower, Rows

    d = shared_targets
    name = f"latest_{uuid.uuid4().hex[:6]}"
    ddl = f"CREATE TABLE {name} (order_id text NOT NULL, customer text PRIMARY KEY, n bigint)"
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        if plugin == "pgoutput":
            c.execute(ddl)
        f = Follower(d.postgres_dsn(), name, Rows("order_id", "customer", "n", None, where="workload.sink.postgres"))
        f.create(plugin="test_decoding" if plugin == "test_decoding" else None)
        try:
            assert f.plugin == {"created-later": "pending"}.get(plugin, plugin)
            if plugin != "pgoutput":
                c.execute(ddl)
            for i in range(30):
                c.execute(f"INSERT INTO {name} VALUES (%s, %s, %s) ON CONFLICT (customer) DO UPDATE "
                          "SET order_id = excluded.order_id, n = excluded.n", (f"e{i}", f"c{i % 3}", i))
            events, full = f.read()
            assert full is True  # applications went away
            assert f.plugin == {"created-later": "pgoutput"}.get(plugin, plugin)
            final = f.final_read()
            assert sorted(e[0] for e in final) == ["e27", "e28", "e29"], final
            assert not f.blind
        finally:
            f.close()
            c.execute(f"DROP TABLE IF EXISTS {name}")


def test_a_partitioned_table_is_followed_under_its_own_name(shared_targets):
    """A table `PARTITION BY HASH`: its rows live in its partitions, whose names the changes
    carry. Followed by pgoutput with `publish_via_partition_root`, every row comes under the
    table's own name (a user's correct pipeline got no verdict, "nothing was ever seen in the
    sink", with `lost=29999` printed beside it)."""
    from onceproof.pgdecode import Follower, Rows

    d = shared_targets
    name = f"parted_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (order_id text PRIMARY KEY, customer text, n bigint) PARTITION BY HASH (order_id)")
        for i in range(4):
            c.execute(f"CREATE TABLE {name}_p{i} PARTITION OF {name} FOR VALUES WITH (MODULUS 4, REMAINDER {i})")
        f = Follower(d.postgres_dsn(), name, Rows("order_id", "customer", "n", None, where="workload.sink.postgres"))
        f.create()
        try:
            assert f.plugin == "pgoutput"
            c.execute(f"INSERT INTO {name} SELECT 'e' || i, 'c', i FROM generate_series(0, 99) i")
            events, full = f.read()
            assert full is False and sorted(e[0] for e in events) == sorted(f"e{i}" for i in range(100))
            c.execute(f"UPDATE {name} SET n = n + 1000 WHERE order_id = 'e5'")
            c.execute(f"DELETE FROM {name} WHERE order_id = 'e7'")
            final = f.final_read()
            assert len(final) == 99 and "e7" not in {e[0] for e in final} and not f.blind
        finally:
            f.close()
            c.execute(f"DROP TABLE IF EXISTS {name}")


def _observer_objects(d) -> list[str]:
    """Every slot, publication, event trigger and function of the server named as an observer's."""
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        return sorted(r[0] for r in c.execute(
            "SELECT slot_name FROM pg_replication_slots UNION ALL SELECT pubname FROM pg_publication "
            "UNION ALL SELECT evtname FROM pg_event_trigger UNION ALL SELECT proname FROM pg_proc "
            "WHERE proname ~ '^onceproof_[0-9a-f]{12}$'") if r[0].startswith("onceproof_"))


# What a pipeline does to make its own table once the run has started (as the pipeline's role,
# not a superuser), and which of the Follower's slots then follows it: the stream when the table
# has a replica identity from the transaction that made it on, before any row went in.
CREATED_LATER = {
    "key-in-create": (["CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)"], "pgoutput"),
    "key-added-in-the-same-transaction": (
        ["CREATE TABLE {t} (order_id text NOT NULL, customer text, n bigint)",
         "ALTER TABLE {t} ADD PRIMARY KEY (order_id)"], "pgoutput"),
    "no-key": (["CREATE TABLE {t} (order_id text, customer text, n bigint)"], "test_decoding"),
    "key-added-after-rows": (
        ["CREATE TABLE {t} (order_id text NOT NULL, customer text, n bigint)",
         "INSERT INTO {t} VALUES ('e-early', 'c', -1)",
         "ALTER TABLE {t} ADD PRIMARY KEY (order_id)"], "test_decoding"),
    "key-added-in-a-later-transaction": (
        ["CREATE TABLE {t} (order_id text NOT NULL, customer text, n bigint)", "COMMIT",
         "ALTER TABLE {t} ADD PRIMARY KEY (order_id)"], "test_decoding"),
    "partitioned": (["CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint) PARTITION BY HASH (order_id)",
                     "CREATE TABLE {t}_p0 PARTITION OF {t} FOR VALUES WITH (MODULUS 2, REMAINDER 0)", "COMMIT",
                     "CREATE TABLE {t}_p1 PARTITION OF {t} FOR VALUES WITH (MODULUS 2, REMAINDER 1)"], "pgoutput"),
    "create-table-as": (["CREATE TABLE {t} AS SELECT 'e-early'::text AS order_id, 'c'::text AS customer, "
                         "-1::bigint AS n"], "test_decoding"),
}


@pytest.mark.parametrize("case", list(CREATED_LATER))
def test_a_table_the_pipeline_creates_after_the_start_is_followed_from_its_first_row(shared_targets, case):
    """Most pipelines create their own table, after the observer started. The Follower starts
    pending, with a publication, an event trigger and both slots; the table is published in the
    transaction that creates it when it has a replica identity by then, and followed by the
    stream, else by the spare test_decoding slot. Either way every row is seen from the first
    (rows written in the creating transaction included), the pipeline's UPDATE and DELETE of a
    table without a key go through (it was never published), and nothing of the observer's is
    left: no slot, publication, event trigger or function."""
    d = shared_targets
    before = _observer_objects(d)
    name = f"later_{uuid.uuid4().hex[:6]}"
    statements, plugin = CREATED_LATER[case]
    sink = PostgresTableSink(d, PostgresMapping(table=name, id="order_id", key="customer", seq="n"))
    sink.setup()
    f = sink.follower
    try:
        assert f.plugin == "pending" and len(_observer_objects(d)) == len(before) + 5  # 2 slots, pub, trigger, fn
        assert sink.read() == ([], False) and f.plugin == "pending"  # not created yet
        with psycopg.connect(d.postgres.pipeline_dsn()) as c:  # one transaction (until COMMIT)
            for stmt in statements:
                c.execute(stmt.format(t=name))
            c.execute(f"INSERT INTO {name} SELECT 'e' || i, 'c', i FROM generate_series(0, 49) i")
        with psycopg.connect(d.postgres.pipeline_dsn(), autocommit=True) as c:
            c.execute(f"INSERT INTO {name} SELECT 'e' || i, 'c', i FROM generate_series(50, 99) i")
            events, full = sink.read()
            assert f.plugin == plugin and full is False
            early = ["e-early"] if "e-early" in " ".join(statements) else []
            assert [e[0] for e in events] == early + [f"e{i}" for i in range(100)]
            assert len(_observer_objects(d)) == len(before) + (4 if plugin == "pgoutput" else 1)  # slot, pub, trigger, fn
            c.execute(f"UPDATE {name} SET n = n + 1000 WHERE order_id = 'e5'")
            c.execute(f"DELETE FROM {name} WHERE order_id = 'e7'")
        final = sink.final_read()
        assert sorted(e[0] for e in final) == sorted(early + [f"e{i}" for i in range(100) if i != 7])
    finally:
        sink.close()
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")
    assert _observer_objects(d) == before


def test_a_table_never_created_has_no_content_and_its_pending_observer_leaves_nothing(shared_targets):
    """A pipeline that never made its table: the final read is empty (no error), and close()
    drops both slots, the publication, the event trigger and its function; so does a session's
    reset (drop_leftovers) for the observer of a run that died pending."""
    from onceproof.pgdecode import Follower, Rows, drop_leftovers

    d = shared_targets
    before = _observer_objects(d)
    for died in (False, True):
        f = Follower(d.postgres_dsn(), f"never_{uuid.uuid4().hex[:6]}", Rows("order_id", None, None))
        f.create()
        assert f.plugin == "pending" and f.final_read() == []
        if died:
            f.conn.close()  # the harness died: nothing dropped
            with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
                # the publication, trigger and function are named as the first slot
                assert drop_leftovers(c) == sorted([f.slot, f.spare])
        else:
            f.close()
        assert _observer_objects(d) == before


# What a correct pipeline does to its own table that decoding alone does not follow; the final
# read is the table itself, ordered by the read that first saw each id (harness/mappings.py).
# Each: (statements before the first read, statements after it, the final content's ids in order).
RENAMED = "CREATE TABLE {t}_new (order_id text PRIMARY KEY, customer text, n bigint)"
TABLE_CASES = {
    "renamed-into-place": (
        [RENAMED, "INSERT INTO {t}_new VALUES ('e0', 'c', 0), ('e1', 'c', 1)", "ALTER TABLE {t}_new RENAME TO {t}"],
        ["INSERT INTO {t} VALUES ('e2', 'c', 2)"], ["e0", "e1", "e2"]),
    "copied-and-swapped": (
        ["CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)",
         "INSERT INTO {t} VALUES ('e0', 'c', 0), ('e1', 'c', 1)"],
        [RENAMED, "INSERT INTO {t}_new SELECT * FROM {t}", "INSERT INTO {t}_new VALUES ('e2', 'c', 2)",
         "DROP TABLE {t}", "ALTER TABLE {t}_new RENAME TO {t}"], ["e0", "e1", "e2"]),
    "dropped-and-made-again": (  # a real loss: e0 and e1 are gone with the first table
        ["CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)",
         "INSERT INTO {t} VALUES ('e0', 'c', 0), ('e1', 'c', 1)"],
        ["DROP TABLE {t}", "CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)",
         "INSERT INTO {t} VALUES ('e2', 'c', 2)"], ["e2"]),
    "inserted-in-no-order-in-one-transaction": (
        ["CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)",
         "INSERT INTO {t} VALUES ('e3', 'c', 3), ('e1', 'c', 1), ('e2', 'c', 2)"],
        ["INSERT INTO {t} VALUES ('e5', 'c', 5), ('e4', 'c', 4)"], ["e1", "e2", "e3", "e4", "e5"]),
    "deleted-and-inserted-again-in-one-transaction": (
        ["CREATE TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)",
         "INSERT INTO {t} VALUES ('e1', 'c', 1)"],
        ["INSERT INTO {t} VALUES ('e9', 'c', 9)", "DELETE FROM {t} WHERE order_id = 'e1'",
         "INSERT INTO {t} VALUES ('e1', 'c', 1)"], ["e1", "e9"]),
    "unlogged": (["CREATE UNLOGGED TABLE {t} (order_id text PRIMARY KEY, customer text, n bigint)",
                  "INSERT INTO {t} VALUES ('e0', 'c', 0)"], ["INSERT INTO {t} VALUES ('e1', 'c', 1)"], ["e0", "e1"]),
}


@pytest.mark.parametrize("case", list(TABLE_CASES))
def test_the_final_read_of_a_table_mapping_is_the_table_in_the_order_reads_first_saw_it(shared_targets, case):
    """A correct pipeline's table renamed into place, copied and swapped, UNLOGGED, or rows
    inserted in no order (or deleted and inserted again) within one transaction: every row of
    the table is in the final content (a false `lost` for each renamed row before), in the
    order the reads first saw the ids and by seq within one read (false `reorder`s before);
    a table dropped and made again has lost its rows (VALID before). Each statement list is one
    transaction, run as the pipeline's role, the table made after the observer started."""
    d = shared_targets
    name = f"tab_{uuid.uuid4().hex[:6]}"
    before, after, final = TABLE_CASES[case]
    sink = PostgresTableSink(d, PostgresMapping(table=name, id="order_id", key="customer", seq="n"))
    sink.setup()
    try:
        for statements in (before, after):
            with psycopg.connect(d.postgres.pipeline_dsn()) as c:
                for stmt in statements:
                    c.execute(stmt.format(t=name))
            sink.read()
        assert [e[0] for e in sink.final_read()] == final
    finally:
        sink.close()
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}, {name}_new")


def test_xmin_reapplications_survive_a_final_read_of_the_table(shared_targets):
    """`applied: xmin`: the table holds one row an id, the decoded history its insert and
    every UPDATE; the final content keeps those applications for the ids still in the table."""
    d = shared_targets
    name = f"xmin_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (order_id text PRIMARY KEY, customer text, n bigint)")
    sink = PostgresTableSink(d, PostgresMapping(table=name, id="order_id", key="customer", seq="n", applied="xmin"))
    sink.setup()
    try:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"INSERT INTO {name} VALUES ('e0', 'c', 0), ('e1', 'c', 1), ('e2', 'c', 2)")
            c.execute(f"UPDATE {name} SET customer = 'c' WHERE order_id = 'e1'")  # applied again
            c.execute(f"DELETE FROM {name} WHERE order_id = 'e2'")
        sink.read()
        assert sorted(e[0] for e in sink.final_read()) == ["e0", "e1", "e1"]
    finally:
        sink.close()
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")


def test_a_migration_that_drops_the_primary_key_takes_the_table_out_of_the_publication(shared_targets):
    """A published table whose primary key a migration drops would make the server refuse the
    pipeline's every UPDATE of it ("does not have a replica identity and publishes updates": a
    correct pipeline stalled, found by a new user). The observer's event trigger takes it out
    of the publication in the migration's own transaction: the UPDATEs go through, and the final
    read (the table) still has every row, those written after the migration included."""
    d = shared_targets
    name = f"mig_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(d.postgres.pipeline_dsn(), autocommit=True) as c:
        c.execute(f"CREATE TABLE {name} (order_id text PRIMARY KEY, customer text, n bigint, note text)")
    sink = PostgresTableSink(d, PostgresMapping(table=name, id="order_id", key="customer", seq="n"))
    sink.setup()
    try:
        assert sink.follower.plugin == "pgoutput"
        with psycopg.connect(d.postgres.pipeline_dsn(), autocommit=True) as c:
            c.execute(f"INSERT INTO {name} VALUES ('e0', 'c', 0, ''), ('e1', 'c', 1, '')")
            assert [e[0] for e in sink.read()[0]] == ["e0", "e1"]
            c.execute(f"ALTER TABLE {name} DROP CONSTRAINT {name}_pkey")
            c.execute(f"UPDATE {name} SET note = 'seen' WHERE order_id = 'e0'")  # refused while published
            c.execute(f"INSERT INTO {name} VALUES ('e2', 'c', 2, '')")
        sink.read()
        assert [e[0] for e in sink.final_read()] == ["e0", "e1", "e2"]
    finally:
        sink.close()
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute(f"DROP TABLE IF EXISTS {name}")
