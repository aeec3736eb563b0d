"""A PostgreSQL primary with a hot streaming standby, as one target (`targets: {postgres:
{standby: true}}`, local runtime only).

Nodes: `postgres` (the primary, read-write) and `postgres-standby` (a hot standby cloned from the
primary with `pg_basebackup -R` once the primary serves, `hot_standby = on`, read-only). The
standby streams WAL from the primary THROUGH A TOXIPROXY PROXY of its own, `replication-
postgres-standby` (client group `replication`), so that a network fault on `postgres-standby`
with `from: replication` (latency, partition, bandwidth, ...) slows or cuts the replication link
and the standby falls behind the primary; `from: pipeline` acts, as for any node, on the
pipeline's own connections to the standby. kill / pause / restart act on the standby's processes
like on any node's.

The pipeline finds the primary in ONCEPROOF_POSTGRES_DSN (as without a standby) and the standby
in ONCEPROOF_POSTGRES_STANDBY_DSN (the pipeline's role: the standby is a clone, same roles and
passwords), both through the `pipeline` group's proxies. Source of the set-up: PostgreSQL's
manual, "High Availability, Load Balancing, and Replication", 27.2 Log-Shipping Standby Servers
and 27.4 Hot Standby."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from onceproof.targets.kinds import Where
from onceproof.targets.postgres import PostgresNode, PostgresStandby

if TYPE_CHECKING:
    from onceproof.targets.process import Node
    from onceproof.targets.runtime import Runtime

STANDBY = "postgres-standby"  # the standby's node name (fault targets use it)
STANDBY_ENV = "ONCEPROOF_POSTGRES_STANDBY_DSN"
REPLICATION_GROUP = "replication"  # the proxy group of the standby's WAL stream


class ProxiedStandby(PostgresStandby):
    """PostgresStandby whose WAL stream reaches the primary at `upstream` (host, port): the
    replication proxy, set by the deployment before the first start (None: the primary itself)."""

    upstream: tuple[str, int] | None = None

    def prepare(self) -> None:
        super().prepare()
        if self.upstream is not None:
            host, port = self.upstream
            # pg_basebackup -R wrote primary_conninfo for the primary's own address; a later line
            # of postgresql.auto.conf wins (PostgreSQL manual, 20.1.2 "Parameter Interaction")
            with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
                conf.write(f"primary_conninfo = 'host={host} port={port} user={self.primary_user} "
                           f"password={self.password} application_name={self.name}'\n")

    @property
    def primary_user(self) -> str:
        from onceproof.targets.postgres import USER

        return USER


class PrimaryWithStandby:
    """The `postgres` target with a standby: nodes [primary, standby] (the primary first, so
    the harness's own sources, sinks and observer, which take a target's first node, use it).
    Implements targets.kinds.Target, plus `replication_links` (the deployment puts a proxy on
    each) and `extra_endpoints` (the standby's DSN for the pipeline)."""

    def __init__(self, runtime: "Runtime", fsync: bool) -> None:
        self.primary = PostgresNode(runtime, fsync=fsync)
        self.standby = ProxiedStandby(runtime, self.primary, STANDBY)

    @property
    def nodes(self) -> Sequence["Node"]:
        return [self.primary, self.standby]

    def start(self, timeout: float) -> None:
        """Start the primary, then clone and start the standby (pg_basebackup needs a running
        primary). Raises NodeError."""
        self.primary.start()
        self.standby.start()

    def endpoint(self, where: Where, pipeline: bool = False) -> str:
        """The primary's DSN (the standby's is in `extra_endpoints`)."""
        return (self.primary.pipeline_dsn if pipeline else self.primary.dsn)(*where(self.primary))

    def extra_endpoints(self, where: Where, pipeline: bool = False) -> dict[str, str]:
        """{ONCEPROOF_POSTGRES_STANDBY_DSN: the standby's DSN at `where(standby)`}."""
        dsn: Callable[[str, int], str] = self.standby.pipeline_dsn if pipeline else self.standby.dsn
        return {STANDBY_ENV: dsn(*where(self.standby))}

    def replication_links(self) -> list[tuple["Node", "Node"]]:
        """(replica, the node it streams from): the deployment routes each through a proxy of
        group `replication` named `replication-<replica>`."""
        return [(self.standby, self.primary)]

    def route_replication(self, replica: "Node", host: str, port: int) -> None:
        """Make `replica` stream through host:port (before its first start)."""
        assert replica is self.standby
        self.standby.upstream = (host, port)
