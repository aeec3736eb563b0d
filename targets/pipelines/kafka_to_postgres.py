"""kafka_to_postgres: Kafka topic -> PostgreSQL effects table, EXACTLY ONCE.

Claim: every event's effect row is written exactly once, whatever is killed, paused, cut off or
slowed down.

Why it holds:
- The effect rows of a batch and, for each partition in it, the position reached
  (`onceproof_offsets.next_offset`) are written in ONE PostgreSQL transaction: they commit or
  vanish together. Kafka's own committed offsets are never used (enable.auto.commit=false).
- On assignment a replica reads the stored positions and starts each partition there.
- Fencing: the position update is a compare-and-set
  (`UPDATE ... SET next_offset = <new> WHERE ... AND next_offset = <where this replica stands>`).
  A zombie (paused past its session timeout while another replica took over and moved on) finds
  the row changed, updates 0 rows and rolls back its whole batch, then re-reads the positions.
  Positions only grow, so the compare-and-set has no ABA problem. Concurrent updates of one row
  serialize on its lock and the loser re-checks the condition (READ COMMITTED), so it updates 0.
- After any database error the commit's fate is unknown, so every position is re-read.
- A replica paused inside a transaction holds a row lock; the server's
  idle_in_transaction_session_timeout ends its session within seconds (see common.PG_OPTIONS).

Test hook: ONCEPROOF_HOLD_MS=<ms> makes a replica log "holding" and wait that long between reading
a batch and applying it, so that a test can stop it exactly there and make it a zombie.
"""
from __future__ import annotations

import os
import time

import psycopg
from confluent_kafka import Consumer, TopicPartition

from onceproof.targets.pipelines.common import (Config, Postgres, batch, consumer_config, create_table, event,
                                      insert_effects, log, main, one_line)

OFFSETS_DDL = """CREATE TABLE IF NOT EXISTS onceproof_offsets (
    grp text NOT NULL, topic text NOT NULL, partition int NOT NULL, next_offset bigint NOT NULL,
    PRIMARY KEY (grp, topic, partition))"""


class Fenced(Exception):
    """The stored position is not where this replica thought: someone else applied it."""


class Pipeline:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topic = cfg.source_topic
        self.pg = Postgres(cfg.postgres_dsn)
        self.position: dict[int, int] = {}  # assigned partition -> next offset to apply
        self.stale: set[int] = set()  # assigned partitions whose position must be re-read
        self.consumer = Consumer(consumer_config(cfg))
        self.hold = int(os.environ.get("ONCEPROOF_HOLD_MS") or 0)

    # --- positions --------------------------------------------------------------------------
    def load(self, partitions: list[int]) -> dict[int, int]:
        """The stored positions of these partitions (a new partition starts at 0)."""
        key = (self.cfg.group, self.topic)

        def go(conn: psycopg.Connection) -> dict[int, int]:
            conn.execute("INSERT INTO onceproof_offsets SELECT %s, %s, p, 0 FROM unnest(%s::int[]) AS p "
                         "ON CONFLICT DO NOTHING", (*key, partitions))
            rows = conn.execute("SELECT partition, next_offset FROM onceproof_offsets "
                                "WHERE grp = %s AND topic = %s AND partition = ANY(%s)",
                                (*key, partitions)).fetchall()
            return {p: off for p, off in rows}
        return self.pg.retry("load positions", go)

    def on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        stored = self.load([tp.partition for tp in parts])
        for tp in parts:
            tp.offset = stored[tp.partition]
        consumer.assign(parts)
        self.position, self.stale = dict(stored), set()
        log(f"assigned {self.topic} at stored positions {dict(sorted(stored.items()))}")

    def on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        consumer.unassign()
        self.position, self.stale = {}, set()
        log(f"revoked {sorted(tp.partition for tp in parts)}")

    def reseek(self) -> None:
        stored = self.load(sorted(self.stale))
        for p in sorted(self.stale):
            try:
                self.consumer.seek(TopicPartition(self.topic, p, stored[p]))
            except Exception as e:  # noqa: BLE001 - keep it stale, try again next round
                log(f"seek {self.topic}[{p}] to {stored[p]}: {e}")
                time.sleep(0.1)
                continue
            self.position[p] = stored[p]
            self.stale.discard(p)
        log(f"re-read positions {dict(sorted(stored.items()))}")

    # --- one batch --------------------------------------------------------------------------
    def apply(self, msgs: list) -> None:
        ranges: dict[int, tuple[int, int]] = {}  # partition -> (expected position, new position)
        events = []
        for m in msgs:
            p, off = m.partition(), m.offset()
            expected, new = ranges.get(p, (self.position.get(p), self.position.get(p)))
            if expected is None or new is None or p in self.stale or off < new:
                continue  # not ours (any more), or already applied
            ranges[p] = (expected, off + 1)
            ev = event(m)
            if ev is not None:
                ev["partition"], ev["offset"] = p, off  # for subclasses' write(); insert_effects ignores them
                events.append(ev)
        if not ranges:
            return
        if self.hold:
            log(f"holding a batch of {len(events)} for {self.hold} ms")
            time.sleep(self.hold / 1000)

        def go(conn: psycopg.Connection) -> None:
            self.advance(conn, ranges)
            if events:
                self.write(conn, events)

        try:
            self.pg.transaction(go)
        except Fenced as e:
            log(f"fenced: {e}; batch of {len(events)} rolled back")
            self.stale = set(self.position)
            return
        except psycopg.Error as e:
            log(f"batch of {len(events)} not applied (fate unknown, re-reading positions): {one_line(e)}")
            self.stale = set(self.position)
            time.sleep(0.2)
            return
        for p, (_, new) in ranges.items():
            self.position[p] = new
        log(f"applied {len(events)}: " + ", ".join(f"p{p} {a}->{b}" for p, (a, b) in sorted(ranges.items())))

    def advance(self, conn: psycopg.Connection, ranges: dict[int, tuple[int, int]]) -> None:
        """Move the stored positions from `expected` to `new` (partition -> (expected, new)) in
        the batch's transaction; raise Fenced when one is not where this replica stands.
        Subclasses (targets/pipelines/rebalance_*.py) fence differently."""
        key = (self.cfg.group, self.topic)
        for p, (expected, new) in sorted(ranges.items()):  # lock rows in one order: no deadlock
            cur = conn.execute("UPDATE onceproof_offsets SET next_offset = %s WHERE grp = %s "
                               "AND topic = %s AND partition = %s AND next_offset = %s",
                               (new, *key, p, expected))
            if cur.rowcount != 1:
                raise Fenced(f"partition {p} is no longer at {expected}")

    def write(self, conn: psycopg.Connection, events: list[dict]) -> None:
        """Apply a batch's events (dicts id, key, seq, partition, offset) in the batch's
        transaction. Subclasses (outbox, checkpoint) write more, or elsewhere."""
        insert_effects(conn, self.cfg.sink_name, events, self.cfg.replica)

    def setup(self) -> None:
        """Tables the pipeline needs, created before it subscribes."""
        create_table(self.pg, OFFSETS_DDL)

    def idle(self) -> None:
        """Called once per loop round (subclasses' periodic work)."""

    def run(self) -> None:
        self.setup()
        self.consumer.subscribe([self.topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_revoke)
        while True:
            if self.stale:
                self.reseek()
            msgs = batch(self.consumer)
            if msgs:
                self.apply(msgs)
            self.idle()


def run(cfg: Config) -> None:
    Pipeline(cfg).run()


if __name__ == "__main__":
    main("kafka_to_postgres", "postgres", run, __doc__)
