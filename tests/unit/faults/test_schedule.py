"""Schedules as a plan writes them: validation that points at the field, and expansion that
is the same for the same seed, byte for byte."""
from __future__ import annotations

import json

import pytest

from onceproof.faults.schedule import FaultSpecError, RandomSpec, Step, expand, parse_entry

NAMES = ["kafka-1", "kafka-2", "kafka-3", "redis", "postgres", "pipeline-0", "pipeline-1"]
RANDOM = {"random": {"from": "5s", "until": "35s", "every": "6s", "for": "3s",
                     "kinds": ["kill", "pause", "partition"], "targets": ["pipeline-0", "kafka-1"]}}


def error_of(entry: dict) -> FaultSpecError:
    with pytest.raises(FaultSpecError) as e:
        parse_entry(entry)
    return e.value


def test_the_documented_examples_parse_into_steps():
    assert parse_entry({"at": "8s", "kill": "pipeline-0", "restart-after": "2s"}) == [
        Step(8.0, 2.0, "kill", {"restart-after": 2.0, "target": "pipeline-0"})]
    (step,) = parse_entry({"at": "15s", "for": "8s", "partition": {"target": "kafka-1", "from": "pipeline"}})
    assert (step.at_s, step.for_s, step.kind) == (15.0, 8.0, "partition")
    assert step.params["style"] == "blackhole" and step.params["from"] == "pipeline"
    (step,) = parse_entry({"at": "25s", "for": "6s", "latency": {"target": "postgres", "ms": 200, "jitter": 50}})
    assert step.params["ms"] == 200 and step.params["jitter"] == 50
    (step,) = parse_entry({"at": "30s", "for": "5s", "clock-skew": {"target": "redis", "offset": "-30s"}})
    assert step.params["offset"] == -30.0
    spec = parse_entry(RANDOM)
    assert isinstance(spec, RandomSpec) and spec.every_s == 6.0 and spec.until_s == 35.0


@pytest.mark.parametrize("text,seconds", [("8s", 8.0), ("500ms", 0.5), ("2m", 120.0), (3, 3.0), (1.5, 1.5)])
def test_durations_are_read_in_the_units_people_write(text, seconds):
    assert parse_entry({"at": text, "pause": "redis"})[0].at_s == seconds


def test_a_bad_duration_names_the_field_and_shows_an_example():
    e = error_of({"at": "8s", "kill": "pipeline-0", "restart-after": "soon"})
    assert e.path == ["restart-after"]
    assert e.message == 'expected a duration such as 2s or 500ms, got "soon"'


def test_an_unknown_kind_lists_the_kinds_and_suggests_the_closest():
    e = error_of({"at": "8s", "kil": "pipeline-0"})
    assert e.path == ["kil"]
    assert "known kinds are" in e.message and "partition" in e.message
    assert "did you mean 'kill'?" in e.message


def test_a_network_fault_on_a_pipeline_replica_is_rejected_with_what_to_do_instead():
    e = error_of({"at": "1s", "for": "2s", "latency": {"target": "pipeline-0", "ms": 10}})
    assert e.path == ["latency", "target"]
    assert "pipeline replica" in e.message and "from: pipeline" in e.message


@pytest.mark.parametrize("entry,path,words", [
    ({"at": "1s", "latency": {"target": "redis"}}, ["latency", "ms"], "ms: 200"),
    ({"at": "1s", "latency": {"target": "redis", "ms": "fast"}}, ["latency", "ms"], "number"),
    ({"at": "1s", "partition": {"target": "redis", "from": "everyone"}}, ["partition", "from"], "pipeline, load, both"),
    ({"at": "1s", "partition": {"target": "redis", "style": "drop"}}, ["partition", "style"], "blackhole, refuse"),
    ({"at": "1s", "partition": {"target": "redis", "colour": "red"}}, ["partition", "colour"], "parameters are"),
    ({"at": "1s", "clock-skew": {"target": "redis"}}, ["clock-skew", "offset"], "offset: -30s"),
    ({"at": "1s", "clock-skew": {"target": "redis", "offset": "later"}}, ["clock-skew", "offset"], "-30s"),
    ({"kill": "redis"}, ["at"], "at: 5s"),
    ({"at": "1s", "for": "2s", "restart": "redis"}, ["for"], "no `for`"),
    ({"at": "1s", "kill": "redis", "pause": "redis"}, ["pause"], "one fault per entry"),
    ({"at": "1s", "pause": {"target": "redis", "select": "half"}}, ["pause", "select"], "majority"),
    ({"at": "1s", "pause": {"target": "kafka-leader"}}, ["pause", "topic"], "topic"),
    ({"random": {"every": "6s", "for": "3s", "kinds": ["kil"], "targets": ["redis"]}}, ["random", "kinds", 0],
     "did you mean 'kill'"),
    ({"random": {"every": "6s", "for": "3s", "kinds": ["latency"], "targets": ["pipeline-0"]}},
     ["random", "kinds", 0], "cannot act"),
    ({"random": {"evry": "6s"}}, ["random", "evry"], "did you mean 'every'"),
    ({"random": {"every": "soon", "for": "3s", "kinds": ["kill"], "targets": ["redis"]}}, ["random", "every"], "2s"),
])
def test_every_bad_field_is_pointed_at(entry, path, words):
    e = error_of(entry)
    assert e.path == path, e
    assert words in e.message, e.message


def test_expand_checks_that_targets_exist_and_suggests_one():
    with pytest.raises(FaultSpecError) as e:
        expand([{"at": "1s", "pause": "redis"}, {"at": "2s", "kill": "kafak-1"}], 1, 60, NAMES)
    assert e.value.path == [1, "kill", "target"]
    assert "did you mean 'kafka-1'?" in e.value.message


def test_expand_rejects_a_step_after_the_end_of_the_run():
    with pytest.raises(FaultSpecError) as e:
        expand([{"at": "70s", "pause": "redis"}], 1, 60, NAMES)
    assert e.value.path == [0, "at"]


def _dump(steps: list[Step]) -> bytes:
    return json.dumps([s.to_dict() for s in steps], sort_keys=True).encode()


def test_the_same_seed_gives_the_same_schedule_byte_for_byte_and_another_seed_another():
    entries = [RANDOM, {"random": {"every": "2s", "for": "1s", "kinds": ["latency", "clock-skew", "reset"],
                                   "targets": ["redis", "postgres", "kafka"]}}]
    a = _dump(expand(entries, 42, 60, NAMES))
    b = _dump(expand(entries, 42, 60, NAMES))
    c = _dump(expand(entries, 43, 60, NAMES))
    assert a == b
    assert a != c


def test_a_random_entry_draws_steps_within_its_window_and_only_where_each_kind_can_act():
    steps = expand([RANDOM], 7, 60, NAMES)
    assert [s.at_s for s in steps] == [5.0, 11.0, 17.0, 23.0, 29.0]
    for s in steps:
        assert s.for_s == 3.0 and s.kind in ("kill", "pause", "partition")
        if s.kind == "partition":
            assert s.params["target"] == "kafka-1"  # never a pipeline replica


def test_steps_are_sorted_by_time_and_overlaps_are_kept():
    steps = expand([{"at": "10s", "for": "5s", "pause": "redis"},
                    {"at": "2s", "for": "20s", "latency": {"target": "redis", "ms": 5}}], 0, 60, NAMES)
    assert [s.kind for s in steps] == ["latency", "pause"]
