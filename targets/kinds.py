"""The target registry: every kind of target a plan can ask for (`targets: {kafka: ...}`), and
what the harness needs to know of each, declared by the kind's own module as its `TARGET`:

- its plan section, a small pydantic model (`KafkaTarget`: `nodes`);
- how to build its nodes on a runtime (`build(runtime, section, groups) -> Target`);
- the names its nodes will have, known from the plan alone (fault targets are checked
  before anything starts);
- the `ONCEPROOF_*` variable that tells the pipeline where it is, and the word for that
  endpoint (`bootstrap`, `url`, `dsn`).

targets/deployment.py, the plan schema and `onceproof up` only iterate `target_kinds()`.
Adding a target means writing its module with a `TARGET` and naming the module in `MODULES`
(plus, in harness/, the sources and sinks that read and write it). Toxiproxy is not a target
kind: it is the infrastructure in front of all of them."""
from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from onceproof.targets.process import Node
    from onceproof.targets.runtime import Runtime

# the modules that declare a TARGET, in the order a plan lists them and nodes are named
MODULES = ("kafka", "redis", "postgres")


def _hyphen(name: str) -> str:
    return name.replace("_", "-")


class Section(BaseModel):
    """Base of a target's plan section: unknown fields are errors (the plan loader says which
    and suggests the closest), and multi-word fields are written with hyphens."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=_hyphen)


Where = Callable[["Node"], tuple[str, int]]  # node -> (host, port) a client connects to


class Target(Protocol):
    """One target of a run, built on a runtime: its server nodes, how to start them, and how a
    client reaches it."""

    @property
    def nodes(self) -> Sequence[Node]:
        """Its server nodes, in the order their names sort (kafka-1, kafka-2, ...)."""

    def start(self, timeout: float) -> None:
        """Start every node and return when the target serves. `timeout` (s) bounds a cluster's
        wait for its peers; a single server waits its own `start_timeout`. Raises NodeError."""

    def endpoint(self, where: Where, pipeline: bool = False) -> str:
        """The connection string a client uses (`host:port,...`, `redis://...`, `postgresql://...`)
        when it reaches each node at `where(node)`; with `pipeline`, the one the pipeline under
        test gets (a target may give it fewer rights than the harness's own)."""


S = TypeVar("S", bound=Section)


@dataclass(frozen=True)
class TargetKind(Generic[S]):
    """What the harness knows of one kind of target (see the module docstring)."""

    name: str  # the key under `targets:` in a plan; also the start of its nodes' names
    section: type[S]  # its plan section
    build: Callable[[Runtime, S, tuple[str, ...]], Target]  # (runtime, section, client groups)
    node_names: Callable[[S], list[str]]  # the nodes `build` will make, from the section alone
    env: str  # the pipeline's variable holding its endpoint, e.g. ONCEPROOF_REDIS_URL
    endpoint_name: str  # what that endpoint is called: bootstrap, url, dsn


class SingleServer:
    """A target made of one server node (Redis, PostgreSQL); `url(host, port)` formats its
    endpoint."""

    def __init__(self, node: Node, url: Callable[[str, int], str],
                 pipeline_url: Callable[[str, int], str] | None = None) -> None:
        self.node = node
        self._url = url
        self._pipeline_url = pipeline_url or url

    @property
    def nodes(self) -> Sequence[Node]:
        return [self.node]

    def start(self, timeout: float) -> None:
        """Start the server and wait until it serves (its own start_timeout). Raises NodeError."""
        self.node.start()

    def endpoint(self, where: Where, pipeline: bool = False) -> str:
        return (self._pipeline_url if pipeline else self._url)(*where(self.node))


@functools.cache
def target_kinds() -> Mapping[str, TargetKind[Any]]:
    """Every target kind by name, in plan order (read-only). Imports the modules in MODULES."""
    out: dict[str, TargetKind[Any]] = {}
    for module in MODULES:
        kind = importlib.import_module(f"{__package__}.{module}").TARGET
        out[kind.name] = kind
    return MappingProxyType(out)


def target_kind(name: str) -> TargetKind[Any]:
    """The kind named `name`. Raises KeyError naming the known kinds."""
    kinds = target_kinds()
    try:
        return kinds[name]
    except KeyError:
        raise KeyError(f"no target kind {name!r}; known: {', '.join(kinds)}") from None
