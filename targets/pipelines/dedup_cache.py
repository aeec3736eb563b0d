"""dedup_cache: Kafka topic -> Redis stream, exactly once through a DEDUPLICATION CACHE.

Claim: every event's effect (a stream entry id, key, seq, replica) is written exactly once,
whatever replica is killed or paused, and also when Redis itself is killed and restarted,
provided Redis persists every write (`persistence: aof-always`) and the claim's TTL
(ONCEPROOF_DEDUP_TTL_MS, default 600000 = 10 min) is longer than any redelivery.

Why it holds: delivery from Kafka is at least once (positions are committed to the group every
ONCEPROOF_COMMIT_MS, default 1000, after the effects; a kill replays up to that much). Each event
is applied by one Lua script, atomic in Redis: `SET dedup:<id> NX PX <ttl>` claims the id and,
only if the claim is new, `XADD` writes the effect. Claim and effect commit together or not at all,
so a replayed event finds its claim and is skipped. With AOF `always` a Redis restart keeps
both. (Claiming in the cache and writing the effect elsewhere would lose an event killed between
the two: the claim must be atomic with the effect.)

Broken twin: dedup_cache_short_ttl (the claim expires before the replay).
"""
from __future__ import annotations

import os
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from onceproof.targets.pipelines.common import (Config, batch, consumer_config, event, log, main,
                                                next_offsets, one_line, rewind, subscribe_logged)

CLAIM_AND_APPLY = """
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'key', ARGV[3], 'seq', ARGV[4], 'replica', ARGV[5])
  return 1
end
return 0
"""


def redis_client(url: str) -> Any:
    """A client with bounded timeouts and no hidden retries (a retry hides a fate unknown)."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=3, retry=Retry(NoBackoff(), 0),
                                decode_responses=True)


def run_with_ttl(cfg: Config, ttl_ms: int) -> None:
    """The loop: consume a batch, claim-and-apply each event, commit positions now and then."""
    if not cfg.redis_url:
        raise SystemExit("dedup_cache: ONCEPROOF_REDIS_URL is not set (add `redis:` to the plan's targets)")
    every = int(os.environ.get("ONCEPROOF_COMMIT_MS") or 1000) / 1000
    r = redis_client(cfg.redis_url)
    script = r.register_script(CLAIM_AND_APPLY)
    consumer = Consumer(consumer_config(cfg))
    subscribe_logged(consumer, cfg.source_topic)
    done: dict[int, int] = {}  # partition -> next offset, applied but not committed yet
    last = time.monotonic()
    log(f"claims live {ttl_ms} ms; positions committed every {every:.1f} s")
    while True:
        msgs = batch(consumer)
        if msgs:
            spans = next_offsets(msgs)
            events = [e for e in map(event, msgs) if e is not None]
            try:
                pipe = r.pipeline(transaction=False)
                for e in events:
                    script(keys=[f"onceproof-dedup:{cfg.run_id}:{e['id']}", cfg.sink_name],
                           args=[ttl_ms, e["id"], e["key"], e["seq"], cfg.replica], client=pipe)
                applied = sum(int(x) for x in pipe.execute()) if events else 0
            except Exception as e:  # noqa: BLE001 - redis errors: replay the batch (claims make it safe)
                log(f"batch of {len(events)}: {one_line(e)}; reading it again")
                rewind(consumer, cfg.source_topic, {p: first for p, (first, _) in spans.items()})
                time.sleep(0.2)
                continue
            for p, (_, end) in spans.items():
                done[p] = end
            log(f"batch of {len(events)}: {applied} applied, {len(events) - applied} already claimed")
        if done and time.monotonic() - last >= every:
            try:
                consumer.commit(offsets=[TopicPartition(cfg.source_topic, p, o) for p, o in done.items()],
                                asynchronous=False)
                log("committed " + ", ".join(f"p{p}@{o}" for p, o in sorted(done.items())))
            except KafkaException as e:
                log(f"offset commit failed (the events will be replayed, and skipped): {e}")
            done, last = {}, time.monotonic()


def run(cfg: Config) -> None:
    run_with_ttl(cfg, int(os.environ.get("ONCEPROOF_DEDUP_TTL_MS") or 600_000))


if __name__ == "__main__":
    main("dedup_cache", "redis-stream", run, __doc__)
