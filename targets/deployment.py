"""A run's targets: the plan's targets (every kind in targets/kinds.py: Kafka, Redis,
PostgreSQL) built on a runtime, with a fault proxy in front of every client port, one set of
proxies per client group.

Client groups: `pipeline` (the pipeline under test) and `load` (the workload generator).
The observer and the harness reach the nodes directly, so a partition of the pipeline never
blinds the judge."""
from __future__ import annotations

import concurrent.futures
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator, TypeVar

from onceproof.targets.kafka import KafkaCluster
from onceproof.targets.kinds import Section, Target, target_kinds
from onceproof.targets.postgres import PostgresNode
from onceproof.targets.process import Node
from onceproof.targets.redis import RedisNode
from onceproof.targets.runtime import Runtime
from onceproof.targets.toxiproxy import ToxiproxyNode

GROUPS = ("pipeline", "load")
N = TypeVar("N", bound=Node)


@dataclass
class TargetsSpec:
    """Which targets a run has. `sections` maps a target kind's name to its plan section (the
    kind's pydantic model, or a dict of its fields; None = no such target).

    The keyword shorthands below are for tests and benchmarks; each adds its kind's section
    unless `sections` already has one. Raises pydantic.ValidationError (a ValueError) from
    `resolved()` for a bad value, KeyError for an unknown kind."""

    kafka_nodes: int = 0  # shorthand: sections["kafka"] = {"nodes": kafka_nodes}
    redis: str | None = None  # shorthand: sections["redis"] = {"persistence": redis}
    postgres: bool = False  # shorthand: sections["postgres"] = {"fsync": postgres_fsync}
    postgres_fsync: bool = True
    groups: tuple[str, ...] = GROUPS
    sections: Mapping[str, Section | dict[str, Any] | None] = field(default_factory=dict)

    def resolved(self) -> dict[str, Section]:
        """Kind name -> validated section, for every target the run has, in registry order."""
        given = {name: section for name, section in self.sections.items() if section is not None}
        if self.kafka_nodes:
            given.setdefault("kafka", {"nodes": self.kafka_nodes})
        if self.redis:
            given.setdefault("redis", {"persistence": self.redis})
        if self.postgres:
            given.setdefault("postgres", {"fsync": self.postgres_fsync})
        kinds = target_kinds()
        unknown = sorted(set(given) - set(kinds))
        if unknown:
            raise KeyError(f"no target kind {unknown[0]!r}; known: {', '.join(kinds)}")
        return {name: kind.section.model_validate(given[name]) for name, kind in kinds.items() if name in given}


@dataclass
class Proxy:
    name: str  # "<group>-<node>"
    group: str
    node: str
    listen: int
    upstream: str


@dataclass
class Deployment:
    """The run's targets by kind name (`targets`, in registry order), the Toxiproxy server in
    front of them (None on a runtime without client proxies) and its proxies by name."""

    runtime: Runtime
    spec: TargetsSpec
    toxiproxy: ToxiproxyNode | None = None
    targets: dict[str, Target] = field(default_factory=dict)
    proxies: dict[str, Proxy] = field(default_factory=dict)
    intruders: list[str] = field(default_factory=list)  # Toxiproxy proxies found that were not ours

    # --- building -----------------------------------------------------------------
    @classmethod
    def create(cls, runtime: Runtime, spec: TargetsSpec) -> "Deployment":
        """Build (not start) the targets `spec` asks for on `runtime`, and plan one proxy per
        client group in front of every server node. Raises ValueError/KeyError for a bad spec."""
        d = cls(runtime, spec)
        # netns: every node is a host of its own and clients reach it at its own address;
        # partitions are iptables rules between hosts, so no proxy sits in between
        # a runtime with nodes of its own kind (docker: containers) builds them (`build_target`)
        own = getattr(runtime, "build_target", None)
        if runtime.client_proxies:
            d.toxiproxy = own("toxiproxy", None, spec.groups) if own else ToxiproxyNode(runtime)
        kinds = target_kinds()
        for name, section in spec.resolved().items():
            d.targets[name] = own(name, section, spec.groups) if own else kinds[name].build(runtime, section, spec.groups)
        for node in d.servers() if d.toxiproxy is not None else []:
            for group in spec.groups:
                proxy = Proxy(f"{group}-{node.name}", group, node.name, runtime.free_port(), node.listener(group))
                d.proxies[proxy.name] = proxy
                node.advertise(group, "127.0.0.1", proxy.listen)
        for target in d.targets.values() if d.toxiproxy is not None else []:
            # a replica's own stream from its primary (a PostgreSQL standby's WAL): a proxy of
            # group `replication`, so that network faults `from: replication` act on the link
            for replica, primary in getattr(target, "replication_links", list)():
                proxy = Proxy(f"replication-{replica.name}", "replication", replica.name, runtime.free_port(),
                              primary.listener("replication"))
                d.proxies[proxy.name] = proxy
                target.route_replication(replica, "127.0.0.1", proxy.listen)  # type: ignore[attr-defined]
        if d.toxiproxy is not None:
            d.toxiproxy.proxy_ports += [p.listen for p in d.proxies.values()]
        return d

    @classmethod
    def from_plan(cls, runtime: Runtime, sections: Mapping[str, Section | None],
                  groups: tuple[str, ...] = GROUPS) -> "Deployment":
        """`create` for a plan's `targets:` given as kind name -> section (None = absent),
        e.g. `Plan.targets.sections()`."""
        return cls.create(runtime, TargetsSpec(groups=groups, sections=dict(sections)))

    def target(self, kind: str) -> Target | None:
        """The run's target of that kind, or None if it has none."""
        return self.targets.get(kind)

    def servers(self) -> list[Node]:
        """Every target's server nodes, in registry order (no Toxiproxy, no pipeline)."""
        return [n for t in self.targets.values() for n in t.nodes]

    def nodes(self) -> dict[str, Node]:
        """Every node by its name (the names fault targets use)."""
        out = {n.name: n for n in self.servers()}
        if self.toxiproxy:
            out[self.toxiproxy.name] = self.toxiproxy
        return out

    def start(self, timeout: float = 60.0) -> None:
        """Start Toxiproxy with its proxies and every target, all at once (a proxy's upstream is
        known before its server listens: a client that connects early is refused, as by a
        server still starting); return when all serve. `timeout` (s) bounds a cluster's wait
        for its peers. Raises NodeError, ToxiproxyError (the first job's error, after every
        job ended)."""
        def proxies() -> None:
            assert self.toxiproxy is not None
            self.toxiproxy.start()
            for p in self.proxies.values():
                self.toxiproxy.api.create(p.name, f"127.0.0.1:{p.listen}", p.upstream)
            self.intruders += self.toxiproxy.api.check(set(self.proxies))

        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            jobs = [pool.submit(proxies)] if self.toxiproxy is not None else []
            jobs += [pool.submit(t.start, timeout) for t in self.targets.values()]
            for j in jobs:
                j.result()

    def stop(self) -> None:
        """End every node (`Node.teardown`: Kafka killed, the others stopped gracefully) and
        remove the run's scratch space. Raises RuntimeError listing the nodes that failed to
        end, after trying all of them."""
        errors = []
        if self.toxiproxy is not None and self.toxiproxy.alive:
            try:  # a proxy someone else made while the run went on makes the run's teardown fail
                self.intruders += self.toxiproxy.api.check(set(self.proxies))
            except Exception as e:  # noqa: BLE001 - keep tearing down
                errors.append(f"toxiproxy: {e}")
        errors += [f"removed {what}" for what in self.intruders]
        for node in [*self.servers(), *([self.toxiproxy] if self.toxiproxy else [])]:
            try:
                if node.paused:
                    node.resume()
                node.teardown()
            except Exception as e:  # noqa: BLE001 - keep tearing down the rest
                errors.append(f"{node.name}: {e}")
        self.runtime.close()
        if errors:
            raise RuntimeError("teardown: " + "; ".join(errors))

    # --- endpoints ----------------------------------------------------------------
    def _proxied(self, group: str, node: Node) -> tuple[str, int]:
        p = self.proxies.get(f"{group}-{node.name}")
        return ("127.0.0.1", p.listen) if p else (node.host, node.port)

    def endpoint(self, kind: str, group: str | None = None) -> str:
        """How a client reaches the target `kind`: through client group `group`'s proxies, or
        directly (None). "" if the run has no such target. The `pipeline` group gets the
        pipeline's own credentials (PostgreSQL: a role that is not a superuser)."""
        target = self.targets.get(kind)
        if target is None:
            return ""
        if group is None:
            return target.endpoint(lambda n: (n.host, n.port))
        return target.endpoint(lambda n: self._proxied(group, n), pipeline=group == "pipeline")

    def pipeline_env(self) -> dict[str, str]:
        """Each target kind's `ONCEPROOF_*` variable (ONCEPROOF_KAFKA_BOOTSTRAP, ...) -> its
        endpoint through the `pipeline` group's proxies; "" for a kind the run does not have."""
        out = {kind.env: self.endpoint(name, "pipeline") for name, kind in target_kinds().items()}
        for target in self.targets.values():  # a target with more than one endpoint (a standby)
            extra = getattr(target, "extra_endpoints", None)
            if extra is not None:
                out.update(extra(lambda n: self._proxied("pipeline", n), pipeline=True))
        return out

    def endpoints(self) -> Iterator[tuple[str, str, str]]:
        """(node, direct address, proxied addresses) for display."""
        for n in self.servers():
            proxied = ", ".join(f"{p.group}=127.0.0.1:{p.listen}" for p in self.proxies.values() if p.node == n.name)
            yield n.name, n.address, proxied

    # --- shortcuts for the harness's Kafka, Redis and PostgreSQL sources and sinks ------
    @property
    def kafka(self) -> KafkaCluster | None:
        target = self.targets.get("kafka")
        return target if isinstance(target, KafkaCluster) else None

    @property
    def redis(self) -> RedisNode | None:
        return self._only("redis", RedisNode)

    @property
    def postgres(self) -> PostgresNode | None:
        return self._only("postgres", PostgresNode)

    def _only(self, kind: str, cls: type[N]) -> N | None:
        target = self.targets.get(kind)
        node = target.nodes[0] if target is not None and target.nodes else None
        return node if isinstance(node, cls) else None

    def kafka_bootstrap(self, group: str | None = None) -> str:
        """Bootstrap servers for a client group (through its proxies), or direct (None)."""
        return self.endpoint("kafka", group)

    def redis_url(self, group: str | None = None) -> str:
        """`redis://host:port/0` for a client group (through its proxy), or direct (None)."""
        return self.endpoint("redis", group)

    def postgres_dsn(self, group: str | None = None) -> str:
        """`postgresql://user:password@host:port/db` for a client group, or direct (None)."""
        return self.endpoint("postgres", group)
