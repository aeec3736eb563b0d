"""kafka_txn_copy: Kafka topic -> Kafka topic, EXACTLY ONCE with Kafka transactions
(read-process-write, KIP-98 + KIP-447).

Claim: read with isolation.level=read_committed, the sink topic holds every event's effect
`{"id", "key", "seq", "replica"}` exactly once.

Why it holds:
- One transaction per batch holds both the effect messages and the group's new offsets
  (send_offsets_to_transaction with the consumer's group metadata): they commit or abort together.
- The consumer reads with read_committed, and its committed offsets are fetched "stable" (it waits
  for pending transactional offsets), so a new owner starts right after the last committed batch.
- A restarted replica reuses its transactional.id (run id + replica): init_transactions fences the
  old incarnation and aborts its open transaction.
- A zombie (paused past its session timeout) carries a stale group generation, so the coordinator
  rejects its offsets (abortable), or its transaction outlives transaction.timeout.ms and is aborted
  by the coordinator, which bumps the epoch (fenced: fatal). Either way the batch is aborted.
- After an abort (or a fatal error and a new producer) the consumer seeks back to the group's
  committed offsets, so the aborted batch is read again and nothing is skipped.

Test hook: ONCEPROOF_HOLD_MS=<ms> makes a replica log "holding" and wait that long inside each
transaction (effects produced, offsets not yet sent), so a test can stop it there as a zombie.
"""
from __future__ import annotations

import json
import os
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from onceproof.targets.pipelines.common import Config, error_cb, batch, consumer_config, event, log, main, next_offsets


class Copier:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.topic = cfg.source_topic
        self.consumer = self.new_consumer()
        self.prod: Producer | None = None
        self.hold = int(os.environ.get("ONCEPROOF_HOLD_MS") or 0)

    def new_consumer(self) -> Consumer:
        c = Consumer(consumer_config(self.cfg, **{"isolation.level": "read_committed"}))
        c.subscribe([self.topic],
                    on_assign=lambda c, ps: log(f"assigned {sorted(tp.partition for tp in ps)}"),
                    on_revoke=lambda c, ps: log(f"revoked {sorted(tp.partition for tp in ps)}"))
        return c

    def producer(self) -> Producer:
        """The transactional producer, created and initialized (retrying) when there is none."""
        while self.prod is None:
            p = Producer({"bootstrap.servers": self.cfg.bootstrap,
                          "transactional.id": f"onceproof-{self.cfg.run_id}-{self.cfg.replica}",
                          "transaction.timeout.ms": 10000, "linger.ms": 5, "socket.timeout.ms": 10000,
                          "reconnect.backoff.max.ms": 1000, "log.connection.close": False,
                          "error_cb": error_cb})
            while True:
                try:
                    p.init_transactions(30)
                    self.prod = p
                    break
                except KafkaException as e:
                    log(f"init_transactions: {e.args[0]}")
                    time.sleep(0.5)
                    if not e.args[0].retriable():
                        break  # a new producer
        return self.prod

    def copy(self, msgs: list) -> None:
        spans = next_offsets(msgs)
        p = self.producer()
        count = 0
        try:
            p.begin_transaction()
            for m in msgs:
                ev = event(m)
                if ev is None:
                    continue
                value = json.dumps({**ev, "replica": self.cfg.replica}).encode()
                while True:
                    try:
                        p.produce(self.cfg.sink_name, value=value, key=ev["key"].encode())
                        break
                    except BufferError:
                        p.poll(0.05)
                count += 1
            if self.hold:
                log(f"holding a transaction of {count} for {self.hold} ms")
                time.sleep(self.hold / 1000)
            p.send_offsets_to_transaction([TopicPartition(self.topic, part, end) for part, (_, end) in spans.items()],
                                          self.consumer.consumer_group_metadata(), 10)
            while True:
                try:
                    p.commit_transaction(10)
                    break
                except KafkaException as e:
                    if not e.args[0].retriable():
                        raise
                    log(f"commit_transaction (retrying): {e.args[0]}")
        except KafkaException as e:
            self.recover(e.args[0], sorted(spans))
            return
        log(f"committed {count}: " + ", ".join(f"p{q}@{b}" for q, (_, b) in sorted(spans.items())))

    def recover(self, err: KafkaError, partitions: list[int]) -> None:
        log(f"transaction failed ({err}); {'new producer' if err.fatal() else 'aborting'}, rewinding")
        if not err.fatal():
            try:
                self.producer().abort_transaction(10)
            except KafkaException as e:
                log(f"abort_transaction: {e.args[0]}; new producer")
                self.prod = None
        else:
            self.prod = None
        self.producer()  # a new producer's init_transactions settles the old transaction first
        self.rewind(partitions)

    def rewind(self, partitions: list[int]) -> None:
        """Seek the batch's partitions (those still ours) back to the group's committed offsets."""
        owned = [TopicPartition(self.topic, p) for p in partitions
                 if p in {tp.partition for tp in self.consumer.assignment()}]
        if not owned:
            return
        while True:
            try:
                committed = self.consumer.committed(owned, timeout=10)
                break
            except KafkaException as e:
                log(f"committed offsets: {e.args[0]}")
                time.sleep(0.5)
        for tp in committed:
            target = TopicPartition(self.topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
            try:
                self.consumer.seek(target)
            except KafkaException as e:
                # positions can no longer be trusted: start over from the committed offsets
                log(f"seek {self.topic}[{tp.partition}]: {e.args[0]}; new consumer")
                self.consumer.close()
                self.consumer = self.new_consumer()
                return

    def run(self) -> None:
        self.producer()
        while True:
            msgs = batch(self.consumer)
            if msgs:
                self.copy(msgs)


def run(cfg: Config) -> None:
    Copier(cfg).run()


if __name__ == "__main__":
    main("kafka_txn_copy", "kafka", run, __doc__)
