"""Which nodes a fault hits.

A target is written as a node name (`kafka-1`, `redis`, `postgres`, `pipeline-0`), a group
(`kafka` = every broker, `pipeline` = every replica), a list of these, or a Kafka role that
is looked up when the fault is applied: `kafka-leader` (the leader of `topic` / `partition`)
and `kafka-controller` (the active KRaft controller). `select: one | all | majority |
minority` then picks among the matching nodes with the plan's seeded rng."""
from __future__ import annotations

import random
from typing import Any, Iterable

from onceproof.faults.base import Context, FaultError, ParamError
from onceproof.targets.kafka import KafkaCluster, KafkaNode, RoleError

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
    groups = [g for g in GROUPS if any(n.startswith(g + "-") for n in names)]
    choices = list(dict.fromkeys([*names, *groups, *KAFKA_ROLES]))  # each name once (`pipeline` is both)
    close = difflib.get_close_matches(spec, choices, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if spec == "postgres-standby" and "postgres" in names:  # a node the plan did not ask for
        hint = "; the standby is a node only with `standby: true` under targets.postgres"
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
    """The name of the node holding a Kafka role now, asked of the run's Kafka cluster.
    Raises FaultError (certain: nothing was changed) if nobody holds it."""
    if role == "kafka-leader" and not topic:
        raise FaultError("kafka-leader needs `topic` (and optionally `partition`)", certain=True)
    cluster = kafka_cluster(context, role)
    try:
        node = cluster.controller() if role == "kafka-controller" else cluster.leader(topic or "", partition)
    except RoleError as e:
        raise FaultError(f"{role}: {e}", certain=True) from None
    return node.name


def kafka_cluster(context: Context, role: str) -> KafkaCluster:
    """The Kafka cluster the context's Kafka nodes belong to. Raises FaultError if none."""
    for node in context.nodes.values():
        if isinstance(node, KafkaNode) and node.cluster is not None:
            return node.cluster
    raise FaultError(f"{role}: this run has no Kafka", certain=True)
