"""The reference pipelines' read paths (targets/pipelines/read_replica*.py) against a real
primary, its streaming standby and Redis, while a latency fault slows the standby's replication
link: the LSN wait returns what the primary committed before the read began, from the standby and
through the cache; the stale variant returns the standby's older state."""
from __future__ import annotations

import time

import psycopg
import pytest

from onceproof.faults.base import Context
from onceproof.faults.nemesis import Nemesis
from onceproof.faults.schedule import parse_entry
from onceproof.recorder import HistoryWriter
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.pipelines.read_replica import STATE_DDL, Reads
from onceproof.targets.pipelines.read_replica_stale import StaleReads
from onceproof.targets.standby import STANDBY_ENV

pytestmark = pytest.mark.integration


def test_the_lsn_wait_reads_the_primarys_last_commit_from_a_lagging_standby_and_the_stale_path_does_not(
        runtime, tmp_path):
    d = Deployment.create(runtime, TargetsSpec(redis="none", sections={"postgres": {"standby": True}}))
    history = HistoryWriter(tmp_path / "history.jsonl")
    try:
        d.start()
        env = d.pipeline_env()
        primary = env["ONCEPROOF_POSTGRES_DSN"]
        with psycopg.connect(primary, autocommit=True) as conn:
            conn.execute(STATE_DDL)
            conn.execute("INSERT INTO onceproof_key_state VALUES ('a', 1)")
        correct = Reads(primary, env[STANDBY_ENV], env["ONCEPROOF_REDIS_URL"])
        correct.wait_s = 10.0
        stale = StaleReads(primary, env[STANDBY_ENV], env["ONCEPROOF_REDIS_URL"])
        assert correct.read("a", "standby") == 1 and correct.read("a", "cache") == 1
        assert correct.read("nobody", "standby") is None

        nemesis = Nemesis(Context.from_deployment(d, [], seed=1), history)
        (step,) = parse_entry({"at": 0, "latency": {"target": "postgres-standby", "from": "replication",
                                                     "ms": 1500}})
        fault = nemesis.make(step)
        nemesis.apply(fault)
        try:
            time.sleep(0.5)
            with psycopg.connect(primary, autocommit=True) as conn:
                conn.execute("UPDATE onceproof_key_state SET last_seq = 2 WHERE key = 'a'")
            assert stale.read("a", "standby") == 1  # the standby has not replayed it: stale
            t = time.monotonic()
            assert correct.read("a", "cache") == 2  # the cached 1 is too old for this read
            waited = time.monotonic() - t
            assert waited > 0.3, waited  # it waited for the standby to replay past the primary's LSN
            assert correct.read("a", "standby") == 2
        finally:
            nemesis.heal(fault)
    finally:
        history.close()
        d.stop()
