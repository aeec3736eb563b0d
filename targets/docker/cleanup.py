"""Removal of everything of a run in the container engine: the containers, networks and
volumes labelled `io.onceproof.run=<run id>` (engine.LABEL). What the docker runtime's
close() does, and what `onceproof cleanup` does for a run killed with SIGKILL (the run's
ledger entry names the engine). Only objects carrying the run's label are touched."""
from __future__ import annotations

import time

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
    Containers in another's network namespace are removed before it; one the engine still
    refuses does not stop the rest. Returns one line per thing removed. Raises EngineError if
    the engine does not answer, or naming what it refused to remove (after removing the rest)."""
    import docker

    if not run_id:
        raise ValueError("refusing to remove by an empty run id")
    c = client(timeout=60)
    flt = {"label": f"{LABEL}={run_id}"}
    removed: list[str] = []
    mine = [x for x in c.containers.list(all=True, filters=flt) if x.labels.get(LABEL) == run_id]
    # a container in another's network namespace (a pipeline given as an image joins
    # Toxiproxy's: `network_mode: container:<id>`) goes first: the engine refuses to remove
    # the one it depends on before it ("has dependent containers")
    mine.sort(key=lambda x: not str((x.attrs.get("HostConfig") or {}).get("NetworkMode", "")).startswith("container:"))
    failed: list[tuple[str, Exception]] = []
    for _ in range(2):  # a second pass for what depended on something removed after it
        left, failed = [], []
        for container in mine:
            try:
                if container.status == "paused":
                    container.unpause()
                container.remove(force=True, v=True)
                removed.append(f"container {container.name}")
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                left.append(container)
                failed.append((f"container {container.name}", e))
        mine = left
        if not mine:
            break
    # by label and by name (`op-<run id>`, its side networks `op-<run id>-cut-<n>`; the engine's
    # name filter matches a part): a listing by label alone once came back without the run's
    # network right after its containers went (a trial's cleanup left it, saying nothing)
    networks = {n.id: n for n in c.networks.list(filters=flt) + c.networks.list(names=[f"op-{run_id}"])}
    for network in networks.values():
        if (network.attrs.get("Labels") or {}).get(LABEL) != run_id:
            continue
        for attempt in range(3):  # a container just removed may still hold it for a moment
            try:
                network.remove()
                removed.append(f"network {network.name}")
            except docker.errors.NotFound:
                pass
            except docker.errors.APIError as e:
                if attempt < 2:
                    time.sleep(0.5)
                    continue
                failed.append((f"network {network.name}", e))
            break
    for volume in c.volumes.list(filters=flt):
        try:
            volume.remove(force=True)
            removed.append(f"volume {volume.name}")
        except docker.errors.NotFound:
            pass
    if failed:
        raise EngineError("could not remove " + "; ".join(f"{n}: {e}" for n, e in failed)
                          + (f" (removed: {', '.join(removed)})" if removed else ""))
    return removed


__all__ = ["EngineError", "leftovers", "remove_labelled"]
