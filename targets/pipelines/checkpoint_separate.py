"""checkpoint_separate: the per-key aggregator of checkpoint_atomic with the classic snapshot
bug (deliberately broken: a reference for `state-mismatch`).

Claim: effect rows exactly once (they commit with the positions, as in kafka_to_postgres), but
the state table `onceproof_state(key, count, sum)` does NOT match the events applied after a
replica is killed.

The bug: the state lives in memory and is snapshotted to `onceproof_state` every
ONCEPROOF_SNAPSHOT_MS (default 1000) in its OWN transaction, separately from the positions.
A kill between a batch's commit (positions moved on) and the next snapshot loses that batch's
increments: the restarted replica loads the older snapshot, starts from the newer positions,
and never counts those events again. The checker folds the effects and finds count/sum too low:
`state-mismatch`.
"""
from __future__ import annotations

import os
import time
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from onceproof.targets.pipelines.checkpoint_atomic import STATE_DDL
from onceproof.targets.pipelines.common import Config, create_table, log, main, one_line
from onceproof.targets.pipelines.kafka_to_postgres import Pipeline


class SnapshottingAggregator(Pipeline):
    def __init__(self, cfg: Config) -> None:
        super().__init__(cfg)
        self.state: dict[str, list[int]] = {}  # key -> [count, sum]
        self.dirty: set[str] = set()
        self.every = int(os.environ.get("ONCEPROOF_SNAPSHOT_MS") or 1000) / 1000
        self.last = time.monotonic()

    def setup(self) -> None:
        super().setup()
        create_table(self.pg, STATE_DDL)

    def on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        super().on_assign(consumer, parts)
        rows = self.pg.retry("load snapshot", lambda c: c.execute(
            "SELECT key, count, sum FROM onceproof_state").fetchall())
        self.state = {k: [c, s] for k, c, s in rows}
        self.dirty = set()
        log(f"loaded the state snapshot of {len(rows)} keys")

    def write(self, conn: psycopg.Connection, events: list[dict[str, Any]]) -> None:
        super().write(conn, events)
        # BUG: the increments stay in memory (and would be counted even if this transaction
        # rolls back); they reach the database only with the next separate snapshot
        for e in events:
            st = self.state.setdefault(e["key"], [0, 0])
            st[0] += 1
            st[1] += e["seq"]
            self.dirty.add(e["key"])

    def idle(self) -> None:
        if not self.dirty or time.monotonic() - self.last < self.every:
            return
        keys = sorted(self.dirty)
        values = [self.state[k] for k in keys]
        try:
            self.pg.transaction(lambda c: c.execute(
                "INSERT INTO onceproof_state (key, count, sum) SELECT * FROM unnest(%s::text[], %s::bigint[], "
                "%s::bigint[]) ON CONFLICT (key) DO UPDATE SET count = excluded.count, sum = excluded.sum",
                (keys, [v[0] for v in values], [v[1] for v in values])))
        except psycopg.Error as e:
            log(f"snapshot failed: {one_line(e)}")
            return
        self.dirty = set()
        self.last = time.monotonic()
        log(f"snapshot of {len(keys)} keys")


def run(cfg: Config) -> None:
    SnapshottingAggregator(cfg).run()


if __name__ == "__main__":
    main("checkpoint_separate", "postgres", run, __doc__)
