"""The `docker` runtime: every node is a container on the run's own user-defined network
(`op-<run id>`), started through testcontainers; clients reach them through a Toxiproxy
container, at ports published on 127.0.0.1 only (so network faults are the same proxy toxics
as on `local`). It implements targets.runtime.Runtime, plus `build_target`, which
Deployment uses to make container nodes (targets/docker/nodes.py) instead of processes.

Like the local runtime it has scratch space (node configs and data, bind-mounted), the clock
shim and a ledger entry; the entry also names the engine, BEFORE anything is made in it, so
`onceproof cleanup` removes the run's labelled containers, network and volumes after a
SIGKILL (targets/docker/cleanup.py; Ryuk would need a registry)."""
from __future__ import annotations

import shutil

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from onceproof.targets.docker import cleanup, engine
from onceproof.targets.docker.images import DEFAULT_IMAGES
from onceproof.targets.kinds import Section, SingleServer, Target
from onceproof.targets.local import LocalRuntime


class DockerRuntime(LocalRuntime):
    """Containers on one network per run. `images`: kind -> image reference, overriding
    DEFAULT_IMAGES for kafka, redis, postgres, toxiproxy. Raises EngineError when no engine
    answers (nothing is left behind then)."""

    name = "docker"
    client_proxies = True  # the pipeline reaches the targets through the Toxiproxy container

    def __init__(self, run_id: str | None = None, log_dir: Path | None = None,
                 images: Mapping[str, str] | None = None) -> None:
        self.images = {**DEFAULT_IMAGES, **(images or {})}
        self.client = engine.client()  # fails before anything is made
        super().__init__(run_id, log_dir)
        self.entry.engine = engine.docker_host()
        self.entry.save()  # listed before the network exists: a SIGKILL from here on is cleaned up
        try:
            from testcontainers.core.network import Network

            self.network = Network(docker_network_kw={"labels": self.labels()})
            self.network.name = f"op-{self.run_id}"
            self.network.create()
        except BaseException:
            self.close()
            raise

    def labels(self, node: str | None = None) -> dict[str, str]:
        """The labels of everything this run makes in the engine (cleanup.py removes by them)."""
        out = {engine.LABEL: self.run_id}
        if node:
            out["io.onceproof.node"] = node
        return out

    def image(self, kind: str) -> str:
        """The image reference for a kind of node. Raises KeyError for an unknown kind."""
        return self.images[kind]

    def build_target(self, kind: str, section: Section | None, groups: tuple[str, ...]) -> Any:
        """The container version of target `kind` (`toxiproxy`: the proxy's node). Raises
        KeyError for a kind with no container version."""
        from onceproof.targets.docker import nodes

        s: Any = section
        if kind == "toxiproxy":
            return nodes.DockerToxiproxy(self)
        if kind == "redis":
            redis = nodes.DockerRedis(self, persistence=s.persistence)
            return SingleServer(redis, redis.url)
        if kind == "postgres":
            pg = nodes.DockerPostgres(self, fsync=s.fsync)
            return SingleServer(pg, pg.dsn, pipeline_url=pg.pipeline_dsn)
        if kind == "kafka":
            cluster: Target = nodes.DockerKafkaCluster(self, s.nodes, groups=groups)
            return cluster
        raise KeyError(f"the docker runtime has no container for target kind {kind!r}")

    def close(self) -> None:
        """Remove every container, network and volume labelled with the run id, then the scratch
        space and the ledger entry. Idempotent."""
        if self.closed:
            return
        try:
            cleanup.remove_labelled(self.run_id)
        except BaseException:
            # the engine failed to remove them: the ledger entry stays, so `onceproof cleanup`
            # removes them later (found: a container left after the engine broke mid-run)
            self.closed = True
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        super().close()
