"""A node: one server process (or one pipeline replica) that the harness starts, stops,
kills, pauses and resumes. Every process runs in its own process group (its own session),
so a signal reaches its children too, and is listed in the run ledger while it lives."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from onceproof.errors import OnceproofError
from onceproof.targets import procfs


if TYPE_CHECKING:
    from collections.abc import Callable

    from onceproof.targets.runtime import Runtime


class NodeError(OnceproofError, RuntimeError):
    """A node failed to start or to stop; the message ends with the tail of its log."""


def poll_ready(node: "Node", timeout: float, died: Callable[[], str], tail: Callable[[], str],
               first_delay: float = 0.05, max_delay: float = 0.25) -> None:
    """Poll `node.ready()` (any exception = not ready yet), backing off from `first_delay` to
    `max_delay` seconds, until it is true. Raises NodeError when the node dies meanwhile
    (message: `died()`, then its log's `tail()`) or after `timeout` seconds (the node is then
    killed). Shared by local processes and containers."""
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        if not node.alive:
            raise NodeError(f"{died()} while starting; its log ({node.log_path}) ends:\n{tail()}")
        try:
            if node.ready():
                return
        except Exception:  # noqa: BLE001 - any failure of the probe means not ready yet
            pass
        if time.monotonic() > deadline:
            node.kill()
            raise NodeError(f"{node.name} was not ready after {timeout:.0f}s; "
                            f"its log ({node.log_path}) ends:\n{tail()}")
        time.sleep(delay)
        delay = min(delay * 1.5, max_delay)


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 16384))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Node:
    """Base of every target node. Subclasses say how to prepare, run and probe the server."""

    kind = "process"
    stop_signal = signal.SIGTERM
    start_timeout = 30.0

    def __init__(self, runtime: "Runtime", name: str, port: int | None = None) -> None:
        self.runtime = runtime
        self.name = name
        self.host = runtime.host_for(name)
        self.port = port if port is not None else runtime.free_port()
        self.data_dir = runtime.node_dir(name)
        self.log_path = runtime.log_dir / f"{name}.log"
        self.clock_file = runtime.node_dir(name, "clock") / f"{name}.clock"
        self._popen: subprocess.Popen[bytes] | None = None
        self._prepared = False
        self.paused = False
        self.starts = 0

    # --- what a subclass provides -------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up of the data directory before the first start."""

    def ready(self) -> bool:
        """True when the server really serves (not merely listens)."""
        raise NotImplementedError

    def spawn_kwargs(self) -> dict[str, Any]:
        return {}

    def extra_env(self) -> dict[str, str]:
        return {}

    # --- the interface ------------------------------------------------------------
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._popen.pid if self._popen else None

    @property
    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    @property
    def exit_code(self) -> int | None:
        """How the last start ended: its exit status (negative: killed by that signal), or
        None while it runs or before it was ever started."""
        return self._popen.poll() if self._popen is not None else None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["ONCEPROOF_RUN_ID"] = self.runtime.run_id  # how `onceproof cleanup` knows the process is ours
        shim = self.runtime.clock_shim
        if shim is not None:
            # every node can have its wall clock moved while it runs: see targets/clock/
            env["LD_PRELOAD"] = str(shim)
            env["ONCEPROOF_CLOCK_FILE"] = str(self.clock_file)
        env.update(self.extra_env())
        return env

    def make_clock_file(self) -> None:
        """The node's clock file, if it has none yet: one page of zeros (no offset), readable by
        all, which the clock shim maps (targets/clock/onceproof_clock.c) and a clock fault writes."""
        self.clock_file.parent.mkdir(parents=True, exist_ok=True)
        if not self.clock_file.exists():
            self.clock_file.write_bytes(b"\0" * 4096)
            os.chmod(self.clock_file, 0o644)

    def start(self, wait: bool = True) -> None:
        if self.alive:
            return
        if not self._prepared:
            self.make_clock_file()
            user = self.spawn_kwargs().get("user")
            if isinstance(user, int):  # a server that runs as its own account reads its clock file
                os.chown(self.clock_file.parent, user, -1)
            self.prepare()
            self._prepared = True
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- onceproof: starting {self.name}: {' '.join(self.command())}\n".encode())
            log.flush()
            # the runtime places the process (netns: inside the node's namespace)
            with self.runtime.spawning(self.name):
                self._popen = subprocess.Popen(
                    self.command(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env(),
                    start_new_session=True,
                    **self.spawn_kwargs(),
                )
        self.paused = False
        self.starts += 1
        self.runtime.register(self.name, self._popen.pid)
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float | None = None) -> None:
        code = lambda: self._popen.returncode if self._popen else None  # noqa: E731
        poll_ready(self, timeout or self.start_timeout, died=lambda: f"{self.name} exited with code {code()}",
                   tail=lambda: log_tail(self.log_path), first_delay=0.02, max_delay=0.2)

    def _signal(self, sig: int) -> None:
        if self._popen is None:
            return
        try:
            os.killpg(self._popen.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL, no chance to clean up: the process group and every process below the node's
        own, waited for (PostgreSQL's backends call setsid(): killing the group alone left them
        serving a moment, and a start right after failed on their shared memory, "pre-existing
        shared memory block is still in use")."""
        if self._popen is None:
            return
        below = procfs.descendants(self._popen.pid) if self.alive else []
        self._signal(signal.SIGKILL)
        for pid in below:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._popen.wait()
        procfs.wait_gone(below, 5.0)
        self.paused = False
        self.runtime.unregister(self.name)

    def stop(self, timeout: float = 15.0) -> None:
        """Graceful stop; SIGKILL if it does not end within the timeout."""
        if self._popen is None:
            return
        if self.alive:
            if self.paused:
                self._signal(signal.SIGCONT)
            self._signal(self.stop_signal)
            try:
                self._popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._popen.wait()
        self._signal(signal.SIGKILL)  # any child left in the group
        self.paused = False
        self.runtime.unregister(self.name)

    def listener(self, group: str) -> str:
        """`host:port` where this node serves clients of client group `group` (what that
        group's proxy forwards to): its one port, unless a kind listens per group."""
        return self.address

    def advertise(self, group: str, host: str, port: int) -> None:
        """Clients of `group` reach this node at host:port (its proxy). Most servers need not
        know; a kind that tells clients where to reconnect (Kafka's metadata) must."""

    def teardown(self) -> None:
        """End the node for good at the end of a run (its data is about to be thrown away):
        a graceful stop by default; a kind for which that is slow and pointless kills instead."""
        self.stop(timeout=10)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def restart(self) -> None:
        self.stop()
        self.start()

    def host_pid(self) -> int | None:
        """The pid, on this machine, of the node's main process while it runs (a container's
        too), else None."""
        return self.pid if self.alive else None

    def clock_shim_loaded(self) -> bool | None:
        """Whether the node's running process has the clock shim mapped (/proc/<pid>/maps):
        None when that cannot be known (not running, or its maps unreadable). A process whose C
        library cannot preload the shim (an image not built on glibc, a static binary) runs
        without it: a clock fault would change nothing."""
        pid = self.host_pid()
        shim = self.runtime.clock_shim
        if pid is None or shim is None:
            return None
        try:
            with open(f"/proc/{pid}/maps") as fh:
                return any(shim.name in line for line in fh)
        except OSError:
            return None

    def set_clock_offset(self, offset_s: float) -> None:
        """Move this node's wall clock by offset_s seconds from now on (0 = true time)."""
        fd = os.open(self.clock_file, os.O_WRONLY)
        try:
            os.pwrite(fd, struct.pack("<q", int(offset_s * 1e9)), 0)
        finally:
            os.close(fd)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.address} {'alive' if self.alive else 'down'}>"


class CommandNode(Node):
    """Any command (a pipeline replica): alive while it runs; ready as soon as it runs."""

    kind = "pipeline"

    def __init__(self, runtime: "Runtime", name: str, argv: list[str], env: dict[str, str],
                 cwd: str | None = None) -> None:
        super().__init__(runtime, name, port=0)
        self.argv = argv
        self._env = env
        self.cwd = cwd

    def command(self) -> list[str]:
        return self.argv

    def extra_env(self) -> dict[str, str]:
        return self._env

    def spawn_kwargs(self) -> dict[str, Any]:
        return {"cwd": self.cwd} if self.cwd else {}

    def ready(self) -> bool:
        return True

    @property
    def address(self) -> str:
        return "-"
