"""checkpoint_atomic: a stateful per-key aggregator (count and sum of seq per key), Kafka ->
PostgreSQL, whose state is checkpointed ATOMICALLY with its input positions. Exactly once.

Claim: every event's effect row is written exactly once, and the state table
`onceproof_state(key, count, sum)` always equals the fold of the effects applied, whatever is
killed, paused or cut off.

Why it holds: each batch's effect rows, its state increments (an upsert per key adding the
batch's count and sum) and the new positions of its partitions commit in ONE PostgreSQL
transaction, fenced by the positions' compare-and-set (see kafka_to_postgres). A kill loses the
batch, its state and its positions together; the next owner starts from the stored positions
with the stored state (the snapshot IS the state: no in-memory copy can be ahead of it).

Plan: plans/checkpoint-correct.yaml (state checked with `checks.state`).
"""
from __future__ import annotations

from typing import Any

import psycopg

from onceproof.targets.pipelines.common import Config, create_table, main
from onceproof.targets.pipelines.kafka_to_postgres import Pipeline

STATE_DDL = """CREATE TABLE IF NOT EXISTS onceproof_state (
    key text PRIMARY KEY, count bigint NOT NULL, sum bigint NOT NULL)"""
STATE_QUERY = "SELECT key, count, sum FROM onceproof_state"


class Aggregator(Pipeline):
    """kafka_to_postgres plus the per-key state, upserted in each batch's transaction."""

    def setup(self) -> None:
        super().setup()
        create_table(self.pg, STATE_DDL)

    def write(self, conn: psycopg.Connection, events: list[dict[str, Any]]) -> None:
        super().write(conn, events)
        conn.execute(
            "INSERT INTO onceproof_state (key, count, sum) SELECT k, count(*), sum(s) "
            "FROM unnest(%s::text[], %s::bigint[]) AS u(k, s) GROUP BY k ORDER BY k "
            "ON CONFLICT (key) DO UPDATE SET count = onceproof_state.count + excluded.count, "
            "sum = onceproof_state.sum + excluded.sum",
            ([e["key"] for e in events], [e["seq"] for e in events]))


def run(cfg: Config) -> None:
    Aggregator(cfg).run()


if __name__ == "__main__":
    main("checkpoint_atomic", "postgres", run, __doc__)
