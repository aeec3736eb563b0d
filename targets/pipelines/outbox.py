"""outbox: the TRANSACTIONAL OUTBOX, Kafka -> (service) PostgreSQL -> (relay) Kafka, exactly once.

Claim: every event reaches the sink topic exactly once (read with read_committed), whatever
replica is killed, paused or cut off.

How: each replica runs two parts.
- The service consumes the source and, in ONE PostgreSQL transaction per batch, writes its
  business rows (`onceproof_orders`), one outbox row per event (`onceproof_outbox`, with a
  `pos`, the source partition and offset, and `sent = false`) and its source positions, fenced as
  in kafka_to_postgres. Business row and outbox row commit together or not at all.
- The relay (a thread) publishes the unsent outbox rows of its share (source partition mod
  replicas = replica) to the sink topic, each batch in one Kafka TRANSACTION of a producer whose
  transactional.id is fixed per relay (KIP-98: a restarted relay fences its previous incarnation
  and aborts its open transaction), to its own sink partitions only. After the commit it marks
  the rows sent. Marking is NOT atomic with the publish: a relay killed in between finds the rows
  unsent, so on every (re)start, and after any error whose outcome is unknown, it first reads its
  own sink partitions (read_committed) and marks what is already there: the topic, not the
  `sent` flag, is the truth. Each message carries its outbox `pos` and relay for that.

Broken twin: outbox_relay_crash (publishes, then marks, with no recovery).
"""
from __future__ import annotations

import json
import os
import threading
import time
import zlib
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from onceproof.targets.pipelines.common import (Config, Postgres, consumer_config, create_table, error_cb, log,
                                                main, one_line)
from onceproof.targets.pipelines.kafka_to_postgres import Pipeline

ORDERS_DDL = """CREATE TABLE IF NOT EXISTS onceproof_orders (
    event_id text NOT NULL, key text NOT NULL, seq bigint NOT NULL, replica int NOT NULL)"""
OUTBOX_DDL = """CREATE TABLE IF NOT EXISTS onceproof_outbox (
    pos bigserial PRIMARY KEY, event_id text NOT NULL, key text NOT NULL, seq bigint NOT NULL,
    part int NOT NULL, src_offset bigint NOT NULL, sent boolean NOT NULL DEFAULT false)"""
# the service's positions, held back to the first outbox row not yet published: what the plan
# names as the pipeline's progress (an event is "processed" once it left the outbox)
PROGRESS = ("SELECT o.partition, LEAST(o.next_offset, COALESCE((SELECT min(x.src_offset) FROM onceproof_outbox x "
            "WHERE NOT x.sent AND x.part = o.partition), o.next_offset)) FROM onceproof_offsets o")
BATCH = 500


class Service(Pipeline):
    """kafka_to_postgres whose batch writes business rows and outbox rows (one transaction)."""

    def setup(self) -> None:
        super().setup()
        create_table(self.pg, ORDERS_DDL)
        create_table(self.pg, OUTBOX_DDL)

    def write(self, conn: psycopg.Connection, events: list[dict[str, Any]]) -> None:
        cols = ([e["id"] for e in events], [e["key"] for e in events], [e["seq"] for e in events])
        conn.execute("INSERT INTO onceproof_orders (event_id, key, seq, replica) "
                     "SELECT e, k, s, %s FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(e, k, s)",
                     (self.cfg.replica, *cols))
        self.write_outbox(conn, events)

    @staticmethod
    def write_outbox(conn: psycopg.Connection, events: list[dict[str, Any]]) -> None:
        conn.execute("INSERT INTO onceproof_outbox (event_id, key, seq, part, src_offset) "
                     "SELECT * FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::int[], %s::bigint[])",
                     ([e["id"] for e in events], [e["key"] for e in events], [e["seq"] for e in events],
                      [e["partition"] for e in events], [e["offset"] for e in events]))


class Relay:
    """Publishes this replica's share of the outbox. transactional=False, recover=False is the
    broken relay of outbox_relay_crash."""

    def __init__(self, cfg: Config, transactional: bool = True, recover: bool = True) -> None:
        self.cfg, self.transactional, self.recover = cfg, transactional, recover
        self.pg = Postgres(cfg.postgres_dsn)
        self.topic = cfg.sink_name
        self.producer: Any = None
        self.mine: list[int] = []  # the sink partitions this relay writes
        self.hold = int(os.environ.get("ONCEPROOF_RELAY_HOLD_MS") or 0)

    def _producer(self) -> None:
        conf: dict[str, Any] = {"bootstrap.servers": self.cfg.bootstrap, "enable.idempotence": True, "acks": "all",
                                "linger.ms": 5, "message.timeout.ms": 20000, "socket.timeout.ms": 10000,
                                "error_cb": error_cb}
        if self.transactional:
            conf |= {"transactional.id": f"onceproof-{self.cfg.run_id}-relay-{self.cfg.replica}",
                     "transaction.timeout.ms": 10000, "message.timeout.ms": 10000}
        self.producer = Producer(conf)
        if self.transactional:
            self.producer.init_transactions(30)  # fences the previous incarnation, aborts its transaction
        md = self.producer.list_topics(self.topic, timeout=10).topics[self.topic]
        parts = sorted(md.partitions)
        self.mine = [p for p in parts if p % self.cfg.replicas == self.cfg.replica % len(parts)] or \
            [parts[self.cfg.replica % len(parts)]]

    def published(self) -> list[int]:
        """Outbox positions already in this relay's sink partitions (read_committed), read to
        their end; raises RuntimeError when the end is not reached in 30 s."""
        conf = consumer_config(self.cfg, **{"group.id": f"onceproof-{self.cfg.run_id}-relay-scan",
                                            "isolation.level": "read_committed"})
        conf.pop("group.instance.id")  # assign() only: no group membership
        c = Consumer(conf)
        try:
            ends = {p: c.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1] for p in self.mine}
            c.assign([TopicPartition(self.topic, p, 0) for p in self.mine])
            out: list[int] = []
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                for m in c.consume(1000, 0.2):
                    if m.error() is None:
                        d = json.loads(m.value())
                        if d.get("relay") == self.cfg.replica:
                            out.append(int(d["opos"]))
                pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(self.topic, p) for p in self.mine])}
                if all(ends[p] == 0 or pos.get(p, -1) >= ends[p] for p in self.mine):
                    return out
            raise RuntimeError("could not read this relay's sink partitions to their end in 30 s")
        finally:
            c.close()

    def mark(self, positions: list[int]) -> None:
        if positions:
            self.pg.transaction(lambda c: c.execute(
                "UPDATE onceproof_outbox SET sent = true WHERE pos = ANY(%s) AND NOT sent", (positions,)))

    def recovered(self) -> None:
        done = self.published()
        self.mark(done)
        log(f"relay: recovered, {len(done)} outbox rows found published in partitions {self.mine}")

    def run(self) -> None:
        need_recovery = True
        while True:
            try:
                if self.producer is None:
                    self._producer()
                    need_recovery = True
                if need_recovery and self.recover:
                    self.recovered()
                need_recovery = False
                self.round()
            except (KafkaException, psycopg.Error, RuntimeError, ValueError) as e:
                log(f"relay: {one_line(e)}; fate unknown, recovering from the topic")
                need_recovery = True
                if self.transactional and self.producer is not None:
                    try:
                        self.producer.abort_transaction(10)
                    except KafkaException:
                        self.producer = None  # a new one: init_transactions settles the old one's fate
                time.sleep(0.3)

    def round(self) -> None:
        rows = self.pg.transaction(lambda c: c.execute(
            "SELECT pos, event_id, key, seq FROM onceproof_outbox WHERE NOT sent AND part %% %s = %s "
            "ORDER BY pos LIMIT %s", (self.cfg.replicas, self.cfg.replica, BATCH)).fetchall())
        if not rows:
            time.sleep(0.05)
            return
        if self.transactional:
            self.producer.begin_transaction()
        for pos, eid, key, seq in rows:
            value = json.dumps({"id": eid, "key": key, "seq": seq, "replica": self.cfg.replica, "opos": pos,
                                "relay": self.cfg.replica})
            part = self.mine[zlib.crc32(key.encode()) % len(self.mine)]
            self.producer.produce(self.topic, value.encode(), key.encode(), partition=part)
        if self.transactional:
            self.producer.commit_transaction(30)
        else:
            left = self.producer.flush(30)
            if left:
                raise RuntimeError(f"{left} messages not delivered in 30 s")
        if self.hold:
            time.sleep(self.hold / 1000)
        self.mark([r[0] for r in rows])
        log(f"relay: published and marked {len(rows)} (pos {rows[0][0]}..{rows[-1][0]})")


def start_relay(relay: Relay) -> None:
    threading.Thread(target=relay.run, name="relay", daemon=True).start()


def run(cfg: Config) -> None:
    start_relay(Relay(cfg))
    Service(cfg).run()


if __name__ == "__main__":
    main("outbox", "kafka", run, __doc__)
