"""What the kernel says about one process, read from `/proc/<pid>/stat` (proc(5)).

The second field, the command name, is in parentheses and may itself contain spaces and
parentheses, so the fields are split after the LAST `)`; every reader of that file goes
through `stat_fields` so that rule is written once."""
from __future__ import annotations


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
