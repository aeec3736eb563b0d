"""Ctrl-C Ctrl-C (issue 18): `timeout -s INT` and a CI cancel signal the run and its whole
process group, so the harness gets SIGINT twice, and more while it tears down. Teardown
must finish anyway: no traceback, exit 3 with the interruption in results.json, and no
process, scratch folder or ledger entry of the run left behind."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from onceproof.targets import paths

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

PLAN = """name: double-sigint
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline:
  command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]
  replicas: 2
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 500, keys: 20, duration: 60s}
faults:
  - {at: 1s, for: 30s, partition: {target: kafka-1, from: pipeline}}
quiesce: {idle: 3s, max: 60s}
"""


def test_sigint_to_the_run_and_its_group_twice_tears_everything_down(tmp_path: Path) -> None:
    import psutil

    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            start_new_session=True)  # its own process group, as under `timeout`
    lines: list[str] = []
    tearing_down = threading.Event()

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("[teardown]"):
                tearing_down.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        history = out / "history.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (history.exists() and b"load-start" in history.read_bytes()):
            time.sleep(0.2)
        time.sleep(2)  # the partition is applied: teardown has to heal it
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5  # toxiproxy, kafka, postgres, 2 replicas
        os.kill(proc.pid, signal.SIGINT)  # what GNU timeout does: the child, then its group
        os.killpg(proc.pid, signal.SIGINT)  # (two SIGINTs this close may reach the harness as one)
        # and an impatient Ctrl-C once teardown has begun: signals do not queue, so wait for it
        assert tearing_down.wait(60), "".join(lines)[-3000:]
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=180)
        reader.join(10)
        err = "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 3, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert "still tearing down" in err
    still_alive = psutil.wait_procs(children, timeout=15)[1]
    assert not still_alive, f"still running: {still_alive}"
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True and results["valid"] == "unknown"
    assert any("teardown finished" in n for n in results["notes"])
    assert (out / "report.html").exists()
    assert not any(paths.registry_dir().glob(f"{results['run_id']}*"))
    assert not (paths.scratch_root() / results["run_id"]).exists()
    if os.geteuid() == 0:  # the Toxiproxy API's owner rule: a SIGINT to the group must not cut its removal
        rules = subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout
        assert results["run_id"] not in rules, rules
