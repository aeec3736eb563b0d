"""at_least_once: Kafka topic -> PostgreSQL effects table, AT LEAST ONCE (deliberately not
exactly once: a reference for a checker that must find duplicates).

Claim: no event is lost; events may be applied more than once.

Why: each batch's rows are written (autocommit) and only afterwards are its offsets committed to
Kafka (synchronously). A replica killed between the two, or whose offset commit fails (rebalance,
network), leaves the group's offsets behind rows already written, and the next owner of the
partition applies the batch again: duplicates. A failed write is retried from the batch's start,
so nothing is skipped.
"""
from __future__ import annotations

import time

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
        events = [e for e in map(event, msgs) if e is not None]
        try:
            pg.transaction(lambda conn: insert_effects(conn, cfg.sink_name, events, cfg.replica),
                           autocommit=True)
        except psycopg.Error as e:
            log(f"write of {len(events)} failed, reading the batch again: {one_line(e)}")
            rewind(consumer, cfg.source_topic, {p: first for p, (first, _) in spans.items()})
            time.sleep(0.2)
            continue
        try:
            consumer.commit(offsets=[TopicPartition(cfg.source_topic, p, end) for p, (_, end) in spans.items()],
                            asynchronous=False)
        except KafkaException as e:
            log(f"applied {len(events)}, offset commit failed (they may be applied again): {e}")
            continue
        log(f"applied {len(events)}, then committed " + ", ".join(f"p{p}@{b}" for p, (_, b) in sorted(spans.items())))


if __name__ == "__main__":
    main("at_least_once", "postgres", run, __doc__)
