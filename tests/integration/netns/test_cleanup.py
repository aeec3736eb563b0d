"""Namespaces, veths, the bridge and the rules never survive a run: not close(), SIGINT or
SIGTERM; after SIGKILL, `onceproof cleanup` removes them."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onceproof.targets import paths
from tests.integration.netns.conftest import needs_root

pytestmark = [pytest.mark.integration, needs_root]

ROOT = Path(__file__).resolve().parents[3]

HARNESS = r"""
import json, sys, time
from onceproof.targets.netns import NetnsRuntime
from onceproof.targets.process import CommandNode
rt = NetnsRuntime()
for name in ("a", "b"):
    rt.add_host(name)
node = CommandNode(rt, "pipeline-0", ["sleep", "300"], {})
node.start()
print(json.dumps({"run": rt.run_id, "prefix": rt.prefix, "pid": node.pid}), flush=True)
time.sleep(300)
"""


def start_harness() -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen([sys.executable, "-c", HARNESS], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line, "the harness did not start"
    return proc, json.loads(line)


def traces(info: dict) -> list[str]:
    """What of that run is still on the machine."""
    out = [line for line in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout.splitlines()
           if info["prefix"] in line]
    out += [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()
            if info["prefix"] in n]
    out += [r for r in subprocess.run(["iptables", "-S"], capture_output=True, text=True).stdout.splitlines()
            if info["run"] in r]
    out += [str(p) for p in paths.registry_dir().glob(f"{info['run']}*")]
    if os.path.exists(f"/proc/{info['pid']}"):
        out.append(f"process {info['pid']}")
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_nothing_survives_a_harness_stopped_by(sig):
    proc, info = start_harness()
    assert any("netns" not in t and "link" not in t for t in traces(info))  # it did make things
    proc.send_signal(sig)
    proc.wait(30)
    assert traces(info) == []


def test_cleanup_removes_what_a_harness_killed_with_sigkill_left():
    proc, info = start_harness()
    proc.kill()
    proc.wait(10)
    assert traces(info) != []  # SIGKILL leaves it all behind...
    res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    deadline = time.monotonic() + 5
    while traces(info) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert traces(info) == []  # ...and cleanup removes it
    assert "network namespace" in res.stdout and "iptables rule" in res.stdout


def test_a_second_run_gets_its_own_subnet_and_names():
    from onceproof.targets.netns import NetnsRuntime

    with NetnsRuntime() as a, NetnsRuntime() as b:
        assert a.subnet != b.subnet and a.prefix != b.prefix
        a.add_host("x")
        b.add_host("x")
        assert a.address_of("x") != b.address_of("x")
    assert a.leftovers() == [] and b.leftovers() == []


def test_refuses_without_root_with_a_clear_message():
    code = ("import os\n"
            "from onceproof.targets.netns import NetnsRuntime, NetnsError\n"
            "os.setuid(65534)\n"
            "try:\n    NetnsRuntime()\nexcept NetnsError as e:\n    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert "needs root" in res.stdout, res.stderr
