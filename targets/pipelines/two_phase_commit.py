"""two_phase_commit: Kafka -> PostgreSQL AND Redis, each effect in both stores or in neither,
by a TWO-PHASE COMMIT with recovery of in-doubt transactions. Exactly once in each store.

Claim: every event's effect is a row of the PostgreSQL table (the workload's sink) and a member
of the Redis set (ONCEPROOF_ALSO_SINKS, `redis-set:<name>`), exactly once in each, whatever
replica is killed; never in one store without the other once the run has settled.

How (Gray & Reuter's 2PC with Redis as the last resource, whose commit is the decision):
1. PostgreSQL: the batch's effect rows in a transaction, then `PREPARE TRANSACTION <gid>`
   (durable, invisible, can still be committed or rolled back by anyone later).
2. Redis (AOF always), one Lua script, atomic: compare-and-set of the batch's source positions
   (kept in Redis, fencing a zombie as in kafka_to_postgres), SADD of the ids, and the decision
   record `decision:<gid>`. This is the commit point. (The positions are also committed to the
   consumer group afterwards, for monitoring only: that is the progress the harness watches.)
3. PostgreSQL: `COMMIT PREPARED <gid>` (or `ROLLBACK PREPARED` when step 2 was fenced).
Recovery: on every start and after any error whose outcome is unknown, each prepared
transaction of this replica (gid prefix) is committed if Redis holds its decision, else marked
aborted in Redis (the decision script refuses an aborted gid, so a late decision cannot commit
after the check) and rolled back. A coordinator killed between 2 and 3 thus commits its PostgreSQL half when it restarts.

Test hook: ONCEPROOF_2PC_HOLD_MS waits between phases 2 and 3 (aims a kill there).
Broken twin: two_phase_commit_no_recovery.
"""
from __future__ import annotations

import os
import time
import uuid
from typing import Any

import psycopg
from confluent_kafka import Consumer, TopicPartition

from onceproof.targets.pipelines.common import (BadConfig, Config, Postgres, batch, consumer_config, create_table,
                                                event, insert_effects, log, main, one_line)
from onceproof.targets.pipelines.dedup_cache import redis_client

EFFECTS_DDL = ("CREATE TABLE IF NOT EXISTS {} (event_id text, key text, seq bigint, replica int, "
               "applied_at timestamptz DEFAULT now(), pos bigserial)")
# KEYS: positions hash, effects set, decision key, abort key; ARGV: n partitions, then
# (partition, expected, new) n times, then the ids. Returns 1 when applied, 0 when a position is
# not where expected or recovery already aborted this transaction.
DECIDE = """
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[2 + 3 * i]) or '0'
  if cur ~= ARGV[3 + 3 * i] then return 0 end
end
for i = 0, n - 1 do redis.call('HSET', KEYS[1], ARGV[2 + 3 * i], ARGV[4 + 3 * i]) end
for i = 2 + 3 * n, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[3], '1')
return 1
"""


class Coordinator:
    def __init__(self, cfg: Config, recover: bool = True) -> None:
        others = [s for s in os.environ.get("ONCEPROOF_ALSO_SINKS", "").split(",") if s.startswith("redis-set:")]
        if not others or not cfg.redis_url:
            raise BadConfig("two_phase_commit needs ONCEPROOF_ALSO_SINKS=redis-set:<name> (workload.also-sinks) "
                            "and a redis target")
        self.cfg, self.recover = cfg, recover
        self.set_name = others[0].split(":", 1)[1]
        self.pg = Postgres(cfg.postgres_dsn)
        self.redis = redis_client(cfg.redis_url)
        self.decide = self.redis.register_script(DECIDE)
        self.positions_key = f"onceproof-2pc:{cfg.run_id}:positions"
        self.prefix = f"op-{cfg.run_id}-{cfg.replica}-"
        self.consumer = Consumer(consumer_config(cfg))
        self.position: dict[int, int] = {}
        self.stale = False
        self.hold = int(os.environ.get("ONCEPROOF_2PC_HOLD_MS") or 0) / 1000

    def decision(self, gid: str) -> str:
        return f"onceproof-2pc:{self.cfg.run_id}:decision:{gid}"

    def aborted(self, gid: str) -> str:
        return f"onceproof-2pc:{self.cfg.run_id}:abort:{gid}"

    def decided(self, gid: str) -> bool:
        """Whether `gid` committed in Redis. When not, it is marked aborted first, so that a
        decision still on its way (a script sent before a timeout) can no longer commit."""
        if self.redis.exists(self.decision(gid)):
            return True
        self.redis.set(self.aborted(gid), "1")
        return bool(self.redis.exists(self.decision(gid)))

    # --- positions (in Redis, with the decisions) ------------------------------------------
    def stored(self, partitions: list[int]) -> dict[int, int]:
        while True:
            try:
                values = self.redis.hmget(self.positions_key, [str(p) for p in partitions])
                return {p: int(v or 0) for p, v in zip(partitions, values)}
            except Exception as e:  # noqa: BLE001 - redis unreachable: wait
                log(f"read positions: {one_line(e)}")
                time.sleep(0.3)

    def on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        stored = self.stored([tp.partition for tp in parts])
        for tp in parts:
            tp.offset = stored[tp.partition]
        consumer.assign(parts)
        self.position, self.stale = dict(stored), False
        log(f"assigned at stored positions {dict(sorted(stored.items()))}")

    def on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        consumer.unassign()
        self.position = {}

    def reseek(self) -> None:
        stored = self.stored(sorted(self.position))
        for p, off in stored.items():
            self.consumer.seek(TopicPartition(self.cfg.source_topic, p, off))
        self.position, self.stale = stored, False

    # --- recovery of in-doubt transactions --------------------------------------------------
    def resolve(self) -> None:
        """Commit each prepared transaction of this replica whose decision Redis holds, roll back
        the others (retried until it worked)."""
        def go(conn: psycopg.Connection) -> tuple[int, int]:
            gids = [r[0] for r in conn.execute("SELECT gid FROM pg_prepared_xacts WHERE gid LIKE %s",
                                               (self.prefix + "%",)).fetchall()]
            done = [0, 0]
            for gid in gids:
                commit = self.decided(gid)
                conn.execute(f"{'COMMIT' if commit else 'ROLLBACK'} PREPARED '{gid}'")
                done[0 if commit else 1] += 1
            return done[0], done[1]
        while True:
            try:
                committed, rolled_back = self.pg.transaction(go, autocommit=True)
                break
            except Exception as e:  # noqa: BLE001 - postgres or redis: try again
                log(f"recovery: {one_line(e)}")
                self.pg.close()
                time.sleep(0.3)
        if committed or rolled_back:
            log(f"recovery: {committed} in-doubt transactions committed, {rolled_back} rolled back")

    # --- one batch --------------------------------------------------------------------------
    def apply(self, msgs: list[Any]) -> None:
        ranges: dict[int, tuple[int, int]] = {}
        events = []
        for m in msgs:
            p, off = m.partition(), m.offset()
            expected, new = ranges.get(p, (self.position.get(p), self.position.get(p)))
            if expected is None or new is None or off < new:
                continue
            ranges[p] = (expected, off + 1)
            ev = event(m)
            if ev is not None:
                events.append(ev)
        if not ranges:
            return
        gid = self.prefix + uuid.uuid4().hex[:12]
        conn = self.pg.connect()
        try:  # phase 1
            conn.autocommit = False
            conn.tpc_begin(gid)
            if events:
                insert_effects(conn, self.cfg.sink_name, events, self.cfg.replica)
            conn.tpc_prepare()
        except psycopg.Error as e:
            log(f"prepare of {len(events)} failed: {one_line(e)}")
            self.pg.close()
            self.after_error()
            return
        args: list[Any] = [len(ranges)]
        for p, (expected, new) in sorted(ranges.items()):
            args += [p, expected, new]
        args += [e["id"] for e in events]
        try:  # phase 2: the decision
            ok = self.decide(keys=[self.positions_key, self.set_name, self.decision(gid), self.aborted(gid)],
                             args=args)
        except Exception as e:  # noqa: BLE001 - fate unknown: recovery reads the decision
            log(f"decision of {len(events)}: {one_line(e)}; fate unknown")
            self.pg.close()
            self.after_error()
            return
        if self.hold:
            time.sleep(self.hold)
        try:  # phase 3
            if ok:
                conn.tpc_commit()
            else:
                conn.tpc_rollback()
        except psycopg.Error as e:
            log(f"phase 3 of {gid}: {one_line(e)}")
            self.pg.close()
            self.after_error()
            return
        if not ok:
            log(f"fenced: batch of {len(events)} rolled back")
            self.stale = True
            return
        for p, (_, new) in ranges.items():
            self.position[p] = new
        # for monitoring only (the harness's progress): the positions that count are in Redis
        try:
            self.consumer.commit(offsets=[TopicPartition(self.cfg.source_topic, p, new)
                                          for p, (_, new) in ranges.items()], asynchronous=True)
        except Exception as e:  # noqa: BLE001 - e.g. partitions revoked meanwhile
            log(f"offset commit (monitoring): {e}")
        log(f"committed {len(events)} in both stores: " + ", ".join(
            f"p{p} {a}->{b}" for p, (a, b) in sorted(ranges.items())))

    def after_error(self) -> None:
        self.stale = True
        if self.recover:
            self.resolve()
        time.sleep(0.2)

    def run(self) -> None:
        create_table(self.pg, EFFECTS_DDL.format(self.cfg.sink_name))
        if self.recover:
            self.resolve()
        self.consumer.subscribe([self.cfg.source_topic], on_assign=self.on_assign, on_revoke=self.on_revoke,
                                on_lost=self.on_revoke)
        while True:
            if self.stale and self.position:
                self.reseek()
            msgs = batch(self.consumer)
            if msgs:
                self.apply(msgs)


def run(cfg: Config) -> None:
    Coordinator(cfg).run()


if __name__ == "__main__":
    main("two_phase_commit", "postgres", run, __doc__)
