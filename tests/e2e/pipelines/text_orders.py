"""A pipeline with its own message shape and its own table: order lines arrive as text
`customer,n` with the order id in the `onceproof-id` header (the plan's `workload.format`), and
are upserted into `shipments(order_id PRIMARY KEY, customer, n, applied_count)`; a re-application
bumps applied_count. Exactly once: the upserts of a batch and the next offset of each partition
are one PostgreSQL transaction, and a (re)start seeks to the stored offsets. One replica."""
import os

import psycopg
from confluent_kafka import Consumer, TopicPartition

topic = os.environ["ONCEPROOF_SOURCE"].split(":", 1)[1]
conn = psycopg.connect(os.environ["ONCEPROOF_POSTGRES_DSN"])
conn.execute("CREATE TABLE IF NOT EXISTS shipments (order_id text PRIMARY KEY, customer text, n bigint, "
             "applied_count int NOT NULL DEFAULT 1)")
conn.execute("CREATE TABLE IF NOT EXISTS shipment_offsets (partition int PRIMARY KEY, next bigint NOT NULL)")
conn.commit()
consumer = Consumer({"bootstrap.servers": os.environ["ONCEPROOF_KAFKA_BOOTSTRAP"], "group.id": "text-orders",
                     "enable.auto.commit": False})
parts = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
stored = dict(conn.execute("SELECT partition, next FROM shipment_offsets").fetchall())
conn.commit()
consumer.assign([TopicPartition(topic, p, stored.get(p, 0)) for p in parts])
while True:
    msgs = [m for m in consumer.consume(500, timeout=0.5) if m.error() is None]
    if not msgs:
        continue
    rows, nxt = [], {}
    for m in msgs:
        customer, n = m.value().decode().split(",")
        order_id = dict(m.headers() or [])["onceproof-id"].decode()
        rows.append((order_id, customer, int(n)))
        nxt[m.partition()] = m.offset() + 1
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO shipments (order_id, customer, n) VALUES (%s, %s, %s) ON CONFLICT (order_id) "
                        "DO UPDATE SET applied_count = shipments.applied_count + 1", rows)
        cur.executemany("INSERT INTO shipment_offsets VALUES (%s, %s) ON CONFLICT (partition) DO UPDATE "
                        "SET next = excluded.next", sorted(nxt.items()))
    conn.commit()
    # the group's committed offsets only tell onceproof how far the pipeline got (its progress)
    consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in nxt.items()], asynchronous=True)
