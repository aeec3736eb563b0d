"""rebalance_epoch: Kafka -> PostgreSQL where replicas FENCE BY EPOCH on every write, so a
consumer-group rebalance cannot let a zombie apply a batch twice. Exactly once.

Claim: every event's effect row is written exactly once, also when a replica is paused past its
session timeout, its partitions move to another replica, and it then wakes up holding a batch
it read before (the zombie of a rebalance).

Why it holds: `onceproof_epochs(grp, topic, partition, epoch)` holds one owner epoch per
partition. On every assignment the replica bumps the epoch of each partition it receives and
remembers the values. Every batch's transaction first locks those rows (`SELECT ... FOR UPDATE`)
and goes on only if each epoch is still its own; the effect rows and the new positions commit
with that check. A zombie finds a newer epoch (the new owner bumped it on assignment), rolls
back, and re-reads. This is the generation/epoch fencing of Kafka's own group protocol and of
transactional ids (KIP-98), applied to an external store.

Test hook: ONCEPROOF_HOLD_MS (see kafka_to_postgres) aims a pause between reading and applying.
Broken twin: rebalance_unfenced.
"""
from __future__ import annotations

import psycopg
from confluent_kafka import Consumer, TopicPartition

from onceproof.targets.pipelines.common import Config, create_table, log, main
from onceproof.targets.pipelines.kafka_to_postgres import Fenced, Pipeline

EPOCHS_DDL = """CREATE TABLE IF NOT EXISTS onceproof_epochs (
    grp text NOT NULL, topic text NOT NULL, partition int NOT NULL, epoch bigint NOT NULL,
    PRIMARY KEY (grp, topic, partition))"""


class EpochFenced(Pipeline):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.epochs: dict[int, int] = {}

    def setup(self) -> None:
        super().setup()
        create_table(self.pg, EPOCHS_DDL)

    def on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        key = (self.cfg.group, self.topic)
        partitions = sorted(tp.partition for tp in parts)

        def bump(conn: psycopg.Connection) -> dict[int, int]:
            conn.execute("INSERT INTO onceproof_epochs SELECT %s, %s, p, 0 FROM unnest(%s::int[]) AS p "
                         "ON CONFLICT DO NOTHING", (*key, partitions))
            rows = conn.execute("UPDATE onceproof_epochs SET epoch = epoch + 1 WHERE grp = %s AND topic = %s "
                                "AND partition = ANY(%s) RETURNING partition, epoch", (*key, partitions)).fetchall()
            return {p: e for p, e in rows}
        # bumped BEFORE the positions are read: whatever a zombie commits before the bump is in them
        self.epochs = self.pg.retry("bump epochs", bump)
        log(f"epochs {dict(sorted(self.epochs.items()))}")
        super().on_assign(consumer, parts)

    def advance(self, conn: psycopg.Connection, ranges: dict[int, tuple[int, int]]) -> None:
        key = (self.cfg.group, self.topic)
        partitions = sorted(ranges)
        rows = conn.execute("SELECT partition, epoch FROM onceproof_epochs WHERE grp = %s AND topic = %s "
                            "AND partition = ANY(%s) ORDER BY partition FOR UPDATE", (*key, partitions)).fetchall()
        for p, epoch in rows:
            if self.epochs.get(p) != epoch:
                raise Fenced(f"partition {p} is at epoch {epoch}, this replica holds {self.epochs.get(p)}")
        for p, (_, new) in sorted(ranges.items()):
            conn.execute("UPDATE onceproof_offsets SET next_offset = %s WHERE grp = %s AND topic = %s "
                         "AND partition = %s", (new, *key, p))


def run(cfg: Config) -> None:
    EpochFenced(cfg).run()


if __name__ == "__main__":
    main("rebalance_epoch", "postgres", run, __doc__)
