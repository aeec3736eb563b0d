"""`onceproof cleanup` acts only on what is ours (issue 18): a ledger entry whose owner is
dead but which names a foreign process, a foreign folder, namespace, link or iptables rule
leaves every one of them alone, and says so."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from onceproof.targets import paths
from onceproof.targets.procfs import start_time

pytestmark = pytest.mark.e2e


def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _can_make_dummy_link(name: str) -> bool:
    if os.geteuid() != 0:
        return False
    return subprocess.run(["ip", "link", "add", name, "type", "dummy"], capture_output=True).returncode == 0


def test_cleanup_leaves_alone_a_foreign_process_folder_and_link_named_by_a_forged_entry(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    foreign = subprocess.Popen(["sleep", "120"], start_new_session=True)  # a group leader: killpg would hit it
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    link = "fgnlink0"
    made_link = _can_make_dummy_link(link)
    try:
        entry = {"run_id": "20990101-000000-f0f0f0", "scratch": str(precious), "owner_pid": _dead_pid(),
                 "owner_start": 1, "processes": {"kafka-1": {"pid": foreign.pid, "start": start_time(foreign.pid)}},
                 "netns": ["not-ours"], "links": [link], "iptables": [["INPUT", "-s", "10.0.0.1", "-j", "DROP"]]}
        (home / "runs" / "20990101-000000-f0f0f0.json").write_text(json.dumps(entry))
        res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "ONCEPROOF_HOME": str(home)})
        assert res.returncode == 0, res.stderr
        assert "removed 0 item(s)" in res.stdout, res.stdout
        for thing in (f"process kafka-1 (pid {foreign.pid})", f"directory {precious}", "network namespace not-ours",
                      f"link {link}", "iptables rule INPUT"):
            assert f"left alone, not ours: {thing}" in res.stdout, res.stdout
        assert foreign.poll() is None, "cleanup killed a process that is not ours"
        assert (precious / "thesis.tex").read_text() == "years of work"
        if made_link:
            assert subprocess.run(["ip", "link", "show", link], capture_output=True).returncode == 0
        assert not (home / "runs" / "20990101-000000-f0f0f0.json").exists()  # the forged entry itself goes
    finally:
        foreign.kill()
        foreign.wait()
        if made_link:
            subprocess.run(["ip", "link", "delete", link], capture_output=True)


def test_cleanup_still_removes_a_process_and_folder_that_are_ours(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    run_id = "20990101-000001-0a0b0c"
    scratch = paths.scratch_root() / run_id
    scratch.mkdir(parents=True)
    ours = subprocess.Popen(["sleep", "120"], start_new_session=True,
                            env={**os.environ, "ONCEPROOF_RUN_ID": run_id})
    try:
        entry = {"run_id": run_id, "scratch": str(scratch), "owner_pid": _dead_pid(), "owner_start": 1,
                 "processes": {"redis": {"pid": ours.pid, "start": start_time(ours.pid)}}}
        (home / "runs" / f"{run_id}.json").write_text(json.dumps(entry))
        res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "ONCEPROOF_HOME": str(home)})
        assert "removed 2 item(s)" in res.stdout, res.stdout
        ours.wait(timeout=10)
        assert not scratch.exists()
    finally:
        if ours.poll() is None:
            ours.kill()
            ours.wait()
