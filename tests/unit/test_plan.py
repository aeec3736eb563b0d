"""Plans: defaults filled in, errors that say file, line, field, what was expected."""
from __future__ import annotations

import pytest
import yaml

from onceproof.plan import PlanError, load_plan, parse_duration

GOOD = """name: kafka-to-postgres
seed: 7
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres], replicas: 2}
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 2000, keys: 50, duration: 40s}
faults:
  - {at: 8s, kill: pipeline-0, restart-after: 2s}
  - {at: 15s, for: 8s, partition: {target: kafka-1, from: pipeline}}
  - {at: 25s, for: 6s, latency: {target: postgres, ms: 200, jitter: 50}}
  - {random: {from: 5s, until: 35s, every: 6s, for: 3s, kinds: [kill, pause, partition]}}
checks: {exactly-once: {order: per-key}}
quiesce: {idle: 5s, max: 60s}
"""


def _write(tmp_path, text):
    p = tmp_path / "plan.yaml"
    p.write_text(text)
    return p


def test_the_issue_example_plan_loads_with_every_default_filled_in(tmp_path):
    plan = load_plan(_write(tmp_path, GOOD))
    resolved = plan.resolved()
    assert resolved["workload"]["duration"] == 40.0
    assert resolved["workload"]["partitions"] == 3
    assert resolved["observe"]["interval"] == 0.5
    assert "redis" not in resolved["targets"]
    # the resolved plan is itself a valid plan
    again = load_plan(_write(tmp_path, yaml.safe_dump(resolved)))
    assert again.resolved() == resolved


@pytest.mark.parametrize("text,line,field,words", [
    ("name: x\ntargets: {postgres: {}}\npipeline: {command: [x], replica: 2}\n", 3, "pipeline.replica",
     "did you mean 'replicas'"),
    ("name: x\ntargets: {postgres: {}}\npipeline: {command: [x]}\nworkload:\n  duration: soon\n", 5,
     "workload.duration", "expected a duration such as 40s"),
    ("name: x\ntargets: {postgres: {}}\npipeline: {command: [x]}\nworkload: {source: kafak:e}\n", 4,
     "workload.source", "did you mean kafka:e"),
    ("name: x\ntargets: {postgres: {}}\npipeline: {command: [x]}\nworkload: {source: kafka:e}\n", 4,
     "workload.source", "needs a kafka target"),
    ("name: x\ntargets: {}\n", None, "pipeline", "required field is missing"),
    ("name: x\ntargets: {postgres: {}}\npipeline: {command: [x]}\nchecks: {memory: lots}\n", 4,
     "checks.memory", "expected a number with a unit such as 512MiB"),
])
def test_bad_plan_names_line_field_and_expectation(tmp_path, text, line, field, words):
    path = _write(tmp_path, text)
    with pytest.raises(PlanError) as e:
        load_plan(path)
    msg = str(e.value)
    assert field in msg and words in msg, msg
    if line:
        assert f"{path}:{line}:" in msg, msg


def test_not_yaml_is_reported_with_its_line(tmp_path):
    path = _write(tmp_path, "name: x\ntargets: {postgres: {}\n  bad\n")
    with pytest.raises(PlanError) as e:
        load_plan(path)
    assert "not valid YAML" in str(e.value)
    assert f"{path}:" in str(e.value)


def test_missing_file_is_a_plan_error(tmp_path):
    with pytest.raises(PlanError, match="cannot read the plan"):
        load_plan(tmp_path / "nope.yaml")


@pytest.mark.parametrize("text,seconds", [("40s", 40), ("500ms", 0.5), ("2m", 120), (3, 3.0), ("1.5s", 1.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_every_plan_in_the_repo_is_valid_and_matches_the_published_schema():
    from pathlib import Path

    import jsonschema

    from onceproof.plan import json_schema

    validator = jsonschema.Draft202012Validator(json_schema())
    paths = sorted((Path(__file__).resolve().parents[2] / "plans").glob("*.yaml"))
    assert paths
    for path in paths:
        load_plan(path)
        errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
        assert not errors, (path.name, errors)


@pytest.mark.parametrize("runtime, fault, field", [
    ("local", "{at: 2s, for: 2s, partition-halves: {target: kafka}}", "faults[0].partition-halves"),
    ("local", "{random: {every: 2s, for: 1s, kinds: [kill, partition-bridge]}}", "faults[0].random.kinds[1]"),
    ("netns", "{at: 2s, for: 2s, latency: {target: kafka-1, ms: 100}}", "faults[0].latency"),
])
def test_a_fault_kind_the_runtime_cannot_carry_out_is_bad_input(tmp_path, runtime, fault, field):
    """Not a fault that fails to apply mid-run and leaves a run that tested nothing."""
    p = tmp_path / "plan.yaml"
    p.write_text(f"name: x\nruntime: {runtime}\ntargets: {{kafka: {{}}, postgres: {{}}}}\n"
                 "pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]}\n"
                 "workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, duration: 10s}\n"
                 f"faults:\n  - {fault}\n")
    with pytest.raises(PlanError) as e:
        load_plan(p)
    assert f"plan.yaml:7: {field}:" in str(e.value) and "needs `runtime:" in str(e.value)


def test_checks_faults_is_strict_unless_the_plan_says_lenient(tmp_path):
    assert load_plan(_write(tmp_path, GOOD)).resolved()["checks"]["faults"] == "strict"
    lenient = GOOD.replace("checks: {exactly-once: {order: per-key}}",
                           "checks: {exactly-once: {order: per-key}, faults: lenient}")
    assert load_plan(_write(tmp_path, lenient)).checks.faults == "lenient"
    path = _write(tmp_path, GOOD.replace("checks: {exactly-once: {order: per-key}}", "checks: {faults: loose}"))
    with pytest.raises(PlanError) as e:
        load_plan(path)
    assert "checks.faults" in str(e.value) and f"{path}:11:" in str(e.value), str(e.value)


@pytest.mark.parametrize("cwd, expected", [(None, "."), ("sub", "sub"), ("/opt/abs", "/opt/abs")])
def test_the_pipeline_runs_in_the_plan_files_folder_unless_the_plan_says_otherwise(tmp_path, cwd, expected):
    folder = tmp_path / "project"
    folder.mkdir()
    line = f", cwd: {cwd}" if cwd else ""
    path = folder / "plan.yaml"
    path.write_text("name: c\ntargets: {kafka: {}, postgres: {}}\n"
                    f"pipeline: {{command: [python, pipeline.py]{line}}}\n")
    plan = load_plan(path)
    assert plan.pipeline.cwd == (expected if expected.startswith("/") else str((folder / expected).resolve()))


def test_a_sink_mapping_is_valid_for_the_schema_and_a_sink_given_twice_is_bad_input(tmp_path):
    import jsonschema

    from onceproof.plan import json_schema

    text = ("name: m\ntargets: {kafka: {}, postgres: {}}\npipeline: {command: [python, p.py]}\n"
            "workload:\n  source: kafka:orders-in\n"
            "  sink: {postgres: {query: 'SELECT order_id, customer, n FROM orders'}}\n")
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    load_plan(path)
    assert not [e.message for e in jsonschema.Draft202012Validator(json_schema()).iter_errors(yaml.safe_load(text))]
    path.write_text(text + "  sink-mapping: {postgres: {table: other}}\n")
    with pytest.raises(PlanError, match="the sink is given twice"):
        load_plan(path)


def test_every_fault_starting_after_a_shortened_run_is_named_with_the_duration_that_runs_them(tmp_path):
    """`--duration 10s` on a 40 s plan: the first fault out of range is the error's field, and
    the message names every other one too, with the duration that would run them all (a user
    met them one at a time)."""
    p = _write(tmp_path, GOOD.replace("duration: 40s", "duration: 10s").replace(
        "  - {random: {from: 5s, until: 35s, every: 6s, for: 3s, kinds: [kill, pause, partition]}}\n", ""))
    with pytest.raises(PlanError) as e:
        load_plan(p)
    assert (f"{p}:8: faults[1].at: at 15s is not within the run (10s long); so do faults[2] (at 25s): "
            "a duration of more than 25s runs them all") in str(e.value)
