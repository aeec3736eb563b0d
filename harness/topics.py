"""Kafka topics the harness makes: the source topic the workload writes and the sink topic a
pipeline writes, created the same way (replication factor min(3, brokers); an existing topic
is kept)."""
from __future__ import annotations

import time
from typing import Any

from onceproof.targets.deployment import Deployment
from onceproof.targets.kafka import clients as kafka_clients


def create_topic(deployment: Deployment, name: str, partitions: int, wait_for_leaders: bool = False) -> Any:
    """Create the topic `name` with `partitions` partitions on the deployment's Kafka cluster
    (direct bootstrap, not through the fault proxies), unless it exists. `wait_for_leaders`:
    also wait (up to 30 s) until every partition has a leader. Returns the AdminClient used.
    Raises the admin client's KafkaException on any error but "already exists", and
    RuntimeError if the leaders do not come in time."""
    from confluent_kafka.admin import AdminClient, NewTopic

    assert deployment.kafka is not None, "no Kafka target in this deployment"
    admin = AdminClient(kafka_clients.config({"bootstrap.servers": deployment.kafka_bootstrap()}))
    rf = min(3, len(deployment.kafka.nodes))
    for f in admin.create_topics([NewTopic(name, partitions, rf)], operation_timeout=30).values():
        try:
            f.result(60)
        except Exception as e:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                raise
    if wait_for_leaders:
        wait_for_topic(admin, name, partitions)
    return admin


def wait_for_topic(admin: Any, topic: str, partitions: int, timeout: float = 30.0) -> None:
    """Wait until `topic` has `partitions` partitions, each with a leader; RuntimeError after
    `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and len(md.partitions) == partitions and all(
                p.leader >= 0 for p in md.partitions.values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"topic {topic} has no leaders after {timeout:.0f}s")
