"""commit_before_process: Kafka topic -> PostgreSQL effects table, AT MOST ONCE (deliberately not
exactly once: a reference for a checker that must find lost events).

Claim: no event is applied twice; events may be lost.

Why: each batch's offsets are committed to Kafka (synchronously) BEFORE its rows are written. A
replica killed between the commit and the write has moved the group past events it never applied,
and nobody reads them again: lost. A write that fails is not retried, for the same reason (its
offsets are already committed). If the offset commit itself fails, the batch is neither written
nor skipped: the consumer goes back to its start.

The rows go in one transaction (INSERT, then COMMIT: two round trips), as most pipelines write a
batch. A kill anywhere before the COMMIT leaves the server to roll the batch back, so a slow
database (latency on its proxy) widens the window in which a kill loses a batch. (Written as one
autocommit statement, the window would be the microseconds between the offset commit and the
statement leaving the socket: a proxy that already holds the bytes delivers them after the
client died.)
"""
from __future__ import annotations

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from onceproof.targets.pipelines.common import (Config, Postgres, batch, consumer_config, event,
                                                insert_effects, log, main, next_offsets, one_line, rewind,
                                                subscribe_logged)


def run(cfg: Config) -> None:
    pg = Postgres(cfg.postgres_dsn)
    consumer = Consumer(consumer_config(cfg))
    subscribe_logged(consumer, cfg.source_topic)
    while True:
        msgs = batch(consumer)
        if not msgs:
            continue
        spans = next_offsets(msgs)
        try:
            consumer.commit(offsets=[TopicPartition(cfg.source_topic, p, end) for p, (_, end) in spans.items()],
                            asynchronous=False)
        except KafkaException as e:
            log(f"offset commit failed, reading the batch again: {e}")
            rewind(consumer, cfg.source_topic, {p: first for p, (first, _) in spans.items()})
            continue
        events = [e for e in map(event, msgs) if e is not None]
        try:
            pg.transaction(lambda conn: insert_effects(conn, cfg.sink_name, events, cfg.replica))
        except psycopg.Error as e:
            log(f"committed, then the write of {len(events)} failed (lost): {one_line(e)}")
            continue
        log("committed " + ", ".join(f"p{p}@{b}" for p, (_, b) in sorted(spans.items()))
            + f", then applied {len(events)}")


if __name__ == "__main__":
    main("commit_before_process", "postgres", run, __doc__)
