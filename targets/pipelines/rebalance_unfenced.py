"""rebalance_unfenced: Kafka -> PostgreSQL with effects and positions in one transaction but NO
fencing (deliberately broken: a reference for the zombie of a consumer-group rebalance).

Claim: exactly once as long as no replica outlives its session; NOT exactly once otherwise.

The bug: the positions are overwritten unconditionally (`UPDATE ... SET next_offset = <new>`),
with no check of who owns the partition now. A replica paused (GC pause, SIGSTOP, a stuck VM)
past its session timeout loses its partitions; the new owner reads the stored positions and
applies the events again from there; when the zombie wakes up it still holds the batch it read
before the pause and commits it too: `duplicate`.

Test hook: ONCEPROOF_HOLD_MS (see kafka_to_postgres) aims a pause between reading and applying.
Correct twin: rebalance_epoch.
"""
from __future__ import annotations

import psycopg

from onceproof.targets.pipelines.common import Config, main
from onceproof.targets.pipelines.kafka_to_postgres import Pipeline


class Unfenced(Pipeline):
    def advance(self, conn: psycopg.Connection, ranges: dict[int, tuple[int, int]]) -> None:
        key = (self.cfg.group, self.topic)
        for p, (_, new) in sorted(ranges.items()):  # BUG: no check of the owner (no epoch, no compare-and-set)
            conn.execute("UPDATE onceproof_offsets SET next_offset = %s WHERE grp = %s AND topic = %s "
                         "AND partition = %s", (new, *key, p))


def run(cfg: Config) -> None:
    Unfenced(cfg).run()


if __name__ == "__main__":
    main("rebalance_unfenced", "postgres", run, __doc__)
