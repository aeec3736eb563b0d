"""Apache Kafka in KRaft mode (combined controller + broker per node, no ZooKeeper), run
straight from its jars (see targets/kafka/pom.xml and targets/provision.py).

Listeners of a node:
- DIRECT: the node's own port; inter-broker traffic and the harness's own observer.
- CONTROLLER: the KRaft quorum.
- one listener per client group (PIPELINE, LOAD) ADVERTISED AT THAT GROUP'S TOXIPROXY PORT.
  Kafka clients connect to whatever the metadata advertises, so if a client-facing listener
  advertised the broker's real port, clients would bypass the fault proxy after their first
  metadata request (the well-known Toxiproxy + Kafka pitfall). Each group has its own
  listener so a partition can cut the pipeline and leave the load generator connected.
"""
from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pydantic import Field

from onceproof.targets import paths
from onceproof.targets.kafka import cds, clients
from onceproof.targets.kinds import Section, TargetKind, Where
from onceproof.targets.process import Node, NodeError

if TYPE_CHECKING:
    from onceproof.targets.runtime import Runtime

JVM_OPTS = ["-Xms128m", "-Xmx768m", "-XX:+UseParallelGC", "-XX:ParallelGCThreads=2",
            "-Xss512k", "-Djava.awt.headless=true", "-XX:-UsePerfData"]

LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Logger:
      - name: kafka
        level: INFO
      - name: org.apache.kafka
        level: INFO
      - name: state.change.logger
        level: WARN
      - name: kafka.request.logger
        level: WARN
    Root:
      level: WARN
      AppenderRef:
        - ref: STDOUT
"""


def random_id() -> str:
    """A Kafka UUID in its text form (base64url, no padding, 22 characters), never starting with
    '-': a command line would take such an id for an option (`kafka-storage format -t -x...`
    fails with "argument --cluster-id/-t: expected one argument", 1 start in 64). Kafka's own
    `Uuid.randomUuid()` (org.apache.kafka.common.Uuid) draws again for the same reason."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def classpath() -> str:
    return str(paths.kafka_libs() / "*")


def java() -> str | None:
    return shutil.which("java")


def format_template() -> Path:
    """A KRaft log dir formatted once by Kafka's StorageTool and cached: each node copies its
    bootstrap.checkpoint and writes its own meta.properties, so no JVM starts per node."""
    template = paths.kafka_template()
    if (template / "bootstrap.checkpoint").exists():
        return template
    work = template.with_name(template.name + ".tmp")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    props = work / "server.properties"
    props.write_text(f"process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:9\n"
                     f"listeners=DIRECT://127.0.0.1:8,CONTROLLER://127.0.0.1:9\ncontroller.listener.names=CONTROLLER\n"
                     f"listener.security.protocol.map=DIRECT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
                     f"inter.broker.listener.name=DIRECT\n"
                     f"log.dirs={work / 'data'}\n")
    res = subprocess.run([java() or "java", "-cp", classpath(), "kafka.tools.StorageTool", "format",
                          "-t", random_id(), "-c", str(props)], capture_output=True, text=True)
    if res.returncode != 0:
        raise NodeError(f"kafka storage format failed: {res.stdout[-1500:]}{res.stderr[-1500:]}")
    if not (work / "data" / "bootstrap.checkpoint").exists():
        _missing(work)
    shutil.rmtree(template, ignore_errors=True)
    (work / "data").rename(template)
    shutil.rmtree(work, ignore_errors=True)
    return template


def _missing(work: Path) -> NoReturn:
    raise NodeError(f"kafka storage format did not write {work / 'data' / 'bootstrap.checkpoint'}")


class KafkaNode(Node):
    kind = "kafka"
    start_timeout = 60.0

    def __init__(self, runtime: "Runtime", name: str, node_id: int, cluster_id: str,
                 groups: tuple[str, ...] = ()) -> None:
        super().__init__(runtime, name)
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.controller_port = runtime.free_port()
        # client group -> (listener port, advertised host, advertised port)
        self.group_ports: dict[str, int] = {g: runtime.free_port() for g in groups}
        self.advertised: dict[str, tuple[str, int]] = {g: (self.host, p) for g, p in self.group_ports.items()}
        self.voters = f"{node_id}@{self.host}:{self.controller_port}"
        self.replication = 1
        self._log_mark = 0
        self.jvm_extra: list[str] = []  # more JVM options (the class-data-sharing build adds one)
        self.cluster: KafkaCluster | None = None  # the cluster it belongs to (asked for roles)

    def listener(self, group: str) -> str:
        """`host:port` of this node's listener for client group `group`."""
        return f"{self.host}:{self.group_ports[group]}"

    def advertise(self, group: str, host: str, port: int) -> None:
        """Clients of this group are told to reach this node at host:port (its proxy)."""
        self.advertised[group] = (host, port)

    def properties(self) -> str:
        listeners = [f"DIRECT://{self.host}:{self.port}", f"CONTROLLER://{self.host}:{self.controller_port}"]
        advertised = [f"DIRECT://{self.host}:{self.port}"]
        protocols = ["DIRECT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        for group, port in self.group_ports.items():
            name = group.upper().replace("-", "_")
            listeners.append(f"{name}://{self.host}:{port}")
            host, aport = self.advertised[group]
            advertised.append(f"{name}://{host}:{aport}")
            protocols.append(f"{name}:PLAINTEXT")
        rf = self.replication
        isr = 2 if rf >= 3 else 1
        return "\n".join([
            "process.roles=broker,controller",
            f"node.id={self.node_id}",
            f"controller.quorum.voters={self.voters}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            f"listener.security.protocol.map={','.join(protocols)}",
            "inter.broker.listener.name=DIRECT",
            "controller.listener.names=CONTROLLER",
            f"log.dirs={self.data_dir / 'log'}",
            f"offsets.topic.replication.factor={rf}",
            "offsets.topic.num.partitions=5",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            "transaction.state.log.num.partitions=5",
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            "unclean.leader.election.enable=false",
            "group.initial.rebalance.delay.ms=0",
            "num.partitions=1",
            "num.network.threads=2",
            "num.io.threads=4",
            "log.segment.bytes=67108864",
            "transaction.abort.timed.out.transaction.cleanup.interval.ms=5000",
            "transaction.remove.expired.transaction.cleanup.interval.ms=10000",
            "controller.quorum.election.timeout.ms=1000",
            "controller.quorum.fetch.timeout.ms=2000",
            "broker.heartbeat.interval.ms=500",
            "broker.session.timeout.ms=4000",
            "replica.lag.time.max.ms=5000",
            "share.coordinator.state.topic.replication.factor=" + str(rf),
            "share.coordinator.state.topic.min.isr=" + str(isr),
            "",
        ])

    def prepare(self) -> None:
        if not (paths.kafka_libs() / f"kafka_2.13-{paths.KAFKA_VERSION}.jar").exists():
            raise NodeError(f"Kafka {paths.KAFKA_VERSION} jars are not installed in {paths.kafka_libs()}: "
                            "run `onceproof setup`")
        logdir = self.data_dir / "log"
        logdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(format_template() / "bootstrap.checkpoint", logdir / "bootstrap.checkpoint")
        (logdir / "meta.properties").write_text(
            f"node.id={self.node_id}\ndirectory.id={random_id()}\nversion=1\ncluster.id={self.cluster_id}\n")
        (self.data_dir / "log4j2.yaml").write_text(LOG4J2)

    def command(self) -> list[str]:
        props = self.data_dir / "server.properties"
        props.write_text(self.properties())  # rewritten each start: advertised ports may change
        return [java() or "java", *JVM_OPTS, *cds.jvm_options(), *self.jvm_extra,
                f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.yaml'}",
                f"-Dkafka.logs.dir={self.data_dir}", "-cp", classpath(), "kafka.Kafka", str(props)]

    def start(self, wait: bool = True) -> None:
        try:
            self._log_mark = self.log_path.stat().st_size
        except OSError:
            self._log_mark = 0
        super().start(wait)

    def ready(self) -> bool:
        with open(self.log_path, "rb") as f:
            f.seek(self._log_mark)
            if b"Kafka Server started" not in f.read():
                return False
        with socket.create_connection((self.host, self.port), timeout=0.5):
            return True

    def teardown(self) -> None:
        """The run's data is thrown away, and a KRaft cluster losing its quorum one graceful
        stop at a time takes seconds per broker: SIGKILL."""
        self.kill()

    def quorum(self) -> tuple[int, int] | None:
        """(leader epoch, leader node id) of the KRaft quorum as this node last wrote it to its
        `quorum-state` file, or None if it knows no leader (or has not written the file yet)."""
        path = self.data_dir / "log" / "__cluster_metadata-0" / "quorum-state"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
        return (epoch, leader) if leader >= 0 else None


class RoleError(NodeError):
    """No node holds the asked-for role now (no quorum leader known, no such partition); nothing
    was changed."""


class KafkaCluster:
    """N KRaft nodes named kafka-1..kafka-N, each controller and broker (of `node_class`: a
    runtime with nodes of its own, e.g. containers, subclasses this and sets it)."""

    node_class: type[KafkaNode] = KafkaNode

    def __init__(self, runtime: "Runtime", nodes: int = 1, groups: tuple[str, ...] = ()) -> None:
        cluster_id = random_id()
        self.nodes = [self.node_class(runtime, name, i, cluster_id, groups)
                      for i, name in enumerate(self.node_names(nodes), start=1)]
        voters = ",".join(n.voters for n in self.nodes)
        for n in self.nodes:
            n.voters = voters
            n.replication = 3 if nodes >= 3 else 1
            n.cluster = self

    @staticmethod
    def node_names(count: int) -> list[str]:
        """The names of a cluster of `count` nodes: kafka-1..kafka-<count> (node ids 1..count)."""
        return [f"kafka-{i}" for i in range(1, count + 1)]

    @property
    def bootstrap_direct(self) -> str:
        """`host:port,...` of every node's own (DIRECT) listener."""
        return ",".join(n.address for n in self.nodes)

    def endpoint(self, where: Where, pipeline: bool = False) -> str:
        """Bootstrap servers, `host:port,...`, with each node reached at `where(node)`."""
        return ",".join("%s:%d" % where(n) for n in self.nodes)

    # --- roles (Jepsen's db/primaries): who holds what, asked when a fault needs it ----
    def node_by_id(self, node_id: int) -> KafkaNode:
        """The node with Kafka node id `node_id`. Raises RoleError if there is none."""
        for n in self.nodes:
            if n.node_id == node_id:
                return n
        raise RoleError(f"no Kafka node with id {node_id} in this run")

    def controller(self) -> KafkaNode:
        """The active KRaft controller (the quorum leader), from the nodes' `quorum-state` files:
        the newest epoch any node wrote wins. The Admin API cannot tell: a KRaft broker reports
        a random live broker as `controller` to clients (KIP-919). Raises RoleError if no node
        knows a leader yet."""
        known = [q for q in (n.quorum() for n in self.nodes) if q is not None]
        if not known:
            raise RoleError("no node knows a quorum leader yet")
        epoch, leader = max(known, key=lambda q: q[0])
        return self.node_by_id(leader)

    def leader(self, topic: str, partition: int = 0, timeout: float = 5.0) -> KafkaNode:
        """The current leader of `topic`/`partition`, from the cluster's metadata (asked
        directly, not through a proxy; `timeout` in seconds). Raises RoleError if the topic or
        partition does not exist, and KafkaException if the metadata cannot be read."""
        from confluent_kafka.admin import AdminClient

        # asking for a topic's metadata must not create it (a producer-type client's default)
        admin = AdminClient(clients.config({"bootstrap.servers": self.bootstrap_direct, "socket.timeout.ms": 2000,
                                            "allow.auto.create.topics": False}))
        md = admin.list_topics(topic, timeout=timeout)
        t = md.topics.get(topic)
        if t is None or t.error is not None or partition not in t.partitions:
            raise RoleError(f"no partition {topic}/{partition} ({t.error if t else 'no topic'})")
        return self.node_by_id(t.partitions[partition].leader)

    def start(self, timeout: float = 60.0) -> None:
        for n in self.nodes:  # a quorum needs its peers: start them all, then wait
            n.start(wait=False)
        for n in self.nodes:
            n.wait_ready(timeout)
        wait_brokers(self.bootstrap_direct, len(self.nodes), timeout)

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()


class KafkaTarget(Section):
    """`targets: {kafka: {nodes: N}}`."""

    nodes: int = Field(1, ge=1, le=9, description="KRaft nodes (each controller + broker)")


TARGET = TargetKind(
    name="kafka", section=KafkaTarget,
    build=lambda runtime, section, groups: KafkaCluster(runtime, section.nodes, groups=groups),
    node_names=lambda section: KafkaCluster.node_names(section.nodes),
    env="ONCEPROOF_KAFKA_BOOTSTRAP", endpoint_name="bootstrap")


def wait_brokers(bootstrap: str, count: int, timeout: float = 60.0) -> None:
    """Until the cluster's metadata lists `count` brokers and a controller."""
    import time

    from confluent_kafka.admin import AdminClient

    admin = AdminClient(clients.config({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}))
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            md = admin.list_topics(timeout=2)
            if len(md.brokers) >= count:
                return
            last = f"{len(md.brokers)} of {count} brokers registered"
        except Exception as e:  # noqa: BLE001
            last = str(e)
        time.sleep(0.1)
    raise NodeError(f"kafka cluster at {bootstrap} not ready after {timeout:.0f}s: {last}")
