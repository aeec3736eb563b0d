"""`onceproof up` tears everything down on SIGINT; after a SIGKILL, `onceproof cleanup` does."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onceproof.targets import paths

pytestmark = pytest.mark.e2e

PLAN = """name: up-test
targets: {redis: {persistence: none}, postgres: {}}
pipeline: {command: [python, -c, "pass"]}
workload: {source: redis:events, sink: postgres:effects}
"""


def _start_up(tmp_path: Path) -> tuple[subprocess.Popen, str, list[int]]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "up", str(plan)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "ready; Ctrl-C" in line:
            break
    text = "".join(lines)
    assert "ready; Ctrl-C" in text, text
    run_id = re.search(r"\(run (\S+)\)", text).group(1)
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)]
    assert ports
    return proc, run_id, ports


def _run_pids(run_id: str) -> list[int]:
    import json

    entry = json.loads((paths.registry_dir() / f"{run_id}.json").read_text())
    return [p["pid"] for p in entry["processes"].values()]


def _gone(pids: list[int], ports: list[int], run_id: str) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
        if not alive:
            break
        time.sleep(0.1)
    assert not [p for p in pids if os.path.exists(f"/proc/{p}")], "processes survived"
    for port in ports:
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
    assert not (paths.scratch_root() / run_id).exists(), "data dir survived"
    assert not (paths.registry_dir() / f"{run_id}.json").exists(), "registry entry survived"


def test_up_tears_everything_down_on_sigint(tmp_path):
    proc, run_id, ports = _start_up(tmp_path)
    pids = _run_pids(run_id)
    assert len(pids) == 3  # toxiproxy, redis, postgres
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "tearing down" in out
    _gone(pids, ports, run_id)


def test_cleanup_removes_what_a_sigkilled_up_left_behind(tmp_path):
    proc, run_id, ports = _start_up(tmp_path)
    pids = _run_pids(run_id)
    proc.kill()  # SIGKILL: no teardown at all
    proc.wait(10)
    assert all(os.path.exists(f"/proc/{p}") for p in pids), "servers should outlive a SIGKILLed harness"
    res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"run {run_id}" in res.stdout
    assert res.stdout.count("- process") >= 3
    _gone(pids, ports, run_id)
