"""Which nodes a fault hits.

A target is written as a node name (`kafka-1`, `redis`, `postgres`, `pipeline-0`), a group
(`kafka` = every broker, `pipeline` = every replica), a list of these, or a Kafka role that
is looked up when the fault is applied: `kafka-leader` (the leader of `topic` / `partition`)
and `kafka-controller` (the active KRaft controller). `select: one | all | majority |
minority` then picks among the matching nodes with the plan's seeded rng."""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterable

from onceproof.faults.base import Context, FaultError, ParamError

SELECTS = ("all", "one", "majority", "minority")
GROUPS = ("kafka", "pipeline")
KAFKA_ROLES = ("kafka-leader", "kafka-controller")


def expand_names(target: Any, names: Iterable[str], field: str = "target") -> list[str]:
    """Node names a target spec stands for (groups expanded, roles kept as they are)."""
    names = list(names)
    specs = target if isinstance(target, list) else [target]
    if not specs:
        raise ParamError(field, "expected at least one target, such as kafka-1 or [redis, postgres]")
    out: list[str] = []
    for i, spec in enumerate(specs):
        where = field if not isinstance(target, list) else f"{field}[{i}]"
        if not isinstance(spec, str):
            raise ParamError(where, f"expected a node name such as kafka-1, redis or pipeline-0, got {spec!r}")
        if spec in KAFKA_ROLES:
            found = [spec]
        elif spec in GROUPS:
            found = sorted((n for n in names if n.startswith(spec + "-") and n[len(spec) + 1:].isdigit()),
                           key=lambda n: int(n.rsplit("-", 1)[1]))
            if not found:
                raise ParamError(where, f"the group {spec!r} has no nodes in this run")
        elif spec in names:
            found = [spec]
        else:
            raise ParamError(where, unknown_target(spec, names))
        out += [n for n in found if n not in out]
    return out


def unknown_target(spec: str, names: Iterable[str]) -> str:
    import difflib

    names = sorted(names)
    choices = names + [g for g in GROUPS if any(n.startswith(g + "-") for n in names)] + list(KAFKA_ROLES)
    close = difflib.get_close_matches(spec, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"expected a node of this run ({', '.join(choices)}), got {spec!r}{hint}"


def select(names: list[str], how: str, rng: random.Random) -> list[str]:
    """Pick `how` many of `names` (order kept) with the seeded rng."""
    n = len(names)
    count = {"all": n, "one": 1, "majority": n // 2 + 1, "minority": max(1, (n - 1) // 2)}[how]
    if count >= n:
        return list(names)
    picked = set(rng.sample(names, count))
    return [x for x in names if x in picked]


def is_role(name: str) -> bool:
    return name in KAFKA_ROLES


def resolve_role(context: Context, role: str, topic: str | None, partition: int) -> str:
    """The node currently holding a Kafka role."""
    if role == "kafka-controller":
        return active_controller(context)
    if not topic:
        raise FaultError("kafka-leader needs `topic` (and optionally `partition`)", certain=True)
    from confluent_kafka.admin import AdminClient

    if not context.kafka_bootstrap:
        raise FaultError("kafka-leader: this run has no Kafka", certain=True)
    admin = AdminClient({"bootstrap.servers": context.kafka_bootstrap, "socket.timeout.ms": 2000})
    md = admin.list_topics(topic, timeout=5)
    t = md.topics.get(topic)
    if t is None or t.error is not None or partition not in t.partitions:
        raise FaultError(f"kafka-leader: no partition {topic}/{partition} ({t.error if t else 'no topic'})",
                         certain=True)
    leader = t.partitions[partition].leader
    return kafka_node_by_id(context, leader)


def kafka_node_by_id(context: Context, node_id: int) -> str:
    for name, node in context.nodes.items():
        if getattr(node, "node_id", None) == node_id:
            return name
    raise FaultError(f"no Kafka node with id {node_id} in this run", certain=True)


def active_controller(context: Context) -> str:
    """The KRaft leader, read from the nodes' `quorum-state` files (the newest epoch wins).
    The Admin API cannot tell: a KRaft broker reports a random live broker as `controller`
    to clients (KIP-919)."""
    best: tuple[int, int] | None = None
    for node in context.nodes.values():
        if getattr(node, "kind", "") != "kafka":
            continue
        path = Path(node.data_dir) / "log" / "__cluster_metadata-0" / "quorum-state"
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        epoch, leader = int(state.get("leaderEpoch", -1)), int(state.get("leaderId", -1))
        if leader >= 0 and (best is None or epoch > best[0]):
            best = (epoch, leader)
    if best is None:
        raise FaultError("kafka-controller: no node knows a quorum leader yet", certain=True)
    return kafka_node_by_id(context, best[1])
