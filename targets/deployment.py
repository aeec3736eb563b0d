"""A run's targets: the plan's Kafka / Redis / PostgreSQL nodes on a runtime, with a fault
proxy in front of every client port, one set of proxies per client group.

Client groups: `pipeline` (the pipeline under test) and `load` (the workload generator).
The observer and the harness reach the nodes directly, so a partition of the pipeline never
blinds the judge."""
from __future__ import annotations

import concurrent.futures
from dataclasses import dataclass, field
from typing import Iterator

from onceproof.targets.kafka import KafkaCluster, KafkaNode
from onceproof.targets.postgres import PostgresNode
from onceproof.targets.process import Node
from onceproof.targets.redis import RedisNode
from onceproof.targets.runtime import Runtime
from onceproof.targets.toxiproxy import ToxiproxyNode

GROUPS = ("pipeline", "load")


@dataclass
class TargetsSpec:
    kafka_nodes: int = 0
    redis: str | None = None  # persistence: none | aof-everysec | aof-always; None = no redis
    postgres: bool = False
    postgres_fsync: bool = True
    groups: tuple[str, ...] = GROUPS


@dataclass
class Proxy:
    name: str  # "<group>-<node>"
    group: str
    node: str
    listen: int
    upstream: str


@dataclass
class Deployment:
    runtime: Runtime
    spec: TargetsSpec
    toxiproxy: ToxiproxyNode | None = None
    kafka: KafkaCluster | None = None
    redis: RedisNode | None = None
    postgres: PostgresNode | None = None
    proxies: dict[str, Proxy] = field(default_factory=dict)

    # --- building -----------------------------------------------------------------
    @classmethod
    def create(cls, runtime: Runtime, spec: TargetsSpec) -> "Deployment":
        d = cls(runtime, spec)
        # netns: every node is a host of its own and clients reach it at its own address;
        # partitions are iptables rules between hosts, so no proxy sits in between
        direct = not runtime.client_proxies
        d.toxiproxy = None if direct else ToxiproxyNode(runtime)
        if spec.kafka_nodes:
            d.kafka = KafkaCluster(runtime, spec.kafka_nodes, groups=spec.groups)
        if spec.redis:
            d.redis = RedisNode(runtime, persistence=spec.redis)
        if spec.postgres:
            d.postgres = PostgresNode(runtime, fsync=spec.postgres_fsync)
        for node in d.servers() if not direct else []:
            for group in spec.groups:
                if isinstance(node, KafkaNode):
                    upstream = f"{node.host}:{node.group_ports[group]}"
                else:
                    upstream = node.address
                proxy = Proxy(f"{group}-{node.name}", group, node.name, runtime.free_port(), upstream)
                d.proxies[proxy.name] = proxy
                if isinstance(node, KafkaNode):
                    node.advertise(group, "127.0.0.1", proxy.listen)
        return d

    def servers(self) -> list[Node]:
        out: list[Node] = list(self.kafka.nodes) if self.kafka else []
        out += [n for n in (self.redis, self.postgres) if n is not None]
        return out

    def nodes(self) -> dict[str, Node]:
        """Every node by its name (the names fault targets use)."""
        out = {n.name: n for n in self.servers()}
        if self.toxiproxy:
            out[self.toxiproxy.name] = self.toxiproxy
        return out

    def start(self, timeout: float = 60.0) -> None:
        if self.toxiproxy is not None:
            self.toxiproxy.start()
            for p in self.proxies.values():
                self.toxiproxy.api.create(p.name, f"127.0.0.1:{p.listen}", p.upstream)
        jobs = []
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            if self.kafka:
                jobs.append(pool.submit(self.kafka.start, timeout))
            for n in (self.redis, self.postgres):
                if n is not None:
                    jobs.append(pool.submit(n.start))
            for j in jobs:
                j.result()

    def stop(self) -> None:
        """Stop every node (Kafka killed, the others gracefully) and remove the run's scratch space."""
        errors = []
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

    def kafka_bootstrap(self, group: str | None = None) -> str:
        """Bootstrap servers for a client group (through its proxies), or direct (None)."""
        if not self.kafka:
            return ""
        if group is None:
            return self.kafka.bootstrap_direct
        return ",".join("%s:%d" % self._proxied(group, n) for n in self.kafka.nodes)

    def redis_url(self, group: str | None = None) -> str:
        if not self.redis:
            return ""
        host, port = self._proxied(group, self.redis) if group else (self.redis.host, self.redis.port)
        return self.redis.url(host, port)

    def postgres_dsn(self, group: str | None = None) -> str:
        if not self.postgres:
            return ""
        host, port = self._proxied(group, self.postgres) if group else (self.postgres.host, self.postgres.port)
        return self.postgres.dsn(host, port)

    def endpoints(self) -> Iterator[tuple[str, str, str]]:
        """(node, direct address, proxied addresses) for display."""
        for n in self.servers():
            proxied = ", ".join(f"{p.group}=127.0.0.1:{p.listen}" for p in self.proxies.values() if p.node == n.name)
            yield n.name, n.address, proxied
