"""Plans with a PostgreSQL standby and a read workload: what is accepted, and what is refused at
plan-read time with the field and the reason (a standby or reads off `runtime: local`, a read
path whose store the plan lacks)."""
from __future__ import annotations

import pytest

from onceproof.plan import PlanError, load_plan

PLAN = """name: reads-plan
runtime: {runtime}
targets: {{kafka: {{nodes: 1}}, postgres: {{standby: {standby}}}{redis}}}
pipeline: {{command: [python, -m, my_pipeline]}}
workload: {{source: kafka:onceproof.events, sink: postgres:onceproof_effects, keys: 10, duration: 10s{reads}}}
{faults}"""


def _load(tmp_path, runtime="local", standby="true", redis="", reads=", reads: {rate: 50, path: standby}",
          faults=""):
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN.format(runtime=runtime, standby=standby, redis=redis, reads=reads, faults=faults))
    return load_plan(p)


def test_a_standby_with_reads_and_a_replication_latency_fault_is_a_plan(tmp_path):
    plan = _load(tmp_path, faults="faults:\n  - {at: 2s, for: 2s, latency: {target: postgres-standby, "
                                  "from: replication, ms: 500}}\n")
    assert "postgres-standby" in plan.target_names()
    assert plan.workload.reads is not None and plan.workload.reads.path == "standby"
    assert plan.workload.reads.clients == 4 and plan.workload.reads.timeout == 2.0
    assert len(plan.fault_steps) == 1


@pytest.mark.parametrize("runtime", ["docker", "netns"])
def test_a_standby_off_the_local_runtime_is_refused_naming_the_field(tmp_path, runtime):
    with pytest.raises(PlanError, match=r"plan\.yaml:3: targets\.postgres\.standby: a PostgreSQL standby runs on "
                                        rf"`runtime: local` only; this plan runs on `{runtime}`"):
        _load(tmp_path, runtime=runtime, reads="")


def test_reads_off_the_local_runtime_are_refused(tmp_path):
    with pytest.raises(PlanError, match=r"workload\.reads: a read workload runs on `runtime: local` only"):
        _load(tmp_path, runtime="docker", standby="false", reads=", reads: {path: primary}")


def test_reads_from_a_standby_the_plan_lacks_are_refused(tmp_path):
    with pytest.raises(PlanError, match=r"workload\.reads\.path: reads from the standby need one"):
        _load(tmp_path, standby="false")


def test_reads_from_the_cache_without_redis_are_refused_and_with_redis_accepted(tmp_path):
    with pytest.raises(PlanError, match=r"workload\.reads\.path: reads from the cache need Redis"):
        _load(tmp_path, reads=", reads: {path: cache}")
    assert _load(tmp_path, redis=", redis: {}", reads=", reads: {path: cache}").workload.reads.path == "cache"


def test_more_read_keys_than_keys_and_an_unknown_path_are_bad_input(tmp_path):
    with pytest.raises(PlanError, match=r"workload\.reads\.keys: 11 read keys, but the workload has 10 keys"):
        _load(tmp_path, reads=", reads: {keys: 11}")
    with pytest.raises(PlanError, match=r"workload\.reads\.path"):
        _load(tmp_path, reads=", reads: {path: replica}")


@pytest.mark.parametrize("standby,target,says", [
    ("false", "postgres", "add `standby: true` to `postgres`"),
    ("true", "postgres", "only node with one is postgres-standby"),
    ("true", "kafka-1", "only node with one is postgres-standby"),
])
def test_a_replication_fault_on_a_node_without_a_replication_link_is_refused_at_read_time(tmp_path, standby,
                                                                                           target, says):
    with pytest.raises(PlanError) as e:
        _load(tmp_path, standby=standby, reads="",
              faults=f"faults:\n  - {{at: 2s, for: 2s, latency: {{target: {target}, from: replication, ms: 50}}}}\n")
    assert "faults[0].latency.from" in str(e.value) and says in str(e.value)


def test_a_fault_on_a_standby_the_plan_lacks_says_how_to_get_one(tmp_path):
    with pytest.raises(PlanError) as e:
        _load(tmp_path, standby="false", reads="", faults="faults:\n  - {at: 2s, kill: postgres-standby}\n")
    assert "got 'postgres-standby'; the standby is a node only with `standby: true`" in str(e.value)
