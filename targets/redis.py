"""A Redis server node. It asks for a password made per run (`requirepass`, written in a 0600
config file, never on the command line where `ps` shows it; every URL and client of ours
carries it), keeps protected mode on, and when we are root runs as the unprivileged `redis`
account (else `nobody`), as PostgreSQL does, with its data folder owned by that account."""
from __future__ import annotations

import os
import pwd
import secrets
import shutil
from typing import TYPE_CHECKING, Any, Literal

from onceproof.targets.kinds import Section, SingleServer, TargetKind
from onceproof.targets.process import Node

if TYPE_CHECKING:
    import redis

    from onceproof.targets.runtime import Runtime

PERSISTENCE = {
    "none": ["--appendonly", "no", "--save", ""],
    "aof-everysec": ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""],
    "aof-always": ["--appendonly", "yes", "--appendfsync", "always", "--save", ""],
}


def run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root: `redis`, else `nobody`."""
    if os.geteuid() != 0:
        return None
    for name in ("redis", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None  # pragma: no cover - every Linux has nobody


def client(host: str, port: int, timeout: float = 2.0, db: int = 0, password: str | None = None) -> redis.Redis:
    """A client whose timeouts are deterministic: redis-py retries by default (a 1 s timeout
    became 15.6 s against a partitioned host), so no retries here. `password`: the node's."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=host, port=port, db=db, socket_timeout=timeout, socket_connect_timeout=timeout,
                       retry=Retry(NoBackoff(), 0), decode_responses=True, password=password)


class RedisNode(Node):
    kind = "redis"

    def __init__(self, runtime: "Runtime", name: str = "redis", persistence: str = "aof-everysec",
                 replicaof: "RedisNode | None" = None) -> None:
        if persistence not in PERSISTENCE:
            raise ValueError(f"redis persistence must be one of {sorted(PERSISTENCE)}, not {persistence!r}")
        super().__init__(runtime, name)
        self.persistence = persistence
        self.replicaof = replicaof  # a replica of that primary (its own data comes from it)
        # a replica shares its primary's password (it authenticates to it with it, and a client
        # moved from one to the other keeps working)
        self.password: str = replicaof.password if replicaof else secrets.token_urlsafe(24)
        self.config = self.data_dir / "redis.conf"

    @staticmethod
    def binary() -> str | None:
        return shutil.which("redis-server")

    def prepare(self) -> None:
        with os.fdopen(os.open(self.config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(f"requirepass {self.password}\nmasterauth {self.password}\n")
        owner = run_as()
        if owner:
            for p in (self.data_dir, self.config):
                os.chown(p, owner.pw_uid, owner.pw_gid)

    def spawn_kwargs(self) -> dict[str, Any]:
        owner = run_as()
        return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []} if owner else {}

    def command(self) -> list[str]:
        return [self.binary() or "redis-server", str(self.config), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.data_dir), "--protected-mode", "yes", "--daemonize", "no",
                *PERSISTENCE[self.persistence], *self._replication()]

    def _replication(self) -> list[str]:
        if self.replicaof is None:
            return []
        # a short repl-timeout: a cut link is noticed (and resynced after heal) in seconds
        return ["--replicaof", self.replicaof.host, str(self.replicaof.port), "--repl-timeout", "5",
                "--repl-ping-replica-period", "1"]

    def ready(self) -> bool:
        # PING answers while Redis loads its data (-LOADING); a real read does not.
        c = client(self.host, self.port, timeout=0.5, password=self.password)
        try:
            c.get("onceproof:ready-probe")
            return True
        finally:
            c.close()

    def url(self, host: str | None = None, port: int | None = None) -> str:
        return f"redis://:{self.password}@{host or self.host}:{port or self.port}/0"


class RedisTarget(Section):
    """`targets: {redis: {persistence: ...}}`."""

    persistence: Literal["none", "aof-everysec", "aof-always"] = "aof-everysec"


def _build(runtime: "Runtime", section: RedisTarget, groups: tuple[str, ...]) -> SingleServer:
    node = RedisNode(runtime, persistence=section.persistence)
    return SingleServer(node, node.url)


TARGET = TargetKind(name="redis", section=RedisTarget, build=_build, node_names=lambda section: ["redis"],
                    env="ONCEPROOF_REDIS_URL", endpoint_name="url")
