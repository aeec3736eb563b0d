"""The run ledger: what each live run started, so that `onceproof cleanup` can remove what
a harness killed with SIGKILL left behind (processes, data directories, network namespaces).

One JSON file per run under $ONCEPROOF_HOME/runs/, rewritten atomically whenever the run
starts a process. A process is identified by pid AND its start time (from /proc), so a pid
reused by the system is never signalled.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from onceproof.targets import iptables, paths
from onceproof.targets.procfs import start_time as process_start_time


def new_run_id() -> str:
    """A fresh run id, `YYYYmmdd-HHMMSS-<6 hex>` (local time): it names the run's ledger file,
    its scratch directory and, by default, its results folder."""
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def same_process(pid: int, start: int | None) -> bool:
    """True if `pid` is still the process that started at `start` (clock ticks since boot)."""
    return start is not None and process_start_time(pid) == start


@dataclass
class RunEntry:
    """What one run owns. Written to disk on every change."""

    run_id: str
    scratch: str
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: int | None = None
    processes: dict[str, dict] = field(default_factory=dict)  # name -> {pid, start}
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    iptables: list[list[str]] = field(default_factory=list)  # root-namespace rules to delete
    engine: str = ""  # the docker runtime's engine (DOCKER_HOST): its objects carry the run's label
    # ".json" for a run; ".guard" for what must outlive a run until its harness exits (the
    # netns runtime's rule that keeps forgotten clients from following the default route)
    suffix: str = ".json"
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.owner_start is None:
            self.owner_start = process_start_time(self.owner_pid)

    @property
    def path(self) -> Path:
        return paths.ledger_dir() / f"{self.run_id}{self.suffix}"

    def save(self) -> None:
        with self._lock:
            data = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, self.path)

    def add_process(self, name: str, pid: int) -> None:
        self.processes[name] = {"pid": pid, "start": process_start_time(pid)}
        self.save()

    def remove_process(self, name: str) -> None:
        if self.processes.pop(name, None) is not None:
            self.save()

    def forget(self) -> None:
        self.path.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: Path) -> "RunEntry":
        data = json.loads(path.read_text())
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__ and not k.startswith("_")})

    @property
    def owner_alive(self) -> bool:
        return same_process(self.owner_pid, self.owner_start)


def kill_group(pid: int, start: int | None) -> bool:
    """SIGKILL a process's whole group, if the process is still the one we started."""
    if not same_process(pid, start):
        return False
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, signal.SIGKILL)
    for _ in range(100):
        if process_start_time(pid) is None:
            break
        try:  # reap it if it is our own child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.01)
    return True


# names the netns runtime gives what it creates: `op` + 4 hex chars, then `-<node>` for a
# namespace, `br` / `v<i>` for a link (targets/netns.py)
NETNS_NAME = re.compile(r"op[0-9a-f]{4}-[A-Za-z0-9_.-]+")
LINK_NAME = re.compile(r"op[0-9a-f]{4}(br|v[0-9]+)")
RUN_ID = re.compile(r"[A-Za-z0-9_.-]{6,}")


def _proc_text(pid: int, what: str) -> str:
    try:
        with open(f"/proc/{pid}/{what}", "rb") as f:
            return f.read(1 << 20).replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def process_is_ours(pid: int, entry: RunEntry) -> bool:
    """Whether process `pid` belongs to `entry`'s run: its command line or its environment
    carries the run id or the run's scratch path (every node of ours gets ONCEPROOF_RUN_ID),
    or it works in the run's scratch folder (Redis rewrites its command line and environment
    into its process title, and works in its data folder)."""
    marks = [entry.run_id, entry.scratch] if RUN_ID.fullmatch(entry.run_id) else [entry.scratch]
    marks = [m for m in marks if m and len(m) >= 6]
    text = _proc_text(pid, "cmdline") + "\n" + _proc_text(pid, "environ")
    if any(m in text for m in marks):
        return True
    try:
        cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
    except OSError:
        return False
    scratch = Path(entry.scratch)
    return scratch_is_ours(scratch) and (cwd == scratch or scratch in cwd.parents)


def scratch_is_ours(scratch: Path) -> bool:
    """Whether `scratch` is a folder strictly under our scratch root (symlinks resolved)."""
    try:
        root = paths.scratch_root().resolve()
        where = scratch.resolve()
    except (OSError, RuntimeError):
        return False
    return where != root and root in where.parents


def _rule_is_ours(rule: list[str], entry: RunEntry) -> bool:
    # every root-namespace rule of a run carries the comment `onceproof <run id>[ guard]`
    return any(a == "--comment" and i + 1 < len(rule) and rule[i + 1].split()[:2] == ["onceproof", entry.run_id]
               for i, a in enumerate(rule))


def remove_run(entry: RunEntry, refused: list[str] | None = None) -> list[str]:
    """Remove everything a run owns, after checking each thing is ours: a process whose
    command line or environment carries the run's id or scratch path, a scratch folder under
    our scratch root, namespaces and links with our name prefix, iptables rules with our
    comment. Returns one line per thing removed; what was left alone is added to `refused`."""
    removed: list[str] = []
    refused = [] if refused is None else refused
    keep = False  # something of ours could not be removed: the entry stays
    for name, proc in list(entry.processes.items()):
        pid = proc.get("pid")
        if not isinstance(pid, int) or pid <= 1 or not same_process(pid, proc.get("start")):
            continue  # gone (or its pid reused): nothing to do
        if not process_is_ours(pid, entry):
            refused.append(f"process {name} (pid {pid}): its command line and environment do not name run "
                           f"{entry.run_id}")
            continue
        if kill_group(pid, proc.get("start")):
            removed.append(f"process {name} (pid {pid})")
    for rule in entry.iptables:
        if not _rule_is_ours(rule, entry):
            refused.append(f"iptables rule {' '.join(map(str, rule))}: no `onceproof {entry.run_id}` comment")
            continue
        err = iptables.delete(rule)
        if err is None:
            removed.append(f"iptables rule {' '.join(rule)}")
        else:  # the entry stays, for a cleanup that can delete it
            refused.append(f"iptables rule {' '.join(rule)}: iptables could not delete it: {err}")
            keep = True
    for ns in entry.netns:
        if not NETNS_NAME.fullmatch(ns):
            refused.append(f"network namespace {ns}: not a name onceproof gives (op<hex>-<node>)")
            continue
        if subprocess.run(["ip", "netns", "pids", ns], capture_output=True).returncode == 0:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for p in pids:
                try:
                    os.kill(int(p), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            if subprocess.run(["ip", "netns", "delete", ns], capture_output=True).returncode == 0:
                removed.append(f"network namespace {ns}")
    for link in entry.links:
        if not LINK_NAME.fullmatch(link):
            refused.append(f"link {link}: not a name onceproof gives (op<hex>br, op<hex>v<i>)")
            continue
        if subprocess.run(["ip", "link", "delete", link], capture_output=True).returncode == 0:
            removed.append(f"link {link}")
    if entry.engine:  # the docker runtime: containers, networks, volumes labelled with the run id
        from onceproof.targets.docker.cleanup import EngineError, remove_labelled

        os.environ.setdefault("DOCKER_HOST", entry.engine)
        try:
            removed += remove_labelled(entry.run_id)
        except EngineError as e:
            refused.append(f"containers of run {entry.run_id}: {e}")
            return removed  # the entry stays, for a cleanup once the engine answers
    scratch = Path(entry.scratch)
    if not scratch_is_ours(scratch):
        refused.append(f"directory {scratch}: not under onceproof's scratch root {paths.scratch_root()}")
    elif scratch.exists():
        shutil.rmtree(scratch, ignore_errors=True)
        removed.append(f"directory {scratch}")
    if not keep:
        entry.forget()
    return removed


def stale_runs(include_live: bool = False) -> list[RunEntry]:
    """Runs whose harness is gone (or all runs, with include_live)."""
    out: list[RunEntry] = []
    reg = paths.ledger_dir()
    if not reg.is_dir():
        return out
    for path in sorted([*reg.glob("*.json"), *reg.glob("*.guard")]):
        try:
            entry = RunEntry.load(path)
        except (OSError, ValueError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if include_live or not entry.owner_alive:
            out.append(entry)
    return out
