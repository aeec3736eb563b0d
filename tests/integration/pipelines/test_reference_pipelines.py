"""The reference pipelines against real servers (the shared Kafka + PostgreSQL, through the
pipeline's Toxiproxy proxies), under kill -9 / restart cycles and a long SIGSTOP.

The correct pipelines must apply every event exactly once; the broken ones must show their bug.

Run: `.venv/bin/pytest tests/integration/pipelines` (about 100 s on 2 cores, each test 15-25 s).
Replica logs land in the test's tmp_path (`<module>-<replica>.log`); a failing assertion prints
their tails. Determinism: kills wait until the victim is busy (it logged a batch since it started);
the zombie pauses are aimed with the pipelines' ONCEPROOF_HOLD_MS hook, and the broken pipelines'
windows are widened with reply latency (see each test's docstring).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.integration.pipelines.driver import ROOT, PipelineRun, verdict

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def summary(run: PipelineRun, v: dict[str, list[str]], started: float) -> str:
    return (f"{run.module}: {len(run.acked)} acked, lost {len(v['lost'])} {v['lost'][:5]}, duplicate "
            f"{len(v['duplicate'])} {v['duplicate'][:5]}, phantom {len(v['phantom'])}; {run.kills} kills, "
            f"{time.monotonic() - started:.1f}s\n{run.tails()}")


def test_kafka_to_postgres_smoke(shared_targets, tmp_path):
    started = time.monotonic()
    with PipelineRun(shared_targets, "kafka_to_postgres", tmp_path) as run:
        load = run.produce(3000, rate=2000)
        run.start()
        load.join()
        counts = run.wait_stable(quiet=1.0, timeout=30, expect=3000)
        v = verdict(run, counts)
        print(summary(run, v, started))
        assert not any(v.values()), summary(run, v, started)


N = 6000


def test_kafka_to_postgres_exactly_once_under_kills_and_pause(shared_targets, tmp_path):
    """kill -9 cycles, then replica 0 stopped (SIGSTOP) for longer than its session timeout
    while events keep flowing: it loses its partitions to replica 1 and, once continued, may
    try to commit a stale batch; the offsets' compare-and-set must fence it."""
    started = time.monotonic()
    with PipelineRun(shared_targets, "kafka_to_postgres", tmp_path, env={"ONCEPROOF_HOLD_MS": "150"}) as run:
        run.start_and_wait()
        load = run.produce(N, rate=400)
        run.kill_cycles(6, period=0.7)
        # stopped between reading a batch and applying it, past session.timeout.ms (6 s)
        assert run.pause_at(0, "holding a batch", seconds=8.0), run.tails()
        run.kill_cycles(2, period=0.7)
        load.join()
        counts = run.wait_stable(quiet=2.0, timeout=40, expect=N)
        v = verdict(run, counts)
        print(summary(run, v, started))
        assert not run.exited(), f"a replica exited: {run.exited()}\n{run.tails()}"
        assert len(run.acked) == N
        assert not any(v.values()), summary(run, v, started)
        # the zombie did try to apply its stale batch, and was fenced
        assert "fenced:" in run.log_path(0).read_text(), run.tails()


def test_kafka_txn_copy_exactly_once_under_kills_and_pause(shared_targets, tmp_path):
    """kill -9 cycles (a restarted replica's init_transactions fences its dead incarnation), then
    replica 0 stopped inside an open transaction past its session timeout: when continued, the
    group coordinator must refuse its offsets (stale generation) and the transaction abort."""
    started = time.monotonic()
    with PipelineRun(shared_targets, "kafka_txn_copy", tmp_path, sink="kafka",
                     env={"ONCEPROOF_HOLD_MS": "100"}) as run:
        run.start_and_wait()
        load = run.produce(N, rate=400)
        run.kill_cycles(6, period=0.7, busy="committed")
        assert run.pause_at(0, "holding a transaction", seconds=8.0), run.tails()
        run.kill_cycles(2, period=0.7, busy="committed")
        load.join()
        counts = run.wait_stable(quiet=2.0, timeout=45, expect=N)
        v = verdict(run, counts)
        print(summary(run, v, started))
        assert not run.exited(), f"a replica exited: {run.exited()}\n{run.tails()}"
        assert len(run.acked) == N
        assert not any(v.values()), summary(run, v, started)
        assert "transaction failed" in run.log_path(0).read_text(), run.tails()


def test_at_least_once_duplicates_under_kills(shared_targets, tmp_path):
    """A kill between a batch's write and its offset commit makes its next owner apply it again.
    That window is a few ms on loopback, so kills alone hit it rarely (0 duplicates in 10 kills
    in our runs): 100 ms of latency on PostgreSQL's replies (the rows are already committed when
    the reply is held back) makes it about half of each batch's cycle."""
    started = time.monotonic()
    with PipelineRun(shared_targets, "at_least_once", tmp_path) as run:
        run.start_and_wait()
        load = run.produce(N, rate=600)
        with run.toxic("postgres", "latency", latency=100):
            run.kill_cycles(10, period=0.7)
        load.join()
        counts = run.wait_stable(quiet=2.0, timeout=30, expect=N)
        v = verdict(run, counts)
        print(summary(run, v, started))
        assert not v["lost"] and not v["phantom"], summary(run, v, started)
        assert v["duplicate"], summary(run, v, started)


def test_commit_before_process_loses_under_kills(shared_targets, tmp_path):
    """A kill between a batch's offset commit and its write loses the batch. That window is a few
    ms on loopback, so kills alone hit it rarely (0 lost in 10 kills in our runs): 100 ms of
    latency on Kafka's replies (the offsets are already committed when the reply is held back)
    makes it about half of each batch's cycle."""
    started = time.monotonic()
    with PipelineRun(shared_targets, "commit_before_process", tmp_path) as run:
        run.start_and_wait()
        load = run.produce(N, rate=600)
        with run.toxic("kafka-1", "latency", latency=100):
            run.kill_cycles(10, period=0.7)
        load.join()
        # lost is proven, not guessed from a quiet sink: the group's committed offsets have
        # passed every acknowledged event, and the events before them missing from the sink
        # are lost (the pipeline claims it processed them); any other missing one is unseen
        committed = run.wait_caught_up(timeout=60)
        counts = run.wait_stable(quiet=2.0, timeout=30)
        v = verdict(run, counts, committed)
        print(summary(run, v, started))
        assert not v["duplicate"] and not v["phantom"], summary(run, v, started)
        assert v["lost"], summary(run, v, started)
        assert all(run.positions[e][1] < committed[run.positions[e][0]] for e in v["lost"])
        assert len(v["lost"]) + len(v["unseen"]) == len(set(run.acked) - set(counts))


def test_kafka_to_postgres_exactly_once_under_network_faults(shared_targets, tmp_path):
    """Latency with kills, a PostgreSQL black hole (connections stay open, bytes vanish: only the
    pipeline's own deadline gets it out), then Kafka cut off past the session timeout."""
    started = time.monotonic()
    with PipelineRun(shared_targets, "kafka_to_postgres", tmp_path) as run:
        run.start_and_wait()
        load = run.produce(N, rate=500)
        with run.toxic("postgres", "latency", latency=50, jitter=20), \
                run.toxic("kafka-1", "latency", stream="upstream", latency=20):
            run.kill_cycles(3, period=0.7)
        with run.toxic("postgres", "timeout", timeout=0):
            time.sleep(4)
        api = shared_targets.toxiproxy.api
        api.set_enabled("pipeline-kafka-1", False)
        try:
            time.sleep(7)  # > session.timeout.ms
        finally:
            api.set_enabled("pipeline-kafka-1", True)
        load.join()
        counts = run.wait_stable(quiet=2.0, timeout=45, expect=N)
        v = verdict(run, counts)
        print(summary(run, v, started))
        assert not run.exited(), f"a replica exited: {run.exited()}\n{run.tails()}"
        assert not any(v.values()), summary(run, v, started)


@pytest.mark.parametrize("module", ["kafka_to_postgres", "kafka_txn_copy", "at_least_once",
                                    "commit_before_process"])
def test_bad_configuration_exits_2(module):
    """Only a bad configuration ends a pipeline, with exit code 2 and a line saying why."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONCEPROOF_")}
    env.update(ONCEPROOF_SOURCE="redis:onceproof.events", ONCEPROOF_SINK="postgres:x", ONCEPROOF_RUN_ID="r")
    res = subprocess.run([sys.executable, "-m", f"onceproof.targets.pipelines.{module}"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 2, res.stderr
    assert "bad configuration" in res.stderr
