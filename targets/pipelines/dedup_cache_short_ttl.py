"""dedup_cache_short_ttl: dedup_cache with the classic bug of a deduplication cache
(deliberately broken: a reference for `duplicate`).

Claim: exactly once only while no event is delivered again later than its claim's TTL; NOT
exactly once otherwise.

The bug: the claim `dedup:<id>` lives ONCEPROOF_DEDUP_TTL_MS = 200 ms by default, shorter than a
redelivery: positions are committed every second, so a replica killed and restarted replays
events claimed one or more seconds earlier; their claims have expired, and they are applied
again: `duplicate`. (The same happens with a long TTL when Redis' clock jumps forward, or when a
cache without persistence restarts and forgets the claims.)
"""
from __future__ import annotations

import os

from onceproof.targets.pipelines.common import Config, main
from onceproof.targets.pipelines.dedup_cache import run_with_ttl


def run(cfg: Config) -> None:
    run_with_ttl(cfg, int(os.environ.get("ONCEPROOF_DEDUP_TTL_MS") or 200))


if __name__ == "__main__":
    main("dedup_cache_short_ttl", "redis-stream", run, __doc__)
