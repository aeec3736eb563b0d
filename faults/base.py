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

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

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
    # the runtimes that can carry this kind out (a Toxiproxy toxic needs `local`'s proxies, an
    # iptables cut needs `netns`'s hosts): a plan asking for it elsewhere is refused when read
    runtimes: ClassVar[tuple[str, ...]] = ("local", "netns", "docker")

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


class Params(BaseModel):
    """A fault kind's parameters, declared as fields (`Field(description=..., examples=[...])`,
    readers from faults/params.py in `Annotated[...]`), like a Toxiproxy toxic's struct tags.
    Keys are written with hyphens in a plan (`restart_after` is `restart-after`)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=lambda n: n.replace("_", "-"),
                              frozen=True)


class NoParams(Params):
    """The parameters of a kind that takes none."""


@dataclass(frozen=True)
class Marks:
    """How the report marks a process fault on its target's lane: the verb of the mark at
    heal (the mark at apply is the kind's own name and `FaultKind.marker`) and its plotly symbol."""

    heal: str
    heal_marker: str = "circle-open"


@dataclass(frozen=True)
class FaultKind:
    """Everything about a registered kind: its class, its parameters (a `Params` model), what
    it may target, a one-line summary, the parameters a random fault of it gets, and how the
    report draws it (window colour, plotly marker symbol, lane marks of a process fault)."""

    name: str
    cls: type[Fault]
    params: type[Params] = NoParams
    targets: str = "process"  # "process" (any node), "server" (has a proxy: not a pipeline replica), "clock"
    summary: str = ""
    # parameters of a random fault when the plan does not say; a list value: one is drawn per fault
    random_defaults: dict[str, Any] = field(default_factory=dict)
    colour: str = "#7f7f7f"  # the fault window in the report's timeline
    marker: str = "circle"  # plotly symbol of its mark at apply
    marks: Marks | None = None  # a process fault: marks on its target's lane at apply and heal

    def decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        """The kind's parameters as written in a plan (target keys removed) -> normalised
        values (durations in seconds, defaults filled in, unset optional ones left out).
        Raises ParamError(field, message): the message says what was expected, with an example."""
        fields = {(f.alias or n): f for n, f in self.params.model_fields.items()}
        for key in raw:
            if key not in fields:
                raise ParamError(str(key), f"is not a parameter of {self.name}; its parameters are: "
                                 f"{', '.join(sorted(fields)) or '(none)'}")
        try:
            model = self.params.model_validate(raw)
        except ValidationError as e:
            raise self._explain(e.errors()[0], fields) from None
        return model.model_dump(by_alias=True, exclude_none=True)

    def _explain(self, err: Any, fields: dict[str, FieldInfo]) -> ParamError:
        name = str(err["loc"][0]) if err["loc"] else None
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, ParamError):
            return ParamError(cause.field or name, cause.message)
        if err["type"] == "missing" and name in fields:
            info = fields[name]
            gloss = f", {info.description}" if info.description else ""
            example = (", such as " + " or ".join(f"{name}: {x}" for x in info.examples)) if info.examples else ""
            return ParamError(name, f"{self.name} needs `{name}`{gloss}{example}")
        message = str(err["msg"]).removeprefix("Value error, ").replace("Input should be", "expected")
        return ParamError(name, f"{message}, got {err.get('input')!r}")


class ParamError(OnceproofError, ValueError):
    """A bad parameter: `field` names it, the message says what was expected with an example."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


KINDS: dict[str, FaultKind] = {}


def kind(name: str, *, params: type[Params] = NoParams, targets: str = "process", summary: str,
         random: dict[str, Any], colour: str, marker: str = "circle",
         marks: Marks | None = None) -> Callable[[type[Fault]], type[Fault]]:
    """Class decorator: register a fault kind under `name`, with everything about it.

    `params`: its parameters as a `Params` model. `targets`: "process" (any node), "server" (a
    node behind a proxy) or "clock". `random`: the parameters a random fault of this kind gets
    when the plan's `with:` does not say (a list value: one is drawn per fault; `{}` for none).
    `colour` (CSS colour of its window in the report), `marker` (plotly symbol of its mark),
    `marks` (a process fault: its marks on the target's lane). Raises ValueError if `name` is
    taken or a random default is not one of its parameters."""

    def register(cls: type[Fault]) -> type[Fault]:
        if name in KINDS:
            raise ValueError(f"fault kind {name!r} is registered twice ({KINDS[name].cls.__name__}, {cls.__name__})")
        fields = {(f.alias or n) for n, f in params.model_fields.items()}
        unknown = set(random) - fields
        if unknown:
            raise ValueError(f"{name}: random defaults {sorted(unknown)} are not among its parameters {sorted(fields)}")
        cls.kind = name
        KINDS[name] = FaultKind(name, cls, params, targets, summary, dict(random), colour, marker, marks)
        return cls

    return register


def known_kinds() -> dict[str, FaultKind]:
    """Every registered kind by name (the faults package imports every family once, so this
    is complete as soon as anything of `onceproof.faults` is imported)."""
    return KINDS


# --- what the report draws, from the kinds -------------------------------------------
def fault_colours() -> dict[str, str]:
    """Kind -> CSS colour of its window in the report's timeline."""
    return {k.name: k.colour for k in KINDS.values()}


def marker_symbols() -> dict[str, str]:
    """Verb of a lane mark (a kind's name at apply, its `marks.heal` at heal) -> plotly symbol."""
    out = {k.name: k.marker for k in KINDS.values()}
    for k in KINDS.values():
        if k.marks is not None:
            out.setdefault(k.marks.heal, k.marks.heal_marker)
    return out


def process_marks() -> dict[str, tuple[str, str]]:
    """Process kinds -> (verb of the mark at apply, verb of the mark at heal), e.g.
    `{"kill": ("kill", "restart"), ...}`: the report marks these on their target's lane."""
    return {k.name: (k.name, k.marks.heal) for k in KINDS.values() if k.marks is not None}
