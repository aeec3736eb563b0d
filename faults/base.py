"""What every fault is: something applied to named target nodes and healed again.

A `Fault` has `apply()` and `heal()`, both idempotent, and says what it did with
`describe()`. Fault kinds live one family per module (process.py, network.py, clock.py) and
register themselves here with `@kind(...)`; schedules only compose them.

Faults that touch the same thing (two partitions of one proxy, two clock skews of one node,
two pauses of one process) share it through `Context.claims`: a thing is released only when
the last fault holding it heals, so overlapping faults heal correctly in any order."""
from __future__ import annotations

import os
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from onceproof.errors import OnceproofError
from onceproof.targets.process import Node
from onceproof.targets.toxiproxy import Toxiproxy

if TYPE_CHECKING:
    from onceproof.targets.deployment import Deployment, Proxy


def raise_priority() -> str:
    """Give the calling thread a real-time priority (SCHED_RR) if allowed, else nice -10.

    On a loaded 2-core machine an ordinary thread woken on time waits tens of milliseconds
    for a CPU (benchmarks/fault_timing.py measured p99 ~50-90 ms late with load 10), so the
    nemesis's threads ask for a better place. SCHED_RESET_ON_FORK: any thread or process
    created from here (a node started by a heal) starts as an ordinary one again."""
    tid = threading.get_native_id()
    try:
        os.sched_setscheduler(tid, os.SCHED_RR | os.SCHED_RESET_ON_FORK, os.sched_param(10))
        return "SCHED_RR"
    except (OSError, AttributeError):
        pass
    try:
        os.setpriority(os.PRIO_PROCESS, tid, -10)
        return "nice -10"
    except OSError:
        return "normal"


def is_realtime() -> bool:
    try:
        return os.sched_getscheduler(threading.get_native_id()) & ~os.SCHED_RESET_ON_FORK == os.SCHED_RR
    except (OSError, AttributeError):
        return False


class FaultError(OnceproofError, RuntimeError):
    """A fault could not be applied or healed. `certain` = nothing was changed (history `fail`);
    otherwise the outcome is unknown (history `info`)."""

    def __init__(self, message: str, certain: bool = False) -> None:
        super().__init__(message)
        self.certain = certain


@dataclass
class Context:
    """What faults act on: the run's nodes by name, its Toxiproxy and proxies, a seeded rng."""

    nodes: dict[str, Node]
    toxiproxy: Toxiproxy | None
    proxies: dict[str, "Proxy"]
    rng: random.Random
    kafka_bootstrap: str = ""
    toxiproxy_pid: int | None = None  # the nemesis raises its priority with its own
    claims: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def from_deployment(cls, deployment: "Deployment", pipeline_nodes: list[Node] | dict[str, Node] | None = None,
                        seed: int = 0) -> "Context":
        nodes: dict[str, Node] = {n.name: n for n in deployment.servers()}
        replicas = pipeline_nodes.values() if isinstance(pipeline_nodes, dict) else (pipeline_nodes or [])
        for n in replicas:
            nodes[n.name] = n
        return cls(nodes=nodes, toxiproxy=deployment.toxiproxy.api if deployment.toxiproxy else None,
                   proxies=dict(deployment.proxies), rng=random.Random(seed),
                   kafka_bootstrap=deployment.kafka_bootstrap(),
                   toxiproxy_pid=deployment.toxiproxy.pid if deployment.toxiproxy else None)

    # --- shared things, held by several faults at once ------------------------------
    def claim(self, thing: tuple[str, str], fault_id: str, value: Any = True) -> bool:
        """Hold `thing` for `fault_id`; True if nobody held it before (the caller acts)."""
        with self.lock:
            holders = self.claims.setdefault(thing, {})
            first = not holders
            holders[fault_id] = value
            return first

    def release(self, thing: tuple[str, str], fault_id: str) -> bool:
        """Let go of `thing`; True if `fault_id` was its last holder (the caller undoes)."""
        with self.lock:
            holders = self.claims.get(thing)
            if not holders or fault_id not in holders:
                return False
            del holders[fault_id]
            if holders:
                return False
            del self.claims[thing]
            return True

    def holders(self, thing: tuple[str, str]) -> dict[str, Any]:
        with self.lock:
            return dict(self.claims.get(thing, {}))

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise FaultError(f"no node named {name!r}; known: {', '.join(sorted(self.nodes))}", certain=True) from None

    def require_toxiproxy(self) -> Toxiproxy:
        if self.toxiproxy is None:
            raise FaultError("network faults need Toxiproxy, and this run has none", certain=True)
        return self.toxiproxy


class Fault:
    """One fault on its target nodes. Subclasses implement `_apply` / `_heal` on already
    resolved targets; `apply` / `heal` make both idempotent."""

    kind: ClassVar[str] = "?"
    # apply/heal may block for seconds (a node start): the nemesis runs them off its clock thread
    slow: ClassVar[bool] = False
    # the effect is over as soon as apply returns (a graceful restart): heal right away
    instant: ClassVar[bool] = False

    def __init__(self, fault_id: str, context: Context, targets: list[str], params: dict[str, Any]) -> None:
        self.id = fault_id
        self.context = context
        self.targets = list(targets)
        self.params = dict(params)
        self.applied = False
        self.details: dict[str, Any] = {}
        self.role: dict[str, Any] = {}  # topic / partition of a kafka-leader target
        self._lock = threading.RLock()

    # --- what a fault kind provides -----------------------------------------------
    def _apply(self) -> None:
        raise NotImplementedError

    def _heal(self) -> None:
        raise NotImplementedError

    def resolve(self) -> None:
        """Replace Kafka roles among the targets (`kafka-leader`, `kafka-controller`) by the
        nodes holding them now, just before applying: a leader changes over time."""
        from onceproof.faults import selectors

        if not any(selectors.is_role(t) for t in self.targets):
            return
        out: list[str] = []
        roles: dict[str, str] = {}
        for t in self.targets:
            name = t
            if selectors.is_role(t):
                name = roles[t] = selectors.resolve_role(self.context, t, self.role.get("topic"),
                                                         int(self.role.get("partition") or 0))
            if name not in out:
                out.append(name)
        self.details["roles"] = roles
        self.targets = out

    # --- the interface --------------------------------------------------------------
    def apply(self) -> None:
        with self._lock:
            if self.applied:
                return
            self.resolve()
            self.applied = True  # before acting: a half-applied fault must still be healed
            try:
                self._apply()
            except FaultError as e:
                if e.certain:  # raised before anything was changed
                    self.applied = False
                raise

    def heal(self) -> None:
        with self._lock:
            if not self.applied:
                return
            self._heal()
            self.applied = False

    def describe(self) -> dict[str, Any]:
        return {"fault": self.id, "kind": self.kind, "targets": list(self.targets), **self.params, **self.details}

    def __repr__(self) -> str:
        return f"<{self.kind} {self.id} {','.join(self.targets)}{' applied' if self.applied else ''}>"


@dataclass(frozen=True)
class FaultKind:
    """A registered kind: its class, and how to validate its parameters from a plan."""

    name: str
    cls: type[Fault]
    # params as written in the plan (target keys removed) -> normalised params; raises
    # ParamError(field, message) on bad input
    parse: Callable[[dict[str, Any]], dict[str, Any]]
    targets: str  # "process" (any node), "server" (has a proxy: not a pipeline replica), "clock"
    summary: str = ""


class ParamError(OnceproofError, ValueError):
    """A bad parameter: `field` names it, the message says what was expected with an example."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


KINDS: dict[str, FaultKind] = {}


def kind(name: str, parse: Callable[[dict[str, Any]], dict[str, Any]], targets: str = "process",
         summary: str = "") -> Callable[[type[Fault]], type[Fault]]:
    """Class decorator: register a fault kind under `name`."""

    def register(cls: type[Fault]) -> type[Fault]:
        cls.kind = name
        KINDS[name] = FaultKind(name, cls, parse, targets, summary)
        return cls

    return register


def known_kinds() -> dict[str, FaultKind]:
    """Every registered kind (importing the family modules registers them)."""
    from onceproof.faults import clock, netns, network, process  # noqa: F401 - imported for their registrations

    return KINDS
