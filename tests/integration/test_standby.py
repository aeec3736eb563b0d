"""The PostgreSQL streaming standby target (targets/standby.py), real: it starts from the
primary, replicates, serves reads, falls behind while a latency fault slows its replication link
and catches up once healed, reaches the pipeline through its own proxy, and leaves nothing
behind."""
from __future__ import annotations

import os
import time

import psycopg
import pytest

from onceproof.faults.base import Context
from onceproof.faults.nemesis import Nemesis
from onceproof.faults.schedule import parse_entry
from onceproof.recorder import HistoryWriter
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.standby import STANDBY_ENV

pytestmark = pytest.mark.integration


def _rows(dsn: str) -> int:
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        row = conn.execute("SELECT count(*) FROM standby_probe").fetchone()
        return int(row[0]) if row else -1


def _eventually(pred, timeout: float) -> float:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            if pred():
                return time.monotonic() - t0
        except psycopg.Error:
            pass
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s")


def test_standby_replicates_lags_under_replication_latency_catches_up_and_leaves_nothing(runtime, tmp_path):
    d = Deployment.create(runtime, TargetsSpec(sections={"postgres": {"standby": True}}))
    assert [n.name for n in d.servers()] == ["postgres", "postgres-standby"]
    assert {"pipeline-postgres-standby", "load-postgres-standby", "replication-postgres-standby"} <= set(d.proxies)
    history = HistoryWriter(tmp_path / "history.jsonl")
    pids: list[int] = []
    try:
        d.start()
        primary, standby = d.servers()
        pids = [primary.pid, standby.pid]
        env = d.pipeline_env()
        assert env["ONCEPROOF_POSTGRES_DSN"] and env[STANDBY_ENV]
        assert env[STANDBY_ENV] != env["ONCEPROOF_POSTGRES_DSN"]
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as conn:
            conn.execute("CREATE TABLE standby_probe (i int)")
            conn.execute("GRANT SELECT ON standby_probe TO onceproof_pipeline")
            conn.execute("INSERT INTO standby_probe SELECT generate_series(1, 10)")
        _eventually(lambda: _rows(env[STANDBY_ENV]) == 10, 30)  # through the pipeline's proxy to the standby
        with psycopg.connect(env[STANDBY_ENV]) as conn, pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("INSERT INTO standby_probe VALUES (0)")

        nemesis = Nemesis(Context.from_deployment(d, [], seed=1), history)
        (step,) = parse_entry({"at": 0, "latency": {"target": "postgres-standby", "from": "replication",
                                                     "ms": 3000}})
        fault = nemesis.make(step)
        nemesis.apply(fault)
        time.sleep(0.5)  # the toxic sits on the open replication stream
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as conn:
            conn.execute("INSERT INTO standby_probe SELECT generate_series(11, 20)")
        time.sleep(1.0)
        assert _rows(env[STANDBY_ENV]) == 10  # behind the primary while the link is slow
        nemesis.heal(fault)
        took = _eventually(lambda: _rows(env[STANDBY_ENV]) == 20, 30)
        print(f"\nstandby caught up {took:.1f} s after the heal")
    finally:
        history.close()
        d.stop()
    for pid in pids:  # no server left running, no scratch left
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not runtime.scratch.exists()
