"""Plans for the docker runtime: the network faults of `local` (Toxiproxy) apply, a pipeline
given as an image needs `runtime: docker`, and `images` names only node kinds it knows."""
from __future__ import annotations

import pytest

from onceproof.plan import PlanError, load_plan

PLAN = """name: docker-plan
runtime: {runtime}
targets: {{kafka: {{nodes: 1}}, postgres: {{}}}}
pipeline: {{command: [python, -m, my_pipeline], {extra}}}
workload: {{source: kafka:onceproof.events, sink: postgres:onceproof_effects, duration: 10s}}
faults:
  - {{at: 2s, for: 2s, partition: {{target: kafka-1, from: pipeline}}}}
  - {{at: 3s, for: 2s, clock-skew: {{target: postgres, offset: 30s}}}}
  - {{at: 4s, kill: pipeline-0, restart-after: 1s}}
{top}"""


def _load(tmp_path, runtime="docker", extra="replicas: 1", top=""):
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN.format(runtime=runtime, extra=extra, top=top))
    return load_plan(p)


def test_a_docker_plan_takes_the_proxy_process_and_clock_faults_and_a_pipeline_image(tmp_path):
    plan = _load(tmp_path, extra="image: my-pipeline:ci", top="images: {redis: 'redis:7.2'}\n")
    assert plan.runtime == "docker" and plan.pipeline.image == "my-pipeline:ci"
    assert plan.images == {"redis": "redis:7.2"}
    assert len(plan.fault_steps) == 3


def test_a_pipeline_image_on_the_local_runtime_is_bad_input_naming_the_field(tmp_path):
    with pytest.raises(PlanError, match=r"pipeline\.image.*needs `runtime: docker`"):
        _load(tmp_path, runtime="local", extra="image: my-pipeline:ci")


def test_an_image_for_an_unknown_node_kind_is_bad_input(tmp_path):
    with pytest.raises(PlanError, match=r"images\.zookeeper.*expected one of kafka, redis, postgres, toxiproxy"):
        _load(tmp_path, top="images: {zookeeper: 'zk:3'}\n")


def test_partition_isolate_with_from_on_docker_is_refused_when_the_plan_is_read(tmp_path):
    """A disconnect cuts a container off from every other one: `from` cannot be honoured on
    docker. Refused when the plan is read, naming the field and the alternatives (found: such a
    plan passed `plan validate`, then failed after a whole run, exit 3)."""
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN.format(runtime="docker", extra="replicas: 1", top="").replace(
        "faults:\n", "faults:\n  - {at: 5s, for: 2s, partition-isolate: {target: kafka-1, from: [postgres]}}\n"))
    with pytest.raises(PlanError) as e:
        load_plan(p)
    assert f"{p}:7: faults[0].partition-isolate.from: partition-isolate with `from` needs per-pair rules" in str(e.value)
    p.write_text(p.read_text().replace(", from: [postgres]", ""))
    assert load_plan(p).runtime == "docker"  # without `from`: a disconnect, accepted


def test_a_pipeline_image_needs_no_command_and_a_plan_with_neither_is_bad_input(tmp_path):
    """An image whose own entrypoint runs the pipeline needs no `pipeline.command` (a user had
    to repeat it); without an image the command is required, naming the field."""
    p = tmp_path / "plan.yaml"
    p.write_text(PLAN.format(runtime="docker", extra="image: my-pipeline:ci", top="").replace(
        "command: [python, -m, my_pipeline], ", ""))
    assert load_plan(p).pipeline.command == []
    p.write_text(p.read_text().replace("image: my-pipeline:ci", "replicas: 1"))
    with pytest.raises(PlanError, match=r"pipeline\.command: expected the pipeline's command line"):
        load_plan(p)
