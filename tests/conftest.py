"""Shared fixtures. Servers are expensive (a JVM start is seconds on 2 cores), so one set of
targets is shared by every integration test that does not change it destructively; a test
that kills or reconfigures a node starts its own."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from onceproof.targets import paths

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def _our_processes() -> list[str]:
    """Processes this session started that still run: our children (servers are started in
    their own sessions but stay our children), and orphans whose command line names our
    scratch space (a server whose harness was killed)."""
    import psutil

    found = {}
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                found[child.pid] = " ".join(child.cmdline())[:200]
        except psutil.Error:
            pass
    out = subprocess.run(["ps", "-eo", "pid,ppid,args"], capture_output=True, text=True).stdout.splitlines()
    mark = str(paths.scratch_root()) + "/"
    for line in out[1:]:
        pid, ppid, args = line.split(None, 2)
        if mark in args and ppid == "1":
            found[int(pid)] = args[:200]
    return [f"{pid} {args}" for pid, args in found.items()]


@pytest.fixture(scope="session", autouse=True)
def no_leaks_after_suite():
    """The suite itself leaves nothing running: no process, no scratch dir, no registry entry."""
    yield
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _our_processes():
        time.sleep(0.2)
    leftovers = _our_processes()
    from onceproof.targets.ledger import RunEntry

    mine = []
    for path in (paths.registry_dir().glob("*.json") if paths.registry_dir().is_dir() else []):
        try:
            entry = RunEntry.load(path)
        except (OSError, ValueError, TypeError):
            continue
        if entry.owner_pid == os.getpid() or not entry.owner_alive:
            mine.append(entry)
    runs = [e.run_id for e in mine]
    scratch = [e.scratch for e in mine if os.path.exists(e.scratch)]
    if leftovers or runs or scratch:
        from onceproof.targets.ledger import remove_run

        for entry in mine:
            remove_run(entry)
        pytest.fail(f"the suite leaked: processes={leftovers} runs={runs} scratch={scratch}", pytrace=False)


@pytest.fixture(scope="session")
def shared_targets():
    """One Kafka node + Redis + PostgreSQL + Toxiproxy, shared by the whole session.
    Tests must leave it as they found it (heal what they break, use their own topics/keys)."""
    from onceproof.targets.deployment import Deployment, TargetsSpec
    from onceproof.targets.local import LocalRuntime

    runtime = LocalRuntime(log_dir=ARTIFACTS / "shared-logs")
    d = Deployment.create(runtime, TargetsSpec(kafka_nodes=1, redis="aof-everysec", postgres=True))
    try:
        d.start()
        yield d
    finally:
        d.stop()


@pytest.fixture
def runtime(tmp_path):
    """A fresh local runtime for a test that starts its own nodes; closed afterwards."""
    from onceproof.targets.local import LocalRuntime

    rt = LocalRuntime(log_dir=tmp_path / "logs")
    yield rt
    for name, proc in list(rt.entry.processes.items()):
        from onceproof.targets.ledger import kill_group

        kill_group(proc["pid"], proc.get("start"))
    rt.close()


def pytest_configure(config):
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
