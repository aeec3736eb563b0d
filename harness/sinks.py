"""Where the pipeline's effects land, and how the observer reads them.

A sink is read directly (never through a fault proxy: a partition of the pipeline must not
blind the judge). `read()` returns (events, full): events as [id, key, seq, replica] in
application order; full=True means it is the whole content of the sink now."""
from __future__ import annotations

import time
from typing import Any, Iterator

import orjson

from onceproof.targets.deadline import SocketDeadline
from onceproof.targets.deployment import Deployment
from onceproof.targets.kafka import clients as kafka_clients
from onceproof.topics import create_topic

Effect = list[Any]  # [id, key, seq, replica]

EFFECTS_DDL = ("CREATE TABLE IF NOT EXISTS {t} (event_id text, key text, seq bigint, replica int, "
               "applied_at timestamptz DEFAULT now(), pos bigserial)")


class Sink:
    id_field = "workload.sink"  # the plan's field that says where an effect's id is (for errors)

    def __init__(self, deployment: Deployment, name: str) -> None:
        self.deployment = deployment
        self.name = name

    def setup(self) -> None:
        """Create the sink before the pipeline starts."""

    def read(self) -> tuple[list[Effect], bool]:
        raise NotImplementedError

    def final_read(self) -> list[Effect]:
        """The complete content of the sink (after quiescence)."""
        raise NotImplementedError

    def passing(self) -> list[Effect]:
        """After a `read()` that returned the whole content (full=True): the applications it saw
        become visible on the way, in order, some maybe gone again from that content (a row
        inserted and deleted between two reads); the observer records their sighting before
        the content, so the checker sees each as applied then removed (`flicker`), not as never
        applied. [] when the sink has no such notion."""
        return []

    def visible(self) -> tuple[list[list[int]], str] | None:
        """After `read()`: when its new effects became visible in the sink, as runs [[n, t], ...]
        covering them in order (n effects became visible at t, `time.monotonic_ns()` clock), and
        what the times are (`commit`, `LogAppendTime`, `CreateTime`); None when not known (the
        observer then takes the time of the read)."""
        return None

    def state(self, query: str) -> dict[str, dict[str, int]] | None:
        return None

    def unstable(self) -> list[dict[str, int]] | None:
        """Partitions a read_committed reader cannot read to their end now (an open transaction):
        [{"partition", "last_stable", "end"}]; None when the sink has no such notion."""
        return None

    def close(self) -> None:
        """Release the sink's clients (the run closes it before the targets stop)."""


class PostgresSink(Sink):
    """The default sink: a table with one row per application of an effect, no unique
    constraint (a duplicate is a second row). `pos` orders rows by insertion. Followed by
    logical decoding while the run goes on (harness/pgdecode.py: each read costs what changed)
    when the server allows it, else re-read on each pass; the final read is a full read."""

    def setup(self) -> None:
        import psycopg

        with psycopg.connect(self.deployment.postgres_dsn(), autocommit=True, connect_timeout=10) as c:
            c.execute(f"DROP TABLE IF EXISTS {self.name}")
            c.execute(EFFECTS_DDL.format(t=self.name))
            c.execute(f"ALTER TABLE {self.name} REPLICA IDENTITY FULL")  # a decoded delete names its row
        self.db = PostgresReader(self.deployment.postgres_dsn())
        self.seen: dict[int, Effect] = {}  # pos -> effect, everything seen so far
        self.follower = _follower(self.deployment.postgres_dsn(), self.name, self._full)

    def _full(self) -> list[Effect]:
        return [[r[1], r[2], r[3], r[4]] for r in self._select(timeout=30.0)]

    def _select(self, timeout: float = 10.0) -> list[tuple]:
        return self.db.rows(f"SELECT pos, event_id, key, seq, replica FROM {self.name} ORDER BY pos", timeout=timeout)[1]

    def passing(self) -> list[Effect]:
        return self.follower.passing if self.follower is not None else []

    def visible(self) -> tuple[list[list[int]], str] | None:
        runs = self.follower.visible if self.follower is not None else None
        return (runs, "commit") if runs else None

    def read(self) -> tuple[list[Effect], bool]:
        if self.follower is not None:
            return self.follower.read()
        rows = self._select()
        now = {r[0]: [r[1], r[2], r[3], r[4]] for r in rows}
        vanished = [p for p in self.seen if p not in now]
        if vanished:  # something seen before is gone: report the full content (a flicker)
            self.seen = now
            return [now[p] for p in sorted(now)], True
        new = [now[p] for p in sorted(now) if p not in self.seen]
        self.seen.update((p, now[p]) for p in now if p not in self.seen)
        return new, False

    def final_read(self) -> list[Effect]:
        return self._full()

    def state(self, query: str) -> dict[str, dict[str, int]] | None:
        return {str(k): {"count": int(c), "sum": int(s)} for k, c, s in self.db.rows(query, timeout=30.0)[1]}

    def close(self) -> None:
        follower, self.follower = getattr(self, "follower", None), None
        if follower is not None:
            follower.close()  # drops the replication slot
        db = getattr(self, "db", None)
        if db is not None:
            db.close()


class PostgresReader:
    """The observer's connection to the PostgreSQL at `dsn` (autocommit), opened on first use and
    again after a failure. `rows(query, params, timeout)` runs one query under a SocketDeadline
    of `timeout` s (a paused server or a partition fails the read instead of hanging it) and
    returns (column names, rows). It raises psycopg.Error: the connection is closed first (the
    next call opens a new one), unless the error is in the query itself (psycopg.ProgrammingError,
    SQLSTATE class 42: e.g. a table the pipeline has not created yet), which leaves it usable."""

    def __init__(self, dsn: str, connect_timeout: int = 3) -> None:
        self.dsn, self.connect_timeout = dsn, connect_timeout
        self.conn: Any = None

    def connection(self) -> Any:
        """The open psycopg connection (opened now if there is none). Raises psycopg.Error."""
        import psycopg

        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=self.connect_timeout)
        return self.conn

    def rows(self, query: str, params: tuple | None = None, timeout: float = 10.0) -> tuple[list[str], list[tuple]]:
        import psycopg

        conn = self.connection()
        try:
            with SocketDeadline(conn, timeout):
                cur = conn.execute(query, params)
                return [d.name for d in cur.description or ()], cur.fetchall()
        except psycopg.ProgrammingError:
            raise
        except psycopg.Error:
            self.close()
            raise

    def close(self) -> None:
        """Close the connection, whatever state it is in. Never raises."""
        from onceproof.pgdecode import close_quietly

        conn, self.conn = self.conn, None
        close_quietly(conn)


def _follower(dsn: str, table: str, full: Any) -> Any:
    """A logical-decoding Follower of our effects table, or None when the server cannot decode
    (wal_level below logical, no free slot): the sink then re-reads the table on each pass."""
    import psycopg

    from onceproof.pgdecode import Follower, Rows

    follower = Follower(dsn, table, Rows("event_id", "key", "seq", "replica"), full_select=full)
    try:
        follower.create()
    except psycopg.Error:
        follower.close()
        return None
    return follower


def _effect_from_json(value: bytes | None) -> Effect:
    d = orjson.loads(value) if value else {}
    return [d.get("id"), d.get("key"), d.get("seq"), d.get("replica")]


REASSIGN_S = 2.0  # how often an incremental read of a Kafka sink looks for partitions it does not read


class KafkaSink(Sink):
    """An output topic read with isolation.level=read_committed (aborted writes invisible).
    Messages are JSON {id, key, seq, replica}. Such a reader stops at a partition's last
    stable offset (the first open transaction): the final read ends there, and `unstable()`
    says which partitions it is behind the log end of."""

    def setup(self) -> None:
        from confluent_kafka.admin import AdminClient

        create_topic(self.deployment, self.name, 3)
        self.admin = AdminClient(kafka_clients.config({"bootstrap.servers": self.deployment.kafka_bootstrap()}))
        self.consumer = self._consumer()

    def effect_of(self, msg: Any) -> Effect:
        """One message as an effect (our JSON; a mapped topic overrides it: harness/mappings.py)."""
        return _effect_from_json(msg.value())

    def _ends(self, committed: bool) -> dict[int, int]:
        """End offset per partition: the last stable offset (committed=True) or the log end."""
        from confluent_kafka import IsolationLevel, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        md = self.admin.list_topics(self.name, timeout=10).topics[self.name]
        level = IsolationLevel.READ_COMMITTED if committed else IsolationLevel.READ_UNCOMMITTED
        futures = self.admin.list_offsets({TopicPartition(self.name, p): OffsetSpec.latest()
                                           for p in sorted(md.partitions)}, isolation_level=level,
                                          request_timeout=10)
        return {tp.partition: f.result().offset for tp, f in futures.items()}

    def unstable(self) -> list[dict[str, int]] | None:
        stable, end = self._ends(True), self._ends(False)
        return [{"partition": p, "last_stable": stable[p], "end": end[p]} for p in sorted(end)
                if stable.get(p, end[p]) < end[p]]

    def _consumer(self) -> Any:
        from confluent_kafka import Consumer

        c = Consumer(kafka_clients.config({
            "bootstrap.servers": self.deployment.kafka_bootstrap(), "group.id": "onceproof-observer",
            "isolation.level": "read_committed", "enable.auto.commit": False, "auto.offset.reset": "earliest"}))
        self._assign_new(c)
        self.checked_at = time.monotonic()
        return c

    def _assign_new(self, consumer: Any) -> None:
        """Assign, from their beginning, the topic's partitions the consumer does not read yet.
        Right after the topic is created its metadata may list no partition yet (found: an
        observer that read nothing for a whole run, its assignment empty), and a pipeline may
        add partitions: so this is done again during the run (`read`)."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        md = consumer.list_topics(self.name, timeout=10).topics.get(self.name)
        if md is None or md.error is not None:
            return
        have = {tp.partition for tp in consumer.assignment()}
        new = [TopicPartition(self.name, p, OFFSET_BEGINNING) for p in sorted(md.partitions) if p not in have]
        if new:
            consumer.incremental_assign(new)

    def _drain(self, consumer: Any, budget_s: float, until_end: bool) -> list[Effect]:
        out: list[Effect] = []
        stamps: list[tuple[int, int]] = []  # per effect: (timestamp type, ms since the epoch)
        self._stamps = stamps
        # the end of a read_committed read is each partition's last stable offset (taken now: an
        # open transaction holds it back, and the read must not wait for it past its budget)
        ends = self._ends(True) if until_end else {}
        deadline = time.monotonic() + budget_s
        while time.monotonic() < deadline:
            msgs = consumer.consume(10000, timeout=0.1)
            for m in msgs:
                if m.error() is None:
                    out.append(self.effect_of(m))
                    stamps.append(m.timestamp())
            if not msgs:
                if not until_end:
                    break
                # at the end when every partition's position reached its last stable offset
                done = True
                for tp in consumer.assignment():
                    high = ends.get(tp.partition, 0)
                    pos = consumer.position([tp])[0].offset
                    if pos < 0 and high > 0 or pos >= 0 and pos < high:
                        done = False
                if done:
                    break
        return out

    def visible(self) -> tuple[list[list[int]], str] | None:
        """The messages' timestamps: the broker's append time on a topic with
        message.timestamp.type=LogAppendTime, else the producer's CreateTime (the pipeline's
        clock), mapped from the wall clock to the monotonic one now (a broker on this machine
        shares its clock; the observer bounds a time by the read)."""
        from confluent_kafka import TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME

        stamps = getattr(self, "_stamps", None)
        if not stamps or any(kind not in (TIMESTAMP_CREATE_TIME, TIMESTAMP_LOG_APPEND_TIME) for kind, _ in stamps):
            return None
        offset = time.monotonic_ns() - time.time_ns()
        runs: list[list[int]] = []
        for _, ms in stamps:
            t = ms * 1_000_000 + offset
            if runs and runs[-1][1] == t:
                runs[-1][0] += 1
            else:
                runs.append([1, t])
        kinds = {kind for kind, _ in stamps}
        return runs, "LogAppendTime" if kinds == {TIMESTAMP_LOG_APPEND_TIME} else "CreateTime"

    def read(self) -> tuple[list[Effect], bool]:
        if time.monotonic() - self.checked_at > REASSIGN_S:
            self._assign_new(self.consumer)
            self.checked_at = time.monotonic()
        return self._drain(self.consumer, 1.0, until_end=False), False

    def final_read(self) -> list[Effect]:
        fresh = self._consumer()  # read everything again: a truncated log shows up as a flicker
        try:
            deadline = time.monotonic() + 30
            while not fresh.assignment() and time.monotonic() < deadline:  # the topic's metadata not there yet
                time.sleep(0.2)
                self._assign_new(fresh)
            return self._drain(fresh, 60.0, until_end=True)
        finally:
            fresh.close()

    def close(self) -> None:
        """Close the observer's consumer and drop the admin client (both destroyed now, while
        the brokers still run: a client that outlives them logs connection failures)."""
        consumer, self.consumer = getattr(self, "consumer", None), None
        self.admin = None
        if consumer is not None:
            consumer.close()


def stream_entries(client: Any, stream: str, after: str | None = None) -> Iterator[tuple[str, dict]]:
    """Every entry `(id, fields)` of a Redis stream after the entry id `after` (None: from the
    start), read in pages of 10,000 with XRANGE's exclusive start `(id` (Redis >= 6.2)."""
    last = after
    while True:
        entries = client.xrange(stream, min=f"({last}" if last else "-", count=10000)
        if not entries:
            return
        yield from entries
        last = entries[-1][0]


def redis_client(deployment: Deployment) -> Any:
    """A client of the run's Redis (5 s socket timeout); the observer reads sinks with it."""
    from onceproof.targets.redis import client

    r = deployment.redis
    assert r is not None
    return client(r.host, r.port, timeout=5.0, password=r.password)


class RedisStreamSink(Sink):  # redis-py types every reply as maybe-awaitable: Any here
    """A Redis stream whose entries have fields id, key, seq, replica, read incrementally (XRANGE
    after the last entry id read). The one place a stream is read: a mapped stream
    (harness/mappings.py) overrides `effect_of` and keeps the user's stream at setup."""

    def setup(self) -> None:
        self.connect()
        self.client.delete(self.name)

    def connect(self) -> None:
        """Open the client; the next `read` starts at the stream's first entry."""
        self.client: Any = redis_client(self.deployment)
        self.last = "0-0"

    def effect_of(self, fields: dict) -> Effect:
        """One entry's fields as an effect."""
        seq = fields.get("seq")
        rep = fields.get("replica")
        return [fields.get("id"), fields.get("key"), int(seq) if seq is not None else None,
                int(rep) if rep is not None else None]

    def read(self) -> tuple[list[Effect], bool]:
        entries = list(stream_entries(self.client, self.name, self.last))
        if entries:
            self.last = entries[-1][0]
        return [self.effect_of(f) for _, f in entries], False

    def final_read(self) -> list[Effect]:
        return [self.effect_of(f) for _, f in stream_entries(self.client, self.name)]


class RedisSetSink(Sink):
    """A Redis set of event ids: it cannot show duplicates (a set), only lost and phantom."""

    def setup(self) -> None:
        self.client: Any = redis_client(self.deployment)
        self.client.delete(self.name)
        self.seen: set[str] = set()

    def read(self) -> tuple[list[Effect], bool]:
        members = self.client.smembers(self.name)
        if self.seen - members:
            self.seen = set(members)
            return [[m, None, None, None] for m in sorted(members)], True
        new = members - self.seen
        self.seen |= new
        return [[m, None, None, None] for m in sorted(new)], False

    def final_read(self) -> list[Effect]:
        return [[m, None, None, None] for m in sorted(self.client.smembers(self.name))]


SINKS: dict[str, type[Sink]] = {"postgres": PostgresSink, "kafka": KafkaSink, "redis-stream": RedisStreamSink,
                                "redis-set": RedisSetSink}


def make_sink(endpoint: str, deployment: Deployment) -> Sink:
    kind, name = endpoint.split(":", 1)
    return SINKS[kind](deployment, name)
