"""/proc/<pid>/stat read once, right even when a command name holds parentheses and spaces."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

from onceproof.targets.ledger import same_process
from onceproof.targets.procfs import start_time, state


def test_a_command_named_with_parentheses_and_spaces_is_read_after_its_last_parenthesis(tmp_path):
    odd = tmp_path / "a) S (b"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "30"])
    try:
        deadline = time.monotonic() + 5
        while state(proc.pid) != "S" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state(proc.pid) == "S"
        started = start_time(proc.pid)
        assert started is not None and same_process(proc.pid, started)
        assert not same_process(proc.pid, started + 1)
    finally:
        proc.kill()
        proc.wait()
    assert state(proc.pid) == "X" and start_time(proc.pid) is None


def test_this_process_is_running_and_has_a_start_time():
    assert state(os.getpid()) == "R"
    assert start_time(os.getpid()) == start_time(os.getpid())
