"""The target registry: each kind declares its plan section, its nodes, its endpoint and its
pipeline variable; the deployment, the plan and the pipeline's environment come from it.
Nodes are built on a local runtime but never started."""
from __future__ import annotations

import json

import pytest

from onceproof.plan import json_schema, validate_plan
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.kafka import KafkaCluster, RoleError
from onceproof.targets.kinds import target_kind, target_kinds
from onceproof.targets.local import LocalRuntime

PLAN = {"name": "p", "targets": {"kafka": {"nodes": 3}, "redis": {"persistence": "none"}, "postgres": None},
        "pipeline": {"command": ["true"], "replicas": 2}}


@pytest.fixture
def runtime(tmp_path):
    with LocalRuntime(log_dir=tmp_path / "logs") as rt:
        yield rt


def test_the_registry_knows_kafka_redis_and_postgres_in_plan_order():
    assert list(target_kinds()) == ["kafka", "redis", "postgres"]
    with pytest.raises(KeyError, match="known: kafka, redis, postgres"):
        target_kind("mongo")


def test_the_pipeline_variables_keep_their_names():
    assert {k.env for k in target_kinds().values()} == {
        "ONCEPROOF_KAFKA_BOOTSTRAP", "ONCEPROOF_REDIS_URL", "ONCEPROOF_POSTGRES_DSN"}


def test_a_plan_names_every_node_of_its_targets_as_the_kinds_do():
    plan = validate_plan(PLAN)
    assert plan.target_names() == ["kafka-1", "kafka-2", "kafka-3", "redis", "postgres",
                                   "pipeline", "pipeline-0", "pipeline-1"]
    assert plan.resolved()["targets"] == {"kafka": {"nodes": 3}, "redis": {"persistence": "none"},
                                          "postgres": {"fsync": True, "standby": False}}


def test_the_plan_schema_has_one_section_per_kind():
    schema = json_schema()
    assert set(schema["$defs"]["Targets"]["properties"]) == {"kafka", "redis", "postgres"}
    assert {"KafkaTarget", "RedisTarget", "PostgresTarget"} <= set(schema["$defs"])
    assert schema["$defs"]["RedisTarget"]["properties"]["persistence"]["enum"] == ["none", "aof-everysec",
                                                                                  "aof-always"]
    json.dumps(schema)


def test_the_pipeline_reaches_every_target_through_its_own_proxies(runtime):
    plan = validate_plan(PLAN)
    d = Deployment.from_plan(runtime, plan.targets.sections())
    env = d.pipeline_env()
    assert set(env) == {"ONCEPROOF_KAFKA_BOOTSTRAP", "ONCEPROOF_REDIS_URL", "ONCEPROOF_POSTGRES_DSN"}
    port = {name: p.listen for name, p in d.proxies.items()}
    assert d.redis is not None
    assert env["ONCEPROOF_REDIS_URL"] == f"redis://:{d.redis.password}@127.0.0.1:{port['pipeline-redis']}/0"
    assert env["ONCEPROOF_POSTGRES_DSN"].endswith(f"@127.0.0.1:{port['pipeline-postgres']}/onceproof")
    assert env["ONCEPROOF_KAFKA_BOOTSTRAP"] == ",".join(f"127.0.0.1:{port[f'pipeline-kafka-{i}']}" for i in (1, 2, 3))
    assert d.kafka_bootstrap("load") == ",".join(f"127.0.0.1:{port[f'load-kafka-{i}']}" for i in (1, 2, 3))
    assert d.redis_url() == f"redis://:{d.redis.password}@127.0.0.1:{d.redis.port}/0"
    assert [n.name for n in d.servers()] == ["kafka-1", "kafka-2", "kafka-3", "redis", "postgres"]


def test_each_kafka_node_advertises_its_groups_proxy_and_the_proxy_forwards_to_that_groups_listener(runtime):
    d = Deployment.create(runtime, TargetsSpec(kafka_nodes=3))
    assert d.kafka is not None and d.redis is None and d.postgres is None
    for node in d.kafka.nodes:
        for group in ("pipeline", "load"):
            proxy = d.proxies[f"{group}-{node.name}"]
            assert node.advertised[group] == ("127.0.0.1", proxy.listen)
            assert proxy.upstream == f"127.0.0.1:{node.group_ports[group]}"
    assert d.pipeline_env()["ONCEPROOF_REDIS_URL"] == ""


def test_the_shorthands_of_tests_and_the_sections_of_a_plan_describe_the_same_targets():
    short = TargetsSpec(kafka_nodes=2, redis="aof-always", postgres=True, postgres_fsync=False).resolved()
    sections = TargetsSpec(sections={"kafka": {"nodes": 2}, "redis": {"persistence": "aof-always"},
                                     "postgres": {"fsync": False}}).resolved()
    assert short == sections
    with pytest.raises(ValueError):
        TargetsSpec(redis="sometimes").resolved()
    with pytest.raises(KeyError, match="mongo"):
        TargetsSpec(sections={"mongo": {}}).resolved()


def _quorum(node, epoch: int, leader: int) -> None:
    path = node.data_dir / "log" / "__cluster_metadata-0" / "quorum-state"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"leaderId": leader, "leaderEpoch": epoch, "votedId": -1}))


def test_the_controller_is_the_leader_of_the_newest_epoch_any_node_wrote(runtime):
    cluster = KafkaCluster(runtime, 3)
    with pytest.raises(RoleError, match="no node knows a quorum leader yet"):
        cluster.controller()
    _quorum(cluster.nodes[0], 3, 2)  # a node that has not heard of the newer election
    _quorum(cluster.nodes[1], 5, 3)
    assert cluster.controller().name == "kafka-3"
    assert all(n.cluster is cluster for n in cluster.nodes)

