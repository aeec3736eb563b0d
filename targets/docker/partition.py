"""Cuts between the containers of a `docker` run, through the engine's network disconnect /
connect (the issue's "for broker-to-broker cuts, `network disconnect`/`connect`").

Every container of a run is on the run's network `op-<run id>`, reached by its node name (a
network alias). A partition into components keeps ONE component on that network (the one
holding the Toxiproxy container, through which every client reaches the servers; else the
largest, first of equals) and moves each other component to a side network of
its own (`op-<run id>-cut-<n>`, labelled with the run id so cleanup.py removes it after a
SIGKILL). The side network is `internal` (no gateway): a plain bridge network is NOT a cut on
podman/netavark, which routes between its bridges (measured: a container moved to a plain side
network still reached the run's network by IP, which a JVM keeps cached from DNS). Its members keep their aliases there, so they still reach each other by name, and
reach nobody else. Heal moves them back, with the same aliases AND the same IPv4 address they
had, then removes the side network: nothing is left disconnected.

What a disconnect can express is a partition into components (transitive: whoever shares a
network sees everyone on it). So `partition-isolate` (without `from`), `partition-halves`
and `partition-random-halves` work here; the bridge, majorities-ring and one-way shapes need
per-pair rules and stay netns-only (faults/netns.py declares this in each kind's `runtimes`).

Unlike the netns runtime, a component moved off the run's network is cut from the clients too
(the Toxiproxy container stays on the run's network): halves of a Kafka cluster are a minority
that nobody reaches and a majority that everybody does. Existing TCP connections to a moved
container break (its interface on the run's network is gone) instead of hanging.

    cut = DockerPartitioner(runtime).isolate(["kafka-1"])
    ...
    cut.heal()
"""
from __future__ import annotations

import itertools
import random
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

from onceproof.targets.docker.engine import EngineError

if TYPE_CHECKING:
    from onceproof.targets.docker.runtime import DockerRuntime

_ids = itertools.count(1)


@dataclass
class Moved:
    """One container taken off the run's network: where it went and how to put it back."""

    node: str
    container_id: str
    ip: str  # its IPv4 address on the run's network, given back on heal
    side: str  # the side network's name


@dataclass
class DockerCut:
    """What one call of the DockerPartitioner changed, and how to undo exactly that."""

    partitioner: "DockerPartitioner"
    shape: str
    components: list[list[str]] = field(default_factory=list)
    moved: list[Moved] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)  # side networks made for this cut
    healed: bool = False

    def heal(self) -> None:
        self.partitioner.heal_cut(self)

    def describe(self) -> dict[str, Any]:
        return {"shape": self.shape, "components": self.components,
                "moved": {m.node: m.side for m in self.moved}}


class DockerPartitioner:
    """Makes and heals cuts between the containers of one docker run. Raises EngineError for a
    name that is not a container of the run, or when the engine refuses a disconnect/connect."""

    def __init__(self, runtime: "DockerRuntime", rng: random.Random | None = None) -> None:
        self.runtime = runtime
        self.rng = rng or random.Random()
        self.cuts: list[DockerCut] = []
        self._lock = threading.Lock()

    # --- shapes (the netns Partitioner's names) -------------------------------------------
    def isolate(self, nodes: Iterable[str], from_: Iterable[str] | None = None) -> DockerCut:
        """`nodes` (talking among themselves) cut off from every other container of the run.
        `from_` (a subset to cut from) cannot be had by a disconnect: EngineError."""
        if from_:
            raise EngineError("partition-isolate with `from` needs per-pair rules (`runtime: netns`); on docker "
                              "the targets are cut off from every other container")
        inside = self._names(nodes)
        return self.partition([inside, [h for h in self.hosts() if h not in inside]], shape="isolate")

    def halves(self, nodes: Iterable[str]) -> DockerCut:
        """The first half (the smaller one when odd) against the rest, in the order given."""
        names = self._names(nodes)
        k = len(names) // 2
        return self.partition([names[:k], names[k:]], shape="halves")

    def random_halves(self, nodes: Iterable[str]) -> DockerCut:
        names = self._names(nodes)
        self.rng.shuffle(names)
        k = len(names) // 2
        return self.partition([names[:k], names[k:]], shape="random-halves")

    def partition(self, components: list[list[str]], shape: str = "partition") -> DockerCut:
        """Containers of different components cannot reach each other (see the module docstring
        for which component stays on the run's network)."""
        comps = [self._names(c) for c in components if c]
        seen: set[str] = set()
        for c in comps:
            if seen & set(c):
                raise EngineError(f"a container is in two components: {comps}")
            seen |= set(c)
        cut = DockerCut(self, shape, components=comps)
        if len(comps) < 2:
            return cut
        stay = next((c for c in comps if "toxiproxy" in c), None) or max(comps, key=len)
        with self._lock:
            self.cuts.append(cut)  # before acting: a half-applied cut is still healed
            for comp in comps:
                if comp is stay:
                    continue
                self._move(cut, comp)
        return cut

    # --- heal -------------------------------------------------------------------------------
    def heal(self) -> None:
        """Heal every cut this partitioner made (and nothing else)."""
        for cut in list(reversed(self.cuts)):
            self.heal_cut(cut)

    def heal_cut(self, cut: DockerCut) -> None:
        """Every moved container back on the run's network with its alias and IPv4 address,
        the side networks removed. Raises EngineError listing what could not be undone."""
        import docker

        with self._lock:
            if cut.healed:
                return
            errors = []
            client = self.runtime.client
            main = client.networks.get(self.runtime.network.name)
            for m in reversed(cut.moved):
                try:
                    client.networks.get(m.side).disconnect(m.container_id, force=True)
                except docker.errors.APIError as e:
                    if not _gone(e):
                        errors.append(f"{m.node} from {m.side}: {e}")
                try:
                    main.connect(m.container_id, aliases=[m.node], ipv4_address=m.ip or None)
                except docker.errors.APIError as e:
                    if not _already(e):
                        errors.append(f"{m.node} back to {main.name}: {e}")
            for name in cut.networks:
                try:
                    client.networks.get(name).remove()
                except docker.errors.APIError as e:
                    if not _gone(e):
                        errors.append(f"network {name}: {e}")
            cut.healed = True
            if cut in self.cuts:
                self.cuts.remove(cut)
            if errors:
                raise EngineError(f"healing {cut.shape}: " + "; ".join(errors))

    # --- inside -------------------------------------------------------------------------------
    def hosts(self) -> list[str]:
        """The node names of the run's containers on its network (a pipeline container sharing
        Toxiproxy's network namespace is not one: it goes where Toxiproxy goes)."""
        from onceproof.targets.docker.engine import LABEL

        out = []
        flt = {"label": f"{LABEL}={self.runtime.run_id}"}
        for c in self.runtime.client.containers.list(all=True, filters=flt):
            node = c.labels.get("io.onceproof.node")
            mode = str((c.attrs.get("HostConfig") or {}).get("NetworkMode") or "")
            if node and not mode.startswith("container:"):
                out.append(node)
        return sorted(out)

    def _names(self, nodes: Iterable[str] | None) -> list[str]:
        known = self.hosts()
        out: list[str] = []
        for n in nodes or []:
            if n not in known:
                raise EngineError(f"no container named {n!r} on the run's network; known: {', '.join(known)}")
            if n not in out:
                out.append(n)
        return out

    def _container(self, node: str) -> Any:
        return self.runtime.client.containers.get(f"op-{self.runtime.run_id}-{node}")

    def _move(self, cut: DockerCut, comp: list[str]) -> None:
        client = self.runtime.client
        run_net = self.runtime.network.name
        side = f"{run_net}-cut-{next(_ids)}"
        client.networks.create(side, driver="bridge", internal=True, labels=self.runtime.labels())
        cut.networks.append(side)
        main = client.networks.get(run_net)
        for node in comp:
            c = self._container(node)
            ip = ((c.attrs.get("NetworkSettings") or {}).get("Networks") or {}).get(run_net, {}).get("IPAddress", "")
            cut.moved.append(Moved(node, c.id, ip, side))  # before acting: healed even if the next call fails
            main.disconnect(c.id)
            client.networks.get(side).connect(c.id, aliases=[node])


def _gone(e: Exception) -> bool:
    text = str(e).lower()
    return "not found" in text or "no such" in text or "not connected" in text or "404" in text


def _already(e: Exception) -> bool:
    text = str(e).lower()
    return "already" in text or "exists" in text
