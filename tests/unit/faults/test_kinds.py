"""Everything about a fault kind lives with the kind: its parameters, its random defaults and
how the report draws it are declared by `@kind(...)`, and the plan's schema and the report
read them from there."""
from __future__ import annotations

import json
import re

import pytest

from onceproof.faults.base import Params, known_kinds, marker_symbols, process_marks
from onceproof.plan import json_schema

KINDS = sorted(known_kinds())


def test_the_families_register_every_kind_once_the_package_is_imported():
    assert {"kill", "restart", "pause", "partition", "latency", "clock-skew", "partition-isolate",
            "packet-loss"} <= set(KINDS)


@pytest.mark.parametrize("name", KINDS)
def test_every_kind_declares_a_colour_a_marker_a_params_model_and_random_defaults(name):
    k = known_kinds()[name]
    assert re.fullmatch(r"#[0-9a-f]{6}", k.colour), k.colour
    assert k.marker and marker_symbols()[name] == k.marker
    assert isinstance(k.params, type) and issubclass(k.params, Params)
    assert isinstance(k.random_defaults, dict)
    assert k.summary
    fields = {f.alias or n for n, f in k.params.model_fields.items()}
    assert set(k.random_defaults) <= fields
    required = {f.alias or n for n, f in k.params.model_fields.items() if f.is_required()}
    if required <= set(k.random_defaults):  # a kind a random entry can draw without `with:`
        first = {key: v[0] if isinstance(v, list) else v for key, v in k.random_defaults.items()}
        k.decode(first)


def test_process_kinds_are_marked_on_their_targets_lane_with_a_symbol_for_each_mark():
    marks = process_marks()
    assert marks == {"kill": ("kill", "restart"), "restart": ("restart", "restarted"), "pause": ("pause", "resume")}
    symbols = marker_symbols()
    assert all(verb in symbols for pair in marks.values() for verb in pair)


def test_the_report_reads_its_colours_and_markers_from_the_kinds():
    from onceproof.report import figures, timeline

    assert set(figures.FAULT_COLOURS) == set(KINDS)
    assert timeline.PROCESS_FAULTS == process_marks()


def test_the_plan_schema_describes_every_kind_and_its_fields():
    schema = json_schema()
    defs = schema["$defs"]
    steps = [defs[ref["$ref"].rsplit("/", 1)[1]] for ref in schema["properties"]["faults"]["items"]["anyOf"]]
    by_kind = {}
    for step in steps:
        for key, prop in step["properties"].items():
            if key not in ("at", "for"):
                by_kind[key] = prop
    assert set(KINDS) <= set(by_kind)
    assert "random" in by_kind
    body = defs[by_kind["latency"]["anyOf"][0]["$ref"].rsplit("/", 1)[1]]
    assert {"ms", "jitter", "from", "direction", "target", "select"} <= set(body["properties"])
    assert body["properties"]["ms"]["description"]
    assert set(defs["RandomSpec"]["properties"]["kinds"]["items"]["enum"]) == set(KINDS)
    json.dumps(schema)  # plain JSON


def test_a_missing_parameter_names_the_kind_the_field_and_an_example():
    from onceproof.faults.base import ParamError

    with pytest.raises(ParamError) as e:
        known_kinds()["clock-skew"].decode({})
    assert e.value.field == "offset"
    assert e.value.message.startswith("clock-skew needs `offset`")
    assert "offset: -30s or offset: 2m" in e.value.message


@pytest.mark.parametrize("text,seconds", [("250us", 0.00025), ("+30s", 30.0), ("1h", 3600.0)])
def test_one_duration_grammar_for_plans_and_faults(text, seconds):
    from onceproof.faults.params import duration
    from onceproof.plan import parse_duration

    assert parse_duration(text) == duration(text, signed=True) == seconds


@pytest.mark.parametrize("extra, accepted", [
    ({}, True),
    ({"restart-after": "2s"}, True),  # a kind's parameter beside the kind: the reader takes it
    ({"restart-afterr": "2s"}, False),  # a typo: the reader refuses it, so must the schema
    ({"ms": 100}, False),  # another kind's parameter
])
def test_the_plan_schema_accepts_a_fault_step_exactly_when_the_plan_reader_does(tmp_path, extra, accepted):
    import jsonschema
    import yaml

    from onceproof.plan import PlanError, load_plan

    plan = {"name": "s", "targets": {"kafka": {"nodes": 1}, "postgres": {}}, "pipeline": {"command": ["true"]},
            "faults": [{"at": "1s", "kill": "pipeline-0", **extra}]}
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(plan))
    try:
        load_plan(path)
        read = True
    except PlanError:
        read = False
    assert read is accepted
    assert (not errors) is accepted, [e.message for e in errors]
