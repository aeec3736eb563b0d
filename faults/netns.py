"""Partitions between hosts of the `netns` runtime, as iptables DROP rules inside the hosts'
own namespaces (so they cut node-to-node traffic, not only client traffic), plus packet loss
(`iptables -m statistic`), bandwidth caps (`tc tbf`) and the one-way drop of replies that
makes the ambiguous commit (the client times out, the server applied the write).

Shapes (the Jepsen ones): isolate a node or a set, halves, random halves, bridge (two halves
joined by one node that sees both), majorities-ring (every node sees a majority, no two the
same), one-way (A cannot reach B, B can reach A). Heal removes exactly the rules a cut added:
every rule carries the cut's own comment and is deleted by its full spec, never by a flush.

On `runtime: docker`, partition-isolate (without `from`), partition-halves and
partition-random-halves are made by the engine's network disconnect/connect instead
(targets/docker/partition.py); the other kinds here stay netns-only (their `runtimes`).

Usable directly (tests) or as fault kinds of a plan (bottom of this module):

    cut = Partitioner(runtime).isolate(["kafka-1"])
    ...
    cut.heal()

How a cut reads: "a does not hear b" = in a's namespace, `INPUT -s b -j DROP`. A symmetric cut
puts that rule on both sides. The harness is the root namespace's end of the bridge, where no
rule is ever added: its side of a cut is enforced by its peers (their INPUT / OUTPUT)."""
from __future__ import annotations

import itertools
import math
import random
import threading
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Iterable

from pydantic import AfterValidator, Field

from onceproof.faults.base import Fault, FaultError, ParamError, Params, kind
from onceproof.faults.params import Hosts, Number
from onceproof.targets.netns import HARNESS, NetnsError, NetnsRuntime
from onceproof.targets.runtime import Runtime

_ids = itertools.count(1)


@dataclass(frozen=True)
class Rule:
    host: str  # whose namespace holds the rule
    chain: str  # INPUT or OUTPUT
    spec: tuple[str, ...]  # match + target, without the chain


@dataclass
class Cut:
    """What one call of the Partitioner changed, and how to undo exactly that."""

    partitioner: "Partitioner"
    shape: str
    tag: str
    rules: list[Rule] = field(default_factory=list)
    qdiscs: list[tuple[str, str]] = field(default_factory=list)  # (host, device)
    components: list[list[str]] = field(default_factory=list)  # for partitions into groups
    views: dict[str, list[str]] = field(default_factory=dict)  # node -> nodes it can reach
    blocked: list[tuple[str, str]] = field(default_factory=list)  # (a, b): a cannot reach b
    healed: bool = False

    def heal(self) -> None:
        self.partitioner.heal_cut(self)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"shape": self.shape}
        if self.components:
            out["components"] = self.components
        if self.views:
            out["views"] = self.views
        if self.blocked and not self.components and not self.views:
            out["blocked"] = [f"{a} -/-> {b}" for a, b in self.blocked]
        return out


class Partitioner:
    """Makes and heals cuts between the hosts of one netns run."""

    def __init__(self, runtime: Runtime, rng: random.Random | None = None) -> None:
        if not isinstance(runtime, NetnsRuntime):
            raise NetnsError("network partitions between nodes need `runtime: netns` (this run is "
                             f"{runtime.name!r}); with runtime local, use the `partition` "
                             "fault, which cuts client traffic through Toxiproxy")
        self.runtime = runtime
        self.rng = rng or random.Random()
        self.cuts: list[Cut] = []
        self._lock = threading.Lock()

    # --- shapes -------------------------------------------------------------------------
    def isolate(self, nodes: Iterable[str], from_: Iterable[str] | None = None) -> Cut:
        """`nodes` (talking among themselves) cut off from every other host of the run, or
        only from `from_`."""
        inside = self._names(nodes)
        others = [h for h in (self._names(from_) if from_ is not None else self.runtime.hosts) if h not in inside]
        return self.partition([inside, others], shape="isolate")

    def halves(self, nodes: Iterable[str]) -> Cut:
        """The first half (the smaller one when odd) against the rest, in the order given."""
        names = self._names(nodes)
        k = len(names) // 2
        return self.partition([names[:k], names[k:]], shape="halves")

    def random_halves(self, nodes: Iterable[str]) -> Cut:
        names = self._names(nodes)
        self.rng.shuffle(names)
        k = len(names) // 2
        return self.partition([names[:k], names[k:]], shape="random-halves")

    def bridge(self, nodes: Iterable[str], shuffle: bool = False) -> Cut:
        """Two halves that cannot reach each other, and one node (the middle one) that reaches
        both."""
        names = self._names(nodes)
        if len(names) < 3:
            raise NetnsError(f"a bridge needs at least 3 nodes, got {names}")
        if shuffle:
            self.rng.shuffle(names)
        mid = len(names) // 2
        left, middle, right = names[:mid], names[mid], names[mid + 1:]
        views = {n: left + [middle] for n in left}
        views.update({n: right + [middle] for n in right})
        views[middle] = list(names)
        cut = self.views(views, shape="bridge")
        cut.components = [left, [middle], right]
        return cut

    def majorities_ring(self, nodes: Iterable[str], shuffle: bool = True) -> Cut:
        """Every node reaches a majority (itself included), and no two nodes the same majority.
        Nodes sit on a ring and each reaches its k nearest on either side. With 3 nodes no
        symmetric ring exists: the shape is then a line (a-b-c: a and c cannot reach each
        other), which still gives every node a different majority."""
        names = self._names(nodes)
        n = len(names)
        if n < 3:
            raise NetnsError(f"majorities-ring needs at least 3 nodes, got {names}")
        if shuffle:
            self.rng.shuffle(names)
        if n == 3:
            views = {names[0]: names[:2], names[1]: list(names), names[2]: names[1:]}
        else:
            k = math.ceil((n // 2) / 2)  # 1 + 2k >= majority
            views = {names[i]: [names[(i + d) % n] for d in range(-k, k + 1)] for i in range(n)}
        return self.views(views, shape="majorities-ring")

    def one_way(self, a: str, b: str) -> Cut:
        """a cannot reach b; b can reach a. Connection-level: b drops every packet from a that
        belongs to a connection a opened (its SYNs included), and lets a's replies on b's own
        connections through (conntrack direction), so TCP works in exactly one direction."""
        a, b = self._names([a, b])
        cut = self._new("one-way")
        if b != HARNESS:
            cut.rules.append(Rule(b, "INPUT", ("-s", self._addr(a), "-m", "conntrack", "--ctdir", "ORIGINAL",
                                               "-j", "DROP")))
        else:  # no rules in the root namespace: a's own connections die on a's way out
            cut.rules.append(Rule(a, "OUTPUT", ("-d", self._addr(b), "-m", "conntrack", "--ctdir", "ORIGINAL",
                                                "-j", "DROP")))
        cut.blocked = [(a, b)]
        return self._apply(cut)

    def drop_replies(self, client: str, server: str, port: int) -> Cut:
        """The server's replies on port never reach the client (handshakes still complete):
        requests arrive and are applied, the client times out, so it cannot know. This is the
        ambiguous commit."""
        client, server = self._names([client, server])
        cut = self._new("drop-replies")
        spec = ("-s", self._addr(server), "-p", "tcp", "--sport", str(int(port)), "--tcp-flags", "SYN", "NONE",
                "-j", "DROP")
        if client != HARNESS:
            cut.rules.append(Rule(client, "INPUT", spec))
        else:
            cut.rules.append(Rule(server, "OUTPUT", ("-d", self._addr(client), *spec[2:])))
        return self._apply(cut)

    def packet_loss(self, nodes: Iterable[str], probability: float) -> Cut:
        """Each packet arriving at the nodes from another host is dropped with `probability`."""
        if not 0 < probability <= 1:
            raise NetnsError(f"packet loss probability must be in (0, 1], got {probability}")
        cut = self._new("packet-loss")
        for n in self._names(nodes):
            if n == HARNESS:
                raise NetnsError("packet loss applies to the run's namespaces, not to the harness")
            cut.rules.append(Rule(n, "INPUT", ("!", "-i", "lo", "-m", "statistic", "--mode", "random",
                                               "--probability", f"{probability:.6f}", "-j", "DROP")))
        return self._apply(cut)

    def bandwidth(self, nodes: Iterable[str], rate_kbit: int) -> Cut:
        """What each node sends is capped at rate_kbit kbit/s (tc tbf on its own interface)."""
        cut = self._new("bandwidth")
        for n in self._names(nodes):
            host = self.runtime.host(n)
            if host.peer is None:
                raise NetnsError("bandwidth caps apply to the run's namespaces, not to the harness")
            cut.qdiscs.append((n, host.peer))
        return self._apply(cut, rate_kbit=rate_kbit)

    # --- general cuts ----------------------------------------------------------------------
    def partition(self, components: list[list[str]], shape: str = "partition") -> Cut:
        """Hosts in different components cannot reach each other; within one, all is as before."""
        comps = [self._names(c) for c in components if c]
        seen: set[str] = set()
        for c in comps:
            if seen & set(c):
                raise NetnsError(f"a host is in two components: {comps}")
            seen |= set(c)
        cut = self._new(shape)
        cut.components = comps
        for ca, cb in itertools.combinations(comps, 2):
            for a in ca:
                for b in cb:
                    self._sever(cut, a, b)
        return self._apply(cut)

    def views(self, views: dict[str, list[str]], shape: str = "views") -> Cut:
        """Each node reaches exactly the nodes of its view (visibility must be symmetric)."""
        names = self._names(views)
        for a in names:
            for b in views[a]:
                if a not in views.get(b, [a]):
                    raise NetnsError(f"{a} sees {b} but {b} does not see {a}: use one_way for that")
        cut = self._new(shape)
        cut.views = {n: sorted(views[n]) for n in names}
        for a, b in itertools.combinations(names, 2):
            if b not in views[a]:
                self._sever(cut, a, b)
        return self._apply(cut)

    def heal(self) -> None:
        """Heal every cut this partitioner made (and nothing else)."""
        for cut in list(reversed(self.cuts)):
            self.heal_cut(cut)

    def heal_cut(self, cut: Cut) -> None:
        with self._lock:
            if cut.healed:
                return
            errors = []
            for host, rules in self._by_host(cut.rules).items():
                lines = [f"-D {r.chain} {_join(self._full(cut, r))}" for r in rules]
                if not self._restore(host, lines, check=False):
                    # one at a time, so one rule already gone does not keep the others
                    for r in rules:
                        res = self.runtime.exec(host, "iptables", "-D", r.chain, *self._full(cut, r), check=False)
                        if res.returncode != 0 and "does a matching rule exist" not in res.stderr \
                                and "No such file" not in res.stderr:
                            errors.append(res.stderr.strip())
            for host, dev in cut.qdiscs:
                self.runtime.exec(host, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            cut.healed = True
            if cut in self.cuts:
                self.cuts.remove(cut)
            if errors:
                raise NetnsError(f"healing {cut.shape}: " + "; ".join(errors))

    # --- inside ------------------------------------------------------------------------
    def _names(self, nodes: Iterable[str] | None) -> list[str]:
        out: list[str] = []
        for n in nodes or []:
            self.runtime.host(n)  # raises for a name that is not a host of this run
            if n not in out:
                out.append(n)
        return out

    def _addr(self, name: str) -> str:
        return self.runtime.check_address(self.runtime.address_of(name))

    def _new(self, shape: str) -> Cut:
        return Cut(self, shape, f"onceproof-{shape}-{next(_ids)}")

    def _sever(self, cut: Cut, a: str, b: str) -> None:
        """a and b cannot reach each other: each drops what comes from the other."""
        for me, peer in ((a, b), (b, a)):
            if me != HARNESS:
                cut.rules.append(Rule(me, "INPUT", ("-s", self._addr(peer), "-j", "DROP")))
        cut.blocked += [(a, b), (b, a)]

    @staticmethod
    def _full(cut: Cut, rule: Rule) -> list[str]:
        *match, jump, target = rule.spec
        return [*match, "-m", "comment", "--comment", cut.tag, jump, target]

    @staticmethod
    def _by_host(rules: list[Rule]) -> dict[str, list[Rule]]:
        out: dict[str, list[Rule]] = {}
        for r in rules:
            out.setdefault(r.host, []).append(r)
        return out

    def _restore(self, host: str, lines: list[str], check: bool = True) -> bool:
        """Add or delete rules in one host's filter table in one go (iptables-restore
        --noflush: nothing else in the table is touched)."""
        text = "*filter\n" + "\n".join(lines) + "\nCOMMIT\n"
        res = self.runtime.exec(host, "iptables-restore", "--noflush", input=text, check=False)
        if res.returncode != 0 and check:
            raise NetnsError(f"iptables in {host}: {res.stderr.strip()}")
        return res.returncode == 0

    def _apply(self, cut: Cut, rate_kbit: int = 0) -> Cut:
        with self._lock:
            self.cuts.append(cut)  # before acting: a half-applied cut is still healed
            for host, rules in self._by_host(cut.rules).items():
                self._restore(host, [f"-A {r.chain} {_join(self._full(cut, r))}" for r in rules])
            for host, dev in cut.qdiscs:
                burst = max(1600, rate_kbit * 1000 // 8 // 10)  # bytes: 100 ms worth, at least a packet
                self.runtime.exec(host, "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_kbit}kbit",
                                  "burst", str(burst), "latency", "200ms")
        return cut


def _join(args: Iterable[str]) -> str:
    return " ".join(f'"{a}"' if " " in a else a for a in args)


# --- as fault kinds of a plan ----------------------------------------------------------


def _runtime(fault: Fault) -> NetnsRuntime:
    for node in fault.context.nodes.values():
        rt = node.runtime
        if isinstance(rt, NetnsRuntime):
            return rt
    raise FaultError(f"{fault.kind} cuts traffic between hosts and needs `runtime: netns`; with the local "
                     "runtime use `partition` (through Toxiproxy)", certain=True)


def _docker_runtime(fault: Fault) -> Any:
    """The run's DockerRuntime, or None on another runtime."""
    for node in fault.context.nodes.values():
        if getattr(node.runtime, "name", None) == "docker":
            return node.runtime
    return None


class NetnsFault(Fault):
    """A fault made of one Cut of the netns Partitioner (or, for the kinds whose `runtimes`
    name docker, of the docker runtime's DockerPartitioner: the same shape methods)."""

    runtimes: ClassVar[tuple[str, ...]] = ("netns",)

    def cut(self, partitioner: Partitioner) -> Cut:
        raise NotImplementedError

    def _apply(self) -> None:
        docker_rt = _docker_runtime(self) if "docker" in self.runtimes else None
        if docker_rt is not None:
            return self._apply_docker(docker_rt)
        partitioner = Partitioner(_runtime(self), rng=self.context.rng)
        try:
            self._cut = self.cut(partitioner)
        except (NetnsError, KeyError) as e:
            raise FaultError(f"{self.kind}: {e}", certain=True) from None
        self.details.update(self._cut.describe())

    def _apply_docker(self, runtime: Any) -> None:
        """The same shape through the engine's network disconnect/connect
        (targets/docker/partition.py; only the kinds whose `runtimes` name docker)."""
        from onceproof.targets.docker.engine import EngineError
        from onceproof.targets.docker.partition import DockerPartitioner

        partitioner = DockerPartitioner(runtime, rng=self.context.rng)
        try:
            self._cut = self.cut(partitioner)  # type: ignore[arg-type]  # the same shape methods
        except EngineError as e:
            if partitioner.cuts:  # something was moved: heal() puts it back
                self._cut = partitioner.cuts[0]  # type: ignore[assignment]
                raise FaultError(f"{self.kind}: {e}") from None
            raise FaultError(f"{self.kind}: {e}", certain=True) from None
        self.details.update(self._cut.describe())

    def _heal(self) -> None:
        cut = getattr(self, "_cut", None)
        if cut is not None:
            cut.heal()


class IsolateParams(Params):
    from_: Annotated[list[str], Hosts("[kafka-2, kafka-3]")] | None = Field(
        None, alias="from", description="cut the targets off only from these hosts (default: from every other one)")


@kind("partition-isolate", params=IsolateParams, random={}, colour="#7b4ea3",
      summary="the targets (talking among themselves) cut off from every other host, or only from `from`")
class Isolate(NetnsFault):
    runtimes = ("netns", "docker")  # docker: a disconnect (targets/docker/partition.py)

    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.isolate(self.targets, from_=self.params.get("from"))


@kind("partition-halves", random={}, colour="#a55194",
      summary="the targets split in two halves (the first, smaller one against the rest)")
class Halves(NetnsFault):
    runtimes = ("netns", "docker")  # docker: a disconnect (targets/docker/partition.py)

    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.halves(self.targets)


@kind("partition-random-halves", random={}, colour="#ce6dbd",
      summary="the targets split in two halves drawn from the seed")
class RandomHalves(NetnsFault):
    runtimes = ("netns", "docker")  # docker: a disconnect (targets/docker/partition.py)

    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.random_halves(self.targets)


@kind("partition-bridge", random={}, colour="#6b6ecf",
      summary="two halves that cannot reach each other, joined by one node that reaches both")
class Bridge(NetnsFault):
    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.bridge(self.targets, shuffle=True)


@kind("partition-majorities-ring", random={}, colour="#393b79",
      summary="every target reaches a majority of them, no two the same majority")
class MajoritiesRing(NetnsFault):
    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.majorities_ring(self.targets)


class OneWayParams(Params):
    to: Annotated[list[str], Hosts("kafka-2")] = Field(description="the host the targets cannot reach",
                                                       examples=["kafka-2"])


@kind("partition-one-way", params=OneWayParams, random={}, colour="#5254a3",
      summary="the targets cannot reach `to`; `to` can still reach them")
class OneWay(NetnsFault):
    def cut(self, partitioner: Partitioner) -> Cut:
        cuts = [partitioner.one_way(a, b) for a in self.targets for b in self.params["to"] if a != b]
        if not cuts:
            raise NetnsError("nothing to cut: the targets and `to` are the same hosts")
        for extra in cuts[1:]:  # one Cut to heal
            cuts[0].rules += extra.rules
            cuts[0].blocked += extra.blocked
            partitioner.cuts.remove(extra)
        return cuts[0]


class DropRepliesParams(Params):
    client: Annotated[list[str], Hosts("pipeline-0")] = Field(description="whose replies are lost",
                                                              examples=["pipeline-0"])
    port: Annotated[int, Number("9092", minimum=1, integer=True)] | None = Field(
        None, description="the server's port (default: the node's own)")


@kind("drop-replies", params=DropRepliesParams, random={}, colour="#e7969c",
      summary="the target server's replies never reach `client`: requests are applied, the client times out "
              "(the ambiguous commit)")
class DropReplies(NetnsFault):
    def cut(self, partitioner: Partitioner) -> Cut:
        first: Cut | None = None
        for server in self.targets:
            port = int(self.params.get("port") or self.context.node(server).port)
            for client in self.params["client"]:
                c = partitioner.drop_replies(client, server, port)
                if first is None:
                    first = c
                else:
                    first.rules += c.rules
                    partitioner.cuts.remove(c)
        assert first is not None
        return first


def _probability(prob: float) -> float:
    if not 0 < prob <= 1:
        raise ParamError("probability", f"expected a number above 0 and at most 1, such as 0.2, got {prob}")
    return prob


class PacketLossParams(Params):
    probability: Annotated[float, Number("0.2"), AfterValidator(_probability)] = Field(
        description="the chance that a packet is dropped", examples=[0.2])


@kind("packet-loss", params=PacketLossParams, random={}, colour="#bd9e39",
      summary="each packet reaching the targets dropped with `probability`")
class PacketLoss(NetnsFault):
    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.packet_loss(self.targets, float(self.params["probability"]))


class LinkBandwidthParams(Params):
    rate: Annotated[int, Number("64", minimum=1, integer=True)] = Field(description="the cap in KB/s",
                                                                         examples=[64])


@kind("link-bandwidth", params=LinkBandwidthParams, random={}, colour="#e7ba52",
      summary="what the targets send capped at `rate` KB/s (tc tbf on their own link, all peers)")
class LinkBandwidth(NetnsFault):
    def cut(self, partitioner: Partitioner) -> Cut:
        return partitioner.bandwidth(self.targets, rate_kbit=int(self.params["rate"]) * 8)
