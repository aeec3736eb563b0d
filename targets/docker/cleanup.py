"""Removal of everything of a run in the container engine: the containers, networks and
volumes labelled `io.onceproof.run=<run id>` (engine.LABEL). What the docker runtime's
close() does, and what `onceproof cleanup` does for a run killed with SIGKILL (the run's
ledger entry names the engine). Only objects carrying the run's label are touched."""
from __future__ import annotations

from onceproof.targets.docker.engine import LABEL, EngineError, client


def leftovers(run_id: str) -> list[str]:
    """`container <name>`, `network <name>`, `volume <name>` for everything still labelled with
    `run_id`. Raises EngineError if the engine does not answer."""
    c = client(timeout=30)
    flt = {"label": f"{LABEL}={run_id}"}
    return ([f"container {x.name}" for x in c.containers.list(all=True, filters=flt)]
            + [f"network {x.name}" for x in c.networks.list(filters=flt)]
            + [f"volume {x.name}" for x in c.volumes.list(filters=flt)])


def remove_labelled(run_id: str) -> list[str]:
    """Remove (forcibly: a running or paused container is killed) every container, then
    network, then volume labelled with `run_id`, with each container's anonymous volumes.
    Returns one line per thing removed. Raises EngineError if the engine does not answer."""
    import docker

    if not run_id:
        raise ValueError("refusing to remove by an empty run id")
    c = client(timeout=60)
    flt = {"label": f"{LABEL}={run_id}"}
    removed = []
    for container in c.containers.list(all=True, filters=flt):
        if container.labels.get(LABEL) != run_id:
            continue
        try:
            if container.status == "paused":
                container.unpause()
            container.remove(force=True, v=True)
            removed.append(f"container {container.name}")
        except docker.errors.NotFound:
            pass
    for network in c.networks.list(filters=flt):
        if (network.attrs.get("Labels") or {}).get(LABEL) != run_id:
            continue
        try:
            network.remove()
            removed.append(f"network {network.name}")
        except docker.errors.NotFound:
            pass
    for volume in c.volumes.list(filters=flt):
        try:
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
        except docker.errors.NotFound:
            pass
    return removed


__all__ = ["EngineError", "leftovers", "remove_labelled"]
