"""What the kernel says about one process, read from `/proc/<pid>/stat` (proc(5)).

The second field, the command name, is in parentheses and may itself contain spaces and
parentheses, so the fields are split after the LAST `)`; every reader of that file goes
through `stat_fields` so that rule is written once."""
from __future__ import annotations

import os
import time


def stat_fields(pid: int) -> list[bytes] | None:
    """The fields of `/proc/<pid>/stat` after the command name: index 0 is the state (proc(5)
    field 3), index 19 the start time (field 22). None if the process does not exist (or its
    file cannot be read or parsed)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    end = data.rfind(b")")
    if end < 0:
        return None
    return data[end + 1:].split()


def state(pid: int) -> str:
    """The process's one-letter state (`R` running, `S` sleeping, `T` stopped, `Z` zombie, ...),
    or `X` (the kernel's letter for dead) if it does not exist."""
    fields = stat_fields(pid)
    return fields[0].decode() if fields else "X"


def start_time(pid: int) -> int | None:
    """When the process started, in clock ticks since boot (with the pid, it names one process:
    a pid the system reuses gets another start time); None if it does not exist."""
    fields = stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    return int(fields[19])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, theirs, ...), read from
    /proc/<pid>/task/<tid>/children (a few files: scanning all of /proc, as psutil does, takes
    milliseconds on a busy machine); psutil's walk when a process ended while we looked. []
    when `pid` is gone. Collect them BEFORE killing `pid`: its orphans are reparented."""
    out: list[int] = []
    todo = [pid]
    try:
        while todo:
            parent = todo.pop()
            for task in os.listdir(f"/proc/{parent}/task"):
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out += kids
                todo += kids
        return out
    except OSError:  # a process ended while we looked: look again the slow way
        pass
    import psutil

    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.Error:
        return []


def wait_gone(pids: list[int], timeout: float = 2.0) -> bool:
    """Until every process has died (a zombie nobody reaped yet counts as dead); False after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while any(state(pid) not in "XZ" for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)
    return True
