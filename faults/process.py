"""Process faults: `kill` (SIGKILL to the node's process group; healed by starting it again
on the same data), `restart` (graceful stop, then start), `pause` (SIGSTOP; healed by SIGCONT).

A node is its whole process tree. Signalling the node's process group is not enough:
PostgreSQL backends call setsid(), so they are groups of their own; a SIGSTOP of the
postmaster's group alone leaves every open session working (measured: see
tests/integration/faults/test_process.py), and a SIGKILL of it leaves backends serving until
they notice the postmaster died. So kill and pause also signal every descendant, and pause
returns only when the kernel reports every process stopped.

A node held down by two kills starts again when the last of them heals; a node paused twice
resumes when the last pause heals."""
from __future__ import annotations

import os
import signal
import time
from typing import Annotated

from pydantic import Field

from onceproof.faults.base import Fault, FaultError, Marks, Params, kind
from onceproof.faults.params import Seconds
from onceproof.targets import procfs
from onceproof.targets.process import Node
from onceproof.targets.procfs import state as _state
from onceproof.targets.procfs import wait_gone


def descendants(node: Node) -> list[int]:
    """Every process below the node's own (targets/procfs.py), [] when it is not running."""
    if not node.alive or node.pid is None:
        return []
    return procfs.descendants(node.pid)


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def wait_states(pids: list[int], stopped: bool, timeout: float = 2.0) -> bool:
    """Until every process is stopped (T) or running again (not T); a vanished one counts."""
    deadline = time.monotonic() + timeout
    while True:
        states = [_state(pid) for pid in pids]
        if all((s in "TtXZ") if stopped else (s not in "Tt") for s in states):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.0005)


class KillParams(Params):
    restart_after: Annotated[float, Seconds()] | None = Field(
        None, description="start the node again this long after the kill (instead of `for`)", examples=["2s"])


@kind("kill", params=KillParams, random={}, colour="#d62728", marker="x", marks=Marks("restart", "triangle-up"),
      summary="SIGKILL the node; restart it (same data) at heal or after restart-after")
class Kill(Fault):
    slow = True  # healing starts the node and waits until it serves

    def _apply(self) -> None:
        pids = {}
        for name in self.targets:
            node = self.context.node(name)
            self.context.claim(("down", name), self.id)
            pids[name] = node.pid if node.alive else None
            children = descendants(node)
            node.kill()
            _signal_all(children, signal.SIGKILL)
            if not wait_gone(children):
                raise FaultError(f"kill: processes of {name} survived SIGKILL: {children}")
        self.details["killed"] = pids

    def _heal(self) -> None:
        started = {}
        for name in self.targets:
            if self.context.release(("down", name), self.id):
                node = self.context.node(name)
                node.start()
                started[name] = node.pid
        self.details["started"] = started


@kind("restart", random={}, colour="#d62728", marker="triangle-up", marks=Marks("restarted", "triangle-up"),
      summary="stop the node gracefully and start it again")
class Restart(Fault):
    slow = True
    instant = True

    def _apply(self) -> None:
        pids = {}
        for name in self.targets:
            node = self.context.node(name)
            old = node.pid if node.alive else None
            node.restart()
            pids[name] = [old, node.pid]
        self.details["pids"] = pids

    def _heal(self) -> None:
        pass  # over once apply returned


@kind("pause", random={}, colour="#8c564b", marker="line-ns-open", marks=Marks("resume", "circle-open"),
      summary="SIGSTOP the node (its sockets stay open); SIGCONT at heal")
class Pause(Fault):
    def _apply(self) -> None:
        pids: dict[str, list[int]] = {}
        for name in self.targets:
            node = self.context.node(name)
            if self.context.claim(("paused", name), self.id):
                node.pause()  # the group first: the parent forks no new child after this
                tree = [node.pid, *descendants(node)] if node.pid else []
                _signal_all(tree[1:], signal.SIGSTOP)
                pids[name] = tree
        self.details["pids"] = {n: t[0] if t else None for n, t in pids.items()}
        self.details["processes"] = sum(len(t) for t in pids.values())
        if not wait_states([pid for t in pids.values() for pid in t], stopped=True):
            raise FaultError(f"pause: not every process of {', '.join(pids)} stopped within 2 s")

    def _heal(self) -> None:
        resumed = []
        for name in self.targets:
            if self.context.release(("paused", name), self.id):
                node = self.context.node(name)
                tree = [node.pid, *descendants(node)] if node.alive and node.pid else []
                _signal_all(tree[1:], signal.SIGCONT)
                node.resume()
                resumed += tree
        wait_states(resumed, stopped=False)
