"""A plan with a PostgreSQL standby: `onceproof up` starts the primary, the standby and their
proxies (the standby's replication proxy among them); after a SIGKILL of the harness, `onceproof
cleanup` removes the standby like every other node: no process, port, scratch folder or ledger
entry left."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.e2e import test_up_and_cleanup as up

pytestmark = pytest.mark.e2e

PLAN = """name: up-standby
targets: {postgres: {standby: true}}
pipeline: {command: [python, -c, "pass"]}
workload: {source: postgres:events, sink: postgres:effects}
"""


def test_cleanup_removes_a_standby_left_by_a_sigkilled_up(tmp_path, monkeypatch):
    monkeypatch.setattr(up, "PLAN", PLAN)
    proc, run_id, ports = up._start_up(tmp_path)
    pids = up._run_pids(run_id)
    assert len(pids) == 3  # toxiproxy, the primary, the standby
    proc.kill()  # SIGKILL: no teardown at all
    proc.wait(10)
    res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"run {run_id}" in res.stdout and "postgres-standby" in res.stdout, res.stdout
    up._gone(pids, ports, run_id)
