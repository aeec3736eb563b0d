"""Where a run's nodes run: the `Runtime` protocol, and `make_runtime` to get one by name.

A runtime hands out what a node needs before it starts (an address, ports, a data directory,
a log directory, the clock shim), places its processes (`spawning`), lets a harness thread
act as one of its hosts (`entered`), keeps the run's ledger up to date (`register`,
`unregister`) so `onceproof cleanup` can remove what a SIGKILL left behind, and removes
everything of the run at `close`.

Implementations: `local` (targets/local.py: processes on 127.0.0.1, clients through
Toxiproxy), `netns` (targets/netns.py: one network namespace and address per node) and
`docker` (targets/docker/: containers on one network per run, clients through Toxiproxy).
Nodes, faults and the engine ask a runtime only what this protocol says; anything else
(e.g. the netns runtime's `exec` inside a host) is asked of that runtime's own type."""
from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol, runtime_checkable

KINDS = ("local", "netns", "docker")


@runtime_checkable
class Runtime(Protocol):
    """What every runtime offers. Ports and directories are the run's own: never shared with
    another run, removed at `close`."""

    @property
    def name(self) -> str:
        """The runtime's kind as a plan writes it: `local` or `netns`."""

    @property
    def run_id(self) -> str:
        """The run's id (see ledger.new_run_id)."""

    @property
    def log_dir(self) -> Path:
        """Where nodes write `<node>.log`."""

    @property
    def clock_shim(self) -> Path | None:
        """The clock shim nodes preload (LD_PRELOAD) so their wall clock can be moved, or None
        when it is not installed (clock faults then refuse to run)."""

    @property
    def client_proxies(self) -> bool:
        """True when clients reach nodes through Toxiproxy (network faults are proxy toxics);
        False when every node is a host of its own, reached at its own address, and network
        faults cut traffic between hosts instead."""

    def host_for(self, node_name: str) -> str:
        """The IPv4 address node `node_name` listens on (netns: creates its host on first use)."""

    def free_port(self) -> int:
        """A TCP port for a node to listen on, never handed out twice in this run.
        Raises RuntimeError if none is free."""

    def node_dir(self, name: str, sub: str = "data") -> Path:
        """`<scratch>/<sub>/<name>`, created: a node's data (`data`) or clock file (`clock`)."""

    def register(self, name: str, pid: int) -> None:
        """Record in the run's ledger that process `pid` (a group leader) runs node `name`."""

    def unregister(self, name: str) -> None:
        """Node `name` no longer runs (a no-op if it was not registered)."""

    def spawning(self, name: str) -> AbstractContextManager[None]:
        """Processes started inside this block run where node `name` lives (local: here;
        netns: inside its namespace)."""

    def entered(self, name: str) -> AbstractContextManager[None]:
        """The calling thread acts as host `name` for the block (e.g. the load generator),
        and threads it starts inherit that (local: a no-op)."""

    def close(self) -> None:
        """Remove everything the run made (scratch space, ledger entry; netns: namespaces,
        links, rules). Nodes must be stopped first. Idempotent."""


def make_runtime(kind: str, run_id: str | None = None, log_dir: Path | None = None,
                 images: Mapping[str, str] | None = None) -> Runtime:
    """A new runtime of `kind` (one of KINDS) for run `run_id` (None: a fresh id), writing
    node logs to `log_dir` (None: `<scratch>/logs`); `images` (docker only): node kind -> image.
    Raises ValueError for an unknown kind, targets.netns.NetnsError when `netns` cannot run
    here (it needs root), targets.docker.engine.EngineError when no container engine answers."""
    if kind == "netns":
        from onceproof.targets.netns import NetnsRuntime

        return NetnsRuntime(run_id=run_id, log_dir=log_dir)
    if kind == "local":
        from onceproof.targets.local import LocalRuntime

        return LocalRuntime(run_id=run_id, log_dir=log_dir)
    if kind == "docker":
        from onceproof.targets.docker.runtime import DockerRuntime

        return DockerRuntime(run_id=run_id, log_dir=log_dir, images=images)
    raise ValueError(f"unknown runtime {kind!r}: expected one of {', '.join(KINDS)}")
