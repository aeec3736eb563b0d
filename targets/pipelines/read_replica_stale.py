"""read_replica_stale: read_replica with its classic bug, on purpose: reads are served from the
standby and the Redis cache WITHOUT waiting for the primary's LSN. Exactly once on the write side
(the effects are right); the READS are stale.

Bug: a `standby` read takes whatever the standby has replayed, so while the standby lags (a slow
replication link, a standby busy replaying) it returns a key's state from before writes that had
already committed, and been seen, on the primary: a stale read. A `cache` read answers any cached
entry (filled from the standby, kept ONCEPROOF_CACHE_TTL_MS, default 2000 ms) without asking how
recent it is: stale for as long as the entry lives, even with no lag at all.

Caught by the `reads` checker (checkers/reads.py) as `stale-read`, each shown as the smallest set
of operations that cannot be linearized. Plan: plans/read-replica-stale.yaml (exit 1).
"""
from __future__ import annotations

import os

from onceproof.targets.pipelines.common import Config, main
from onceproof.targets.pipelines.read_replica import CACHE, ROW, ReadReplica, Reads


class StaleReads(Reads):
    """Reads without the LSN wait (the bug)."""

    ttl_ms = int(os.environ.get("ONCEPROOF_CACHE_TTL_MS") or 2000)

    def read(self, key: str, path: str) -> int | None:
        if path == "primary":
            return self.one("primary", ROW, (key,))
        if path == "cache":
            hit = self.redis().get(CACHE + key)
            if hit is not None:
                return int(hit) if hit != "" else None
        value = self.one("standby", ROW, (key,))  # whatever the standby has replayed so far
        if path == "cache":
            self.redis().set(CACHE + key, "" if value is None else value, px=self.ttl_ms)
        return value


class StaleReadReplica(ReadReplica):
    reads_class = StaleReads


def run(cfg: Config) -> None:
    StaleReadReplica(cfg).run()


if __name__ == "__main__":
    main("read_replica_stale", "postgres", run, __doc__)
