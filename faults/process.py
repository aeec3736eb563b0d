"""Process faults: `kill` (SIGKILL to the node's process group; healed by starting it again
on the same data), `restart` (graceful stop, then start), `pause` (SIGSTOP; healed by SIGCONT).

A node held down by two kills starts again when the last of them heals; a node paused twice
resumes when the last pause heals."""
from __future__ import annotations

from typing import Any

from faults import params as p
from faults.base import Fault, kind


def _parse_kill(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, {"restart-after"}, "kill")
    out: dict[str, Any] = {}
    if "restart-after" in params:
        out["restart-after"] = p.duration(params["restart-after"], "restart-after")
    return out


def _parse_none(name: str):  # type: ignore[no-untyped-def]
    def parse(params: dict[str, Any]) -> dict[str, Any]:
        p.no_extra(params, set(), name)
        return {}

    return parse


@kind("kill", _parse_kill, summary="SIGKILL the node; restart it (same data) at heal or after restart-after")
class Kill(Fault):
    slow = True  # healing starts the node and waits until it serves

    def _apply(self) -> None:
        pids = {}
        for name in self.targets:
            node = self.context.node(name)
            self.context.claim(("down", name), self.id)
            pids[name] = node.pid if node.alive else None
            node.kill()
        self.details["killed"] = pids

    def _heal(self) -> None:
        started = {}
        for name in self.targets:
            if self.context.release(("down", name), self.id):
                node = self.context.node(name)
                node.start()
                started[name] = node.pid
        self.details["started"] = started


@kind("restart", _parse_none("restart"), summary="stop the node gracefully and start it again")
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


@kind("pause", _parse_none("pause"), summary="SIGSTOP the node (its sockets stay open); SIGCONT at heal")
class Pause(Fault):
    def _apply(self) -> None:
        pids = {}
        for name in self.targets:
            node = self.context.node(name)
            first = self.context.claim(("paused", name), self.id)
            if first:
                node.pause()
            pids[name] = node.pid
        self.details["pids"] = pids

    def _heal(self) -> None:
        for name in self.targets:
            if self.context.release(("paused", name), self.id):
                self.context.node(name).resume()
