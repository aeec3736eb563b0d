"""Where the workload puts events: a Kafka topic, a Redis stream or a PostgreSQL table.

Each source creates itself (direct connection, before the pipeline starts) and sends
batches through the load generator's fault proxies. Every event's send is one `send`
operation in the history: invoke, then ok (certainly written), fail (certainly not
written) or info (nobody knows: a timeout, a connection lost mid-request)."""
from __future__ import annotations

import socket
import urllib.parse
from typing import Any, Callable

from onceproof.formats import Format
from onceproof.targets.deployment import Deployment
from onceproof.targets.kafka import clients as kafka_clients
from onceproof.topics import create_topic

Event = tuple[str, str, int, str]  # id, key, seq, payload
# events whose first three items are (id, key, seq), and "ok"|"fail"|"info"; the Kafka source's
# ok events are the sent events themselves, (id, key, seq, payload), to save a tuple per event
Complete = Callable[[list[tuple[str, str, int]], str], None]
# where acknowledged events landed in the source: (partition, [(id, position), ...]); a position is
# a Kafka offset, a Redis stream entry id ("ms-seq") or a Postgres source table's `pos`
Landed = Callable[[int, list[tuple[str, int | str]]], None]

SOURCE_TABLE_DDL = "CREATE TABLE IF NOT EXISTS {t} (pos bigserial, id text, key text, seq bigint, payload text)"


_JSON = '{"id":"%s","key":"%s","seq":%d,"payload":"%s"}'


def encode(event: Event) -> bytes:
    """The event as the contract's JSON object. Ids, keys and payloads are the generator's own
    (letters and digits), so plain formatting is valid JSON and much faster than a dict."""
    return (_JSON % event).encode()


class Source:
    """Subclasses: setup() once, send(batch, complete) per batch, poll() often, close(timeout).
    A source that knows where an acknowledged event landed calls `on_landed` (set by the
    workload) before completing it."""

    def __init__(self, deployment: Deployment, name: str, partitions: int, fmt: Format | None = None) -> None:
        self.deployment = deployment
        self.name = name
        self.partitions = partitions
        self.fmt = fmt  # the wire format (harness/formats.py); None: the contract's JSON
        self.on_landed: Landed | None = None

    def setup(self) -> None:
        """Create the source (topic, stream, table) afresh, then connect()."""
        raise NotImplementedError

    def connect(self) -> None:
        """The client only, the source already set up (a load process of `workload.processes`,
        harness/loadprocs.py, connects to what the harness set up)."""
        raise NotImplementedError

    def send(self, batch: list[Event], complete: Complete) -> None:
        raise NotImplementedError

    def poll(self, complete: Complete) -> None:
        """Deliver completions of earlier sends (asynchronous sources)."""

    def close(self, timeout: float, complete: Complete) -> None:
        """Wait up to timeout for outstanding sends; what is still unknown then ends as info."""

    def release(self) -> None:
        """Drop the source's client at once, without waiting or recording anything (the run's
        end when the load did not get to close() it): never left for after the targets stop."""


class KafkaSource(Source):
    """An idempotent producer with acks=all. A delivery report is ok or info: once a record
    left the client, an error (timeout, broker gone) cannot tell whether it was written;
    a record the client never managed to enqueue or purged unsent is fail."""

    def setup(self) -> None:
        create_topic(self.deployment, self.name, self.partitions, wait_for_leaders=True)
        self.connect()

    def connect(self) -> None:
        from confluent_kafka import Producer

        self._pending: dict[str, Any] = {}  # id -> (key, seq), or the event itself (default format)
        self._delivered: list[tuple[Any, Any]] = []  # (error, message) of the default format's reports
        self._key_bytes: dict[str, bytes] = {}
        self._done: list[tuple[tuple[str, str, int], str]] = []
        self._landed: dict[int, list[tuple[str, int | str]]] = {}
        self.producer = Producer(kafka_clients.config({
            "bootstrap.servers": self.deployment.kafka_bootstrap("load"),
            "enable.idempotence": True, "acks": "all", "linger.ms": 5,
            "queue.buffering.max.messages": 2_000_000, "queue.buffering.max.kbytes": 1_048_576,
            "batch.num.messages": 10000, "message.timeout.ms": 20000, "socket.timeout.ms": 5000,
        }))

    def _on_delivery(self, err: Any, msg: Any) -> None:
        """The delivery report of an event in the contract's JSON, kept as it is and sorted out
        in bulk by _flush_done: this call, one per event, is most of the producer path's cost
        (benchmarks/load.py), so it does nothing else."""
        self._delivered.append((err, msg))

    def _outcome(self, err: Any) -> str:
        from confluent_kafka import KafkaError

        return "fail" if err.code() == KafkaError._PURGE_QUEUE else "info"

    def _on_delivery_of(self, eid: str) -> Callable[[Any, Any], None]:
        def delivered(err: Any, msg: Any) -> None:
            key, seq = self._pending.pop(eid, ("", -1))
            if err is None:
                outcome = "ok"
                self._landed.setdefault(msg.partition(), []).append((eid, msg.offset()))
            else:
                from confluent_kafka import KafkaError

                outcome = "fail" if err.code() == KafkaError._PURGE_QUEUE else "info"
            self._done.append(((eid, key, seq), outcome))
        return delivered

    def _send_formatted(self, batch: list[Event], complete: Complete, fmt: Format) -> None:
        """Each event rendered by the plan's format: value, key and headers templates."""
        value, key_t, headers = fmt.value, fmt.key, list(fmt.headers.items())
        failed = []
        for event in batch:
            eid, key, seq, _ = event
            v = value.render(event).encode() if value is not None else encode(event)
            k = key_t.render(event).encode() if key_t is not None else key.encode()
            hs = [(n, t.render(event).encode()) for n, t in headers] or None
            try:
                self.producer.produce(self.name, v, k, headers=hs, on_delivery=self._on_delivery_of(eid))
                self._pending[eid] = (key, seq)
            except BufferError:
                failed.append((eid, key, seq))
        if failed:
            complete(failed, "fail")
        self._flush_done(complete)

    def send(self, batch: list[Event], complete: Complete) -> None:
        if self.fmt is not None:
            self._send_formatted(batch, complete, self.fmt)
            return
        failed = []
        # the per-event loop is the hot path: names bound once, keys encoded once, encode() inlined
        produce, name, delivered, pending = self.producer.produce, self.name, self._on_delivery, self._pending
        key_bytes = self._key_bytes
        for event in batch:
            key = event[1]
            kb = key_bytes.get(key)
            if kb is None:
                kb = key_bytes[key] = key.encode()
            try:
                produce(name, (_JSON % event).encode(), kb, on_delivery=delivered)
                pending[event[0]] = event
            except BufferError:
                failed.append((event[0], key, event[2]))  # never enqueued: certainly not written
        if failed:
            complete(failed, "fail")
        self._flush_done(complete)

    def poll(self, complete: Complete) -> None:
        self._flush_done(complete)

    def _flush_done(self, complete: Complete) -> None:
        self.producer.poll(0)
        ok: list[Any] = []
        if self._delivered:  # the default format's reports, in bulk (see _on_delivery)
            reports, self._delivered = self._delivered, []
            pop, landed = self._pending.pop, self._landed
            for err, msg in reports:
                value = msg.value()
                eid = value[7 : value.index(b'"', 7)].decode()  # value starts with {"id":"<id>"
                event = pop(eid, None) or (eid, "", -1, "")
                if err is None:
                    ok.append(event)  # (id, key, seq, payload): the history takes the first three
                    part = msg.partition()
                    pairs = landed.get(part)
                    if pairs is None:
                        pairs = landed[part] = []
                    pairs.append((eid, msg.offset()))
                else:
                    self._done.append(((eid, event[1], event[2]), self._outcome(err)))
        if self._landed:
            landed, self._landed = self._landed, {}
            if self.on_landed is not None:
                for partition, pairs in landed.items():
                    self.on_landed(partition, pairs)
        if ok:
            complete(ok, "ok")
        if self._done:
            done, self._done = self._done, []
            by: dict[str, list[tuple[str, str, int]]] = {"ok": [], "fail": [], "info": []}
            for ev, outcome in done:
                by[outcome].append(ev)
            for outcome, evs in by.items():
                if evs:
                    complete(evs, outcome)

    def close(self, timeout: float, complete: Complete) -> None:
        self.producer.flush(timeout)
        self.producer.purge()
        self.producer.flush(1)
        self._flush_done(complete)
        self.producer = None  # destroyed now, not when the targets are already gone

    def release(self) -> None:
        producer, self.producer = getattr(self, "producer", None), None
        if producer is not None:
            producer.purge()  # what is still queued is never sent: destroyed at once


class RedisSource(Source):
    """XADD to a stream with fields id, key, seq, payload, pipelined in batches over a plain
    socket (commands packed here: redis-py's packer costs more than the server's work). A
    refused connection is fail (nothing was sent); a timeout, a lost connection mid-batch or
    a reply that never came is info for the events without a reply."""

    timeout = 2.0

    def setup(self) -> None:
        from onceproof.targets.redis import client

        assert self.deployment.redis is not None
        r = self.deployment.redis
        client(r.host, r.port, password=r.password).delete(self.name)
        self.connect()

    def connect(self) -> None:
        url = urllib.parse.urlsplit(self.deployment.redis_url("load"))
        assert url.hostname is not None and url.port is not None
        self.address = (url.hostname, url.port)
        password = (url.password or "").encode()
        self.auth = b"*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n" % (len(password), password) if password else b""
        self.sock: socket.socket | None = None
        self.head = b"*11\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n" % (len(self.name), self.name.encode())

    def _pack(self, event: Event) -> bytes:
        if self.fmt is not None and self.fmt.fields:
            return self._pack_fields(event, self.fmt)
        eid, key, seq, payload = event
        s = str(seq)
        return b"".join((self.head, (f"$2\r\nid\r\n${len(eid)}\r\n{eid}\r\n$3\r\nkey\r\n${len(key)}\r\n{key}\r\n"
                                     f"$3\r\nseq\r\n${len(s)}\r\n{s}\r\n$7\r\npayload\r\n${len(payload)}\r\n"
                                     f"{payload}\r\n").encode()))

    def _pack_fields(self, event: Event, fmt: Format) -> bytes:
        """XADD with the plan's fields (field -> template), in the plan's order."""
        parts = [b"XADD", self.name.encode(), b"*"]
        for name, t in fmt.fields.items():
            parts += [name.encode(), t.render(event).encode()]
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    def _drop(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.sock = None

    def send(self, batch: list[Event], complete: Complete) -> None:
        events = [(e[0], e[1], e[2]) for e in batch]
        try:
            if self.sock is None:
                self.sock = socket.create_connection(self.address, timeout=self.timeout)
                self.reader = self.sock.makefile("rb")
                if self.auth:
                    self.sock.sendall(self.auth)
                    if self.reader.readline()[:3] != b"+OK":
                        raise ConnectionRefusedError("redis refused the run's password")
        except OSError as e:
            self._drop()
            complete(events, "fail" if isinstance(e, ConnectionRefusedError) else "info")
            return
        done = 0
        landed: list[tuple[str, int | str]] = []  # (event id, stream entry id)
        try:
            self.sock.sendall(b"".join(map(self._pack, batch)))
            readline = self.reader.readline
            while done < len(events):
                line = readline()
                if not line:
                    raise ConnectionError("connection closed")
                if line[:1] == b"$":
                    landed.append((events[done][0], readline()[:-2].decode()))
                    done += 1
                elif line[:1] == b"-":  # the server refused this command: not written
                    complete([events[done]], "fail")
                    events.pop(done)
        except OSError:
            self._drop()
        if landed and self.on_landed is not None:
            self.on_landed(0, landed)
        if done:
            complete(events[:done], "ok")
        if done < len(events):
            complete(events[done:], "info")

    def close(self, timeout: float, complete: Complete) -> None:
        self._drop()

    def release(self) -> None:
        if getattr(self, "sock", None) is not None:
            self._drop()


class PostgresSource(Source):
    """INSERT into a table (pos, id, key, seq, payload), one transaction per batch. An error
    before COMMIT is fail (rolled back); an error during COMMIT is info."""

    def setup(self) -> None:
        import psycopg

        with psycopg.connect(self.deployment.postgres_dsn(), autocommit=True, connect_timeout=10) as c:
            c.execute(f"DROP TABLE IF EXISTS {self.name}")
            if self.fmt is not None and self.fmt.columns:
                cols = ", ".join(f"{n} {'bigint' if t.whole_seq else 'text'}" for n, t in self.fmt.columns.items())
                c.execute(f"CREATE TABLE {self.name} (pos bigserial, {cols})")
            else:
                c.execute(SOURCE_TABLE_DDL.format(t=self.name))
        self.connect()

    def connect(self) -> None:
        self.conn: Any = None

    def _connect(self) -> Any:
        import psycopg

        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.deployment.postgres_dsn("load"), connect_timeout=2,
                                        options="-c statement_timeout=5000")
        return self.conn

    def send(self, batch: list[Event], complete: Complete) -> None:
        import psycopg

        events = [(e[0], e[1], e[2]) for e in batch]
        try:
            conn = self._connect()
            with conn.cursor() as cur:
                landed: list[tuple[str, int | str]] = []
                if self.fmt is not None and self.fmt.columns:
                    cols = self.fmt.columns
                    rows = [tuple(int(t.render(e)) if t.whole_seq else t.render(e) for t in cols.values())
                            for e in batch]
                    cur.executemany(f"INSERT INTO {self.name} ({', '.join(cols)}) VALUES "
                                    f"({', '.join(['%s'] * len(cols))}) RETURNING pos", rows, returning=True)
                    positions: list[int] = []
                    while True:
                        positions += [int(r[0]) for r in cur.fetchall()]
                        if not cur.nextset():
                            break
                    landed = [(e[0], p) for e, p in zip(batch, positions)]
                else:
                    cur.executemany(f"INSERT INTO {self.name} (id, key, seq, payload) VALUES (%s, %s, %s, %s) "
                                    "RETURNING id, pos", batch, returning=True)
                    while True:
                        landed += [(str(i), int(p)) for i, p in cur.fetchall()]
                        if not cur.nextset():
                            break
        except psycopg.Error:
            self._drop()
            complete(events, "fail")
            return
        try:
            conn.commit()
        except psycopg.Error:
            self._drop()
            complete(events, "info")
            return
        if self.on_landed is not None:
            self.on_landed(0, landed)
        complete(events, "ok")

    def _drop(self) -> None:
        try:
            if self.conn is not None:
                self.conn.close()
        except Exception:  # noqa: BLE001
            pass
        self.conn = None

    def close(self, timeout: float, complete: Complete) -> None:
        self._drop()

    def release(self) -> None:
        if getattr(self, "conn", None) is not None:
            self._drop()


SOURCES: dict[str, type[Source]] = {"kafka": KafkaSource, "redis": RedisSource, "postgres": PostgresSource}


def make_source(endpoint: str, deployment: Deployment, partitions: int, fmt: Format | None = None) -> Source:
    """The source for KIND:NAME, writing events in `fmt` (None: the contract's JSON)."""
    kind, name = endpoint.split(":", 1)
    return SOURCES[kind](deployment, name, partitions, fmt)
