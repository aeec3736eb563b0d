"""Bring your own pipeline, pure logic (issue 17): templates render exactly what they say and
bad ones are exit 2 with the line and field; locators find ids in JSON, headers, keys and
text; test_decoding lines become applications (inserts, upserts by xmin or by a counter,
deletes as a complete read); state values decode as text or big-endian longs."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from onceproof.formats import Format, TemplateError
from onceproof.mappings import Locator, MessageMapping, check_locator, decode_count
from onceproof.pgdecode import Follower, Rows, parse_row
from onceproof.plan import PlanError, load_plan

EVENT = ("e7", "k3", 12, "abc")
ROOT = Path(__file__).resolve().parents[2]


def test_a_json_template_renders_valid_json_with_seq_as_a_number_and_literal_braces() -> None:
    f = Format({"value": {"order": {"id": "{id}", "n": "{seq}", "tag": "x-{key}"}, "lit": "{{a}}", "l": [1, None]}})
    assert json.loads(f.value.render(EVENT)) == {"order": {"id": "e7", "n": 12, "tag": "x-k3"}, "lit": "{a}",
                                                 "l": [1, None]}


def test_text_key_and_header_templates() -> None:
    f = Format({"value": "{key},{seq},{id}", "key": "c-{key}", "headers": {"onceproof-id": "{id}"}})
    assert f.value.render(EVENT) == "k3,12,e7" and f.key.render(EVENT) == "c-k3"
    assert f.headers["onceproof-id"].render(EVENT) == "e7"
    assert f.carries_id("kafka")
    assert not Format({"value": "{key},{seq}"}).carries_id("kafka")
    assert Format({"columns": {"order_id": "{id}", "n": "{seq}"}}).columns["n"].whole_seq


@pytest.mark.parametrize("spec, path, words", [
    ({"value": "{ke}"}, ["value"], "unknown field {ke}"),
    ({"value": {"a": ["{id", 1]}}, ["value", "a", 0], "literal brace"),
    ({"headers": {"h": "{id!r}"}}, ["headers", "h"], "conversion"),
    ({"fields": {"f": "{key:>5}"}}, ["fields", "f"], "format spec"),
    ({"columns": {"pos": "{id}"}}, ["columns", "pos"], "plain column name"),
])
def test_bad_templates_name_their_field(spec: dict, path: list, words: str) -> None:
    with pytest.raises(TemplateError) as e:
        Format(spec)
    assert e.value.path == path and words in e.value.message


def test_a_bad_template_in_a_plan_is_exit_2_with_the_line_and_field(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("name: t\ntargets: {kafka: {nodes: 1}, postgres: {}}\npipeline: {command: [x]}\n"
                    "workload:\n  source: kafka:orders\n  format:\n    value: {order: {id: \"{idd}\"}}\n"
                    "  sink: {postgres: {query: \"SELECT 1\", applied: xmin}}\n")
    with pytest.raises(PlanError) as e:
        load_plan(plan)
    text = e.value.render()
    assert "p.yaml:7: workload.format.value.order.id: unknown field {idd}" in text
    assert "p.yaml:8: workload.sink.postgres" in text and "xmin needs `table`" in text
    res = subprocess.run([sys.executable, "-m", "onceproof", "plan", "validate", str(plan)], capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "unknown field {idd}" in res.stdout + res.stderr


def test_a_format_without_the_id_is_refused_and_a_sink_mapping_round_trips(tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text("name: t\ntargets: {kafka: {nodes: 1}}\npipeline: {command: [x]}\n"
                    "workload: {source: kafka:a, format: {value: \"{key}\"}, sink: kafka:b}\n")
    with pytest.raises(PlanError, match="holds {id}"):
        load_plan(plan)
    plan.write_text("name: t\ntargets: {kafka: {nodes: 1}}\npipeline: {command: [x]}\n"
                    "workload: {source: kafka:a, sink: {kafka: {topic: out, id: 'header:onceproof-id'}}}\n"
                    "checks: {state: {topic: counts, value: long}}\n")
    p = load_plan(plan)
    assert p.workload.sink == "kafka:out" and p.workload.sink_mapping is not None
    again = tmp_path / "again.yaml"
    again.write_text(json.dumps(p.resolved()))
    assert load_plan(again).workload.sink_mapping == p.workload.sink_mapping


def test_locators() -> None:
    value = orjson.dumps({"order": {"id": "e1", "items": [{"n": 3}]}, "a/b": "x"})
    assert Locator("json:/order/id").get(value, None, None, orjson.loads(value)) == "e1"
    assert Locator("json:/order/items/0/n").get(value, None, None, orjson.loads(value)) == "3"
    assert Locator("json:/a~1b").get(value, None, None, orjson.loads(value)) == "x"
    assert Locator("json:/missing").get(value, None, None, orjson.loads(value)) is None
    assert Locator("header:onceproof-id").get(b"v", None, [("other", b"z"), ("onceproof-id", b"e9")]) == "e9"
    assert Locator("key").get(b"v", b"k1", None) == "k1"
    assert Locator("regex:id=(\\w+)").get(b"x id=e5 y", None, None) == "e5"
    assert Locator("regex:^(?P<v>\\w+),").get("k2,3", None, None) == "k2"
    for bad in ("json:order", "header:", "regex:(", "nowhere"):
        with pytest.raises(ValueError):
            check_locator(bad)
    m = MessageMapping("header:onceproof-id", "regex:^([^,]+)", "regex:,(\\d+)$")
    assert m.effect(b"k3,12", b"k3", [("onceproof-id", b"e7")]) == ["e7", "k3", 12, None]
    assert MessageMapping("json:/id", None, None).effect(b"not json") == [None, None, None, None]


def test_state_values() -> None:
    assert decode_count((5).to_bytes(8, "big", signed=True), "long") == 5
    assert decode_count(b" 12\n", "text") == 12 and decode_count(None, "long") is None
    with pytest.raises(ValueError):
        decode_count(b"\x00\x01", "long")


def _follower(applied: str | None = None) -> Follower:
    return Follower("", "orders", Rows("order_id", "customer", "n", None, applied))


def _ins(i: str, n: int, c: int = 1) -> str:
    return (f"table public.orders: INSERT: order_id[text]:'{i}' customer[text]:'k''1' n[bigint]:{n} "
            f"applied_count[integer]:{c}")


def _upd(i: str, n: int, c: int) -> str:
    return f"table public.orders: UPDATE: order_id[text]:'{i}' customer[text]:'k''1' n[bigint]:{n} applied_count[integer]:{c}"


def test_parse_row_unquotes_and_reads_nulls() -> None:
    assert parse_row("a[text]:'it''s' b[bigint]:5 c[text]:null \"Odd\"[text]:'x y'") == \
        {"a": "it's", "b": "5", "c": None, "Odd": "x y"}


def test_decoded_inserts_updates_and_deletes() -> None:
    f, out = _follower("xmin"), []
    assert f._apply(["BEGIN", _ins("e1", 0), _ins("e2", 1), "COMMIT"], out) is False
    assert [e[0] for e in out] == ["e1", "e2"] and out[0] == ["e1", "k'1", 0, None]
    out = []
    assert f._apply([_upd("e1", 0, 2), "table public.other: INSERT: x[int]:1"], out) is False
    assert [e[0] for e in out] == ["e1"]  # one more application of e1, the other table ignored
    assert f._apply(["table public.orders: DELETE: order_id[text]:'e2'"], out) is True
    assert sorted(e[0] for e in f.rows.expand()) == ["e1", "e1"]


def test_an_applied_count_column_counts_and_an_update_without_it_does_not() -> None:
    f, out = _follower("applied_count"), []
    f._apply([_ins("e1", 0, 1), _upd("e1", 0, 3)], out)
    assert [e[0] for e in out] == ["e1", "e1", "e1"]
    g, out = _follower(None), []
    g._apply([_ins("e1", 0), _upd("e1", 0, 5)], out)
    assert [e[0] for e in out] == ["e1"]


def test_the_fast_path_for_inserts_equals_the_line_by_line_one() -> None:
    lines = [f"table public.t: INSERT: event_id[text]:'e{i}' key[text]:'k{i % 3}' seq[bigint]:{i} "
             f"replica[integer]:0 applied_at[timestamp with time zone]:'2026-01-01 00:00:00+00' pos[bigint]:{i}"
             for i in range(50)]
    fast = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    slow = Follower("", "t", Rows("event_id", "key", "seq", "replica"))
    a: list = []
    b: list = []
    assert fast._fast_inserts(lines, a) is True
    slow._apply(lines[:1] + ["BEGIN"] + lines[1:] + ["table public.t: DELETE: event_id[text]:'nope'"], b)
    assert a == b == [[f"e{i}", f"k{i % 3}", i, 0] for i in range(50)]
    assert fast._fast_inserts(lines[:1] + ["table public.t: UPDATE: event_id[text]:'e0'"], []) is False
