"""Faults left by a run that crashes: a run stopped by SIGTERM heals them itself before it dies
(Nemesis.guard); what a run killed with SIGKILL leaves (a paused server, a cut proxy) is
removed by `onceproof cleanup`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onceproof.targets import redis as redis_target
from onceproof.targets.toxiproxy import Toxiproxy
from tests.integration.faults.util import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]

RUN = """
import json, sys, time
sys.path.insert(0, {root!r})
from onceproof.faults.base import Context
from onceproof.faults.nemesis import Nemesis
from onceproof.faults.schedule import expand
from onceproof.recorder import HistoryWriter
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.local import LocalRuntime

d = Deployment.create(LocalRuntime(), TargetsSpec(redis="none"))
d.start()
history = HistoryWriter({history!r}, flush_s=0.01)
nemesis = Nemesis(Context.from_deployment(d, [], seed=1), history)
steps = expand([{{"at": 0, "partition": {{"target": "redis", "style": "refuse"}}}},
                {{"at": 0, "clock-skew": {{"target": "redis", "offset": "60s"}}}},
                {{"at": 0, "pause": "redis"}}], 1, None, list(d.nodes()))
with nemesis.guard():
    for step in steps:
        nemesis.apply(nemesis.make(step))
    print(json.dumps({{"redis": [d.redis.host, d.redis.port], "pid": d.redis.pid,
                      "proxy": d.proxies["pipeline-redis"].listen, "toxiproxy": d.toxiproxy.api.url,
                      "password": d.redis.password,
                      "scratch": str(d.runtime.scratch), "toxiproxy_pid": d.toxiproxy.pid}}), flush=True)
    time.sleep(120)  # the run "goes on" until a signal ends it; no teardown ever runs
"""


def start_run(tmp_path: Path) -> tuple[subprocess.Popen, dict]:
    script = RUN.format(root=str(ROOT), history=str(tmp_path / "history.jsonl"))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        pytest.fail(f"the run did not start: {proc.stderr.read()[-3000:]}")
    return proc, json.loads(line)


def cleanup() -> str:
    res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True, timeout=60,
                         cwd=ROOT)
    assert res.returncode == 0, res.stderr
    return res.stdout


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in "XZ"
    except OSError:
        return False


def test_a_run_ended_by_sigterm_heals_its_faults_before_it_dies_and_cleanup_removes_the_rest(tmp_path):
    proc, info = start_run(tmp_path)
    try:
        api = Toxiproxy(info["toxiproxy"])
        assert api.proxies()["pipeline-redis"]["enabled"] is False
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == -signal.SIGTERM
        # the servers outlived their harness (no teardown ran), but carry no fault
        assert api.proxies()["pipeline-redis"]["enabled"] is True
        client = redis_target.client("127.0.0.1", info["proxy"], timeout=1, password=info["password"])
        s, us = client.time()
        assert abs(s + us / 1e6 - time.time()) < 0.5  # clock back, server resumed, proxy enabled
        heals = [json.loads(x) for x in (tmp_path / "history.jsonl").read_text().splitlines()]
        assert [(r["type"], r["value"]["kind"]) for r in heals if r["f"] == "heal"] == [
            ("invoke", "pause"), ("ok", "pause"), ("invoke", "clock-skew"), ("ok", "clock-skew"),
            ("invoke", "partition"), ("ok", "partition")]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out = cleanup()
    assert "run " in out
    assert not alive(info["pid"]) and not alive(info["toxiproxy_pid"])
    assert not Path(info["scratch"]).exists()


def test_what_a_run_killed_with_sigkill_left_applied_is_removed_by_onceproof_cleanup(tmp_path):
    proc, info = start_run(tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert alive(info["pid"])  # left paused, behind a disabled proxy
        with open(f"/proc/{info['pid']}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "T"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out = cleanup()
    assert "run " in out
    assert wait_for(lambda: not alive(info["pid"]) and not alive(info["toxiproxy_pid"]), 5)
    assert not Path(info["scratch"]).exists()
    assert not os.path.exists(info["scratch"])
