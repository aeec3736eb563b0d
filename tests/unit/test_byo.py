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


def _copy(lines: list[str]) -> str:
    """Decoded changes as `COPY ... TO STDOUT` gives them: one a line, backslash, newline and tab escaped."""
    return "".join(ln.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") + "\n" for ln in lines)


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
    assert f._apply(_copy(["BEGIN", _ins("e1", 0), _ins("e2", 1), "COMMIT"]), out) is False
    assert [e[0] for e in out] == ["e1", "e2"] and out[0] == ["e1", "k'1", 0, None]
    out = []
    assert f._apply(_copy([_upd("e1", 0, 2), "table public.other: INSERT: x[int]:1"]), out) is False
    assert [e[0] for e in out] == ["e1"]  # one more application of e1, the other table ignored
    assert f._apply(_copy(["table public.orders: DELETE: order_id[text]:'e2'"]), out) is True
    assert sorted(e[0] for e in f.rows.expand()) == ["e1", "e1"]


def test_an_applied_count_column_counts_and_an_update_without_it_does_not() -> None:
    f, out = _follower("applied_count"), []
    f._apply(_copy([_ins("e1", 0, 1), _upd("e1", 0, 3)]), out)
    assert [e[0] for e in out] == ["e1", "e1", "e1"]
    g, out = _follower(None), []
    g._apply(_copy([_ins("e1", 0), _upd("e1", 0, 5)]), out)
    assert [e[0] for e in out] == ["e1"]


def test_the_fast_path_for_inserts_equals_the_line_by_line_one() -> None:
    lines = [f"table public.t: INSERT: event_id[text]:'e{i}' key[text]:'k{i % 3}' seq[bigint]:{i} "
             f"replica[integer]:0 applied_at[timestamp with time zone]:'2026-01-01 00:00:00+00' pos[bigint]:{i}"
             for i in range(50)]
    fast = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    slow = Follower("", "t", Rows("event_id", "key", "seq", "replica"))
    a: list = []
    b: list = []
    assert fast._fast_inserts(_copy(lines), a) is True
    slow._apply(_copy(lines[:1] + ["BEGIN"] + lines[1:] + ["table public.t: DELETE: event_id[text]:'nope'"]), b)
    assert a == b == [[f"e{i}", f"k{i % 3}", i, 0] for i in range(50)]
    assert fast._fast_inserts(_copy(lines[:1] + ["table public.t: UPDATE: event_id[text]:'e0'"]), []) is False


def _effects_lines(ids: range) -> list[str]:
    return [f"table public.t: INSERT: event_id[text]:'e{i}' key[text]:'k' seq[bigint]:{i} replica[integer]:0 "
            f"pos[bigint]:{i}" for i in ids]


@pytest.mark.parametrize("fast", [True, False])
def test_each_commit_says_how_many_effects_it_made_visible_and_when(fast: bool) -> None:
    # two transactions, a third of another table only, then one whose value holds a newline (line by line)
    text = _copy(["BEGIN", *_effects_lines(range(3)), "COMMIT (at 2026-01-01 00:00:01.5+00)",
                  "BEGIN", "table public.other: INSERT: x[integer]:1", "COMMIT (at 2026-01-01 00:00:01.7+00)",
                  "BEGIN", *_effects_lines(range(3, 5)), "COMMIT (at 2026-01-01 00:00:02+00)"])
    if not fast:
        text += _copy(["BEGIN", "table public.t: INSERT: event_id[text]:'e5' key[text]:'two\nlines' seq[bigint]:5 "
                       "replica[integer]:0 pos[bigint]:5", "COMMIT (at 2026-01-01 00:00:03+00)"])
    f = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    out: list = []
    assert f._apply(text, out) is False
    t0 = 1767225600.0  # 2026-01-01 00:00:00 UTC
    expect = [[3, t0 + 1.5], [2, t0 + 2.0]] + ([] if fast else [[1, t0 + 3.0]])
    assert f._commits == expect
    assert [e[0] for e in out] == [f"e{i}" for i in range(5 if fast else 6)]
    if not fast:
        assert out[-1][1] == "two\nlines"  # COPY's escape undone


def test_a_constant_skew_of_the_servers_clock_cancels_out() -> None:
    from onceproof.pgdecode import visibility_runs

    commits = [[3, 1000.0], [2, 1000.25]]  # commit times in the server's clock
    exact = visibility_runs(commits, server_now_s=1001.0, local_now_ns=50_000_000_000)
    assert exact == [[3, 49_000_000_000], [2, 49_250_000_000]]
    skewed = [[n, t + 3600.0] for n, t in commits]  # the same server an hour ahead (a clock fault)
    assert visibility_runs(skewed, server_now_s=4601.0, local_now_ns=50_000_000_000) == exact
    assert visibility_runs([[1, 5.0], [2, 5.0]], 6.0, 10**10) == [[3, 9 * 10**9]]  # equal times merged


class _Sink:
    """A sink whose reads and visibility times are given (the observer's bounding is pure logic)."""

    def __init__(self, runs: list[list[int]] | None) -> None:
        self.runs = runs

    def read(self) -> tuple[list, bool]:
        return [["e1", "k", 0, 0], ["e2", "k", 1, 0]], False

    def visible(self) -> tuple[list[list[int]], str] | None:
        return (self.runs, "commit") if self.runs is not None else None


@pytest.mark.parametrize(("offset_s", "expect"), [(-0.2, "commit-time"), (3600.0, "now"), (-3600.0, "start")])
def test_the_observer_bounds_visibility_times_by_the_read_and_the_runs_start(tmp_path, offset_s, expect) -> None:
    import time

    import orjson

    from onceproof.observer import Observer
    from onceproof.recorder import HistoryWriter

    history = HistoryWriter(tmp_path / "h.jsonl")
    time.sleep(0.3)
    at = time.monotonic_ns() + int(offset_s * 1e9)
    obs = Observer(_Sink([[1, at], [1, at]]), history)  # type: ignore[arg-type]
    assert obs.observe_once() == 2
    history.close()
    rec = [orjson.loads(ln) for ln in open(tmp_path / "h.jsonl", "rb")][-1]
    (n, t), = rec["value"]["visible"]
    assert n == 2 and list(rec["value"]) == ["full", "visible", "visible_from", "events"]
    if expect == "commit-time":
        assert t == at - history.t0
    elif expect == "now":  # a server clock ahead: never later than the read that saw it
        assert 0 < rec["time"] - t < 100_000_000
    else:  # a clock far behind: never before the run started
        assert t == 0


def test_no_visibility_times_leave_the_reads_own_time(tmp_path) -> None:
    import orjson

    from onceproof.observer import Observer
    from onceproof.recorder import HistoryWriter

    history = HistoryWriter(tmp_path / "h.jsonl")
    for runs in (None, [[1, 5]]):  # none, or runs that do not cover the read's effects
        Observer(_Sink(runs), history).observe_once()  # type: ignore[arg-type]
    history.close()
    recs = [orjson.loads(ln) for ln in open(tmp_path / "h.jsonl", "rb")]
    assert [r["value"] for r in recs if r["type"] == "ok"] == [
        {"full": False, "events": [["e1", "k", 0, 0], ["e2", "k", 1, 0]]}] * 2


def test_an_effect_without_an_id_is_a_mapping_error_naming_the_field_that_stops_the_run(tmp_path) -> None:
    """A typo in a mapping's id location (`json:/oid` for `json:/id`) read every effect as
    [None, key, seq, replica]: the whole load ran, then the check failed on the history with
    "each sink effect must be [id, key, seq, replica]" (found by a new user). The observer
    refuses such a read at once: a failed observe naming the plan's field, and `fatal` set
    (the runner stops the load)."""
    import orjson

    from onceproof.observer import Observer
    from onceproof.pgdecode import MappingError
    from onceproof.recorder import HistoryWriter

    class _NoIds:
        id_field = "workload.sink.kafka.id"

        def read(self) -> tuple[list, bool]:
            return [[None, "k1", 0, None]], False

        def final_read(self) -> list:
            return [[None, "k1", 0, None]]

    history = HistoryWriter(tmp_path / "h.jsonl")
    obs = Observer(_NoIds(), history)  # type: ignore[arg-type]
    stopped: list[Exception] = []
    obs.on_fatal = stopped.append
    assert obs.observe_once() == 0
    assert isinstance(obs.fatal, MappingError) and stopped == [obs.fatal]
    assert str(obs.fatal).startswith("workload.sink.kafka.id: an effect read from the sink has no event id")
    with pytest.raises(MappingError, match=r"^workload\.sink\.kafka\.id: "):
        obs.final_read()
    history.close()
    recs = [orjson.loads(ln) for ln in open(tmp_path / "h.jsonl", "rb")]
    assert [(r["type"], r["f"]) for r in recs] == [("invoke", "observe"), ("fail", "observe"),
                                                   ("invoke", "final-read"), ("fail", "final-read")]


def test_the_resolved_plan_shows_only_what_a_query_mapping_uses_and_column_names_on_a_query_are_refused(
        tmp_path: Path) -> None:
    head = "name: t\ntargets: {kafka: {nodes: 1}, postgres: {}}\npipeline: {command: [x]}\n"
    plan = tmp_path / "p.yaml"
    plan.write_text(head + "workload: {source: kafka:a, sink: {postgres: {query: 'SELECT o, c, n FROM orders'}}}\n")
    resolved = load_plan(plan).resolved()["workload"]["sink-mapping"]["postgres"]
    assert resolved == {"query": "SELECT o, c, n FROM orders"}  # was shown with `id: event_id`, never used
    plan.write_text(head + "workload: {source: kafka:a, sink: {postgres: {table: orders}}}\n")
    table = load_plan(plan).resolved()["workload"]["sink-mapping"]["postgres"]
    assert table["id"] == "event_id" and table["schema"] == "public"
    plan.write_text(head + "workload: {source: kafka:a, sink: {postgres: {query: 'SELECT 1', id: order_id}}}\n")
    with pytest.raises(PlanError, match=r"p\.yaml:4: workload\.sink\.postgres.*id: only for a `table`; a query's "
                                        r"columns are taken by position"):
        load_plan(plan)


def test_the_progress_clock_reads_sensibly_past_the_planned_load() -> None:
    from onceproof.commands.run import elapsed_text

    assert elapsed_text(5.0, 12.0) == "  5.0s/12s"
    assert elapsed_text(17.0, 12.0) == "12s load done +5.0s"  # was `17.0s/12s` while draining


def test_changes_with_newlines_and_backslashes_in_values_are_read_back() -> None:
    lines = ["BEGIN", "table public.t: INSERT: event_id[text]:'e1' key[text]:'a\ntable public.t: DELETE: x' "
             "seq[bigint]:1 replica[integer]:0", "table public.t: INSERT: event_id[text]:'e2' key[text]:'b\\c' "
             "seq[bigint]:2 replica[integer]:0", "COMMIT (at 2026-01-01 00:00:01+00)"]
    f = Follower("", "t", Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    out: list = []
    assert f._apply(_copy(lines), out) is False  # as the server escapes them (Follower._changes)
    assert out == [["e1", "a\ntable public.t: DELETE: x", 1, 0], ["e2", "b\\c", 2, 0]]
    assert f._commits == [[2, 1767225601.0]]


def test_a_redis_state_is_checked_in_the_plan(tmp_path: Path) -> None:
    head = "name: t\npipeline: {command: [x]}\nworkload: {source: kafka:a, sink: postgres:b}\n"
    plan = tmp_path / "p.yaml"
    plan.write_text(head + "targets: {kafka: {nodes: 1}, postgres: {}, redis: {}}\n"
                    "checks: {state: {redis: {hash: 'count:*', sum: total}}}\n")
    assert load_plan(plan).checks.state.redis.hash == "count:*"
    plan.write_text(head + "targets: {kafka: {nodes: 1}, postgres: {}}\nchecks: {state: {redis: {hash: 'count:*'}}}\n")
    with pytest.raises(PlanError, match="read from Redis: add `redis: {}`"):
        load_plan(plan)
    plan.write_text(head + "targets: {kafka: {nodes: 1}, postgres: {}, redis: {}}\n"
                    "checks: {state: {redis: {hash: 'a*b*'}}}\n")
    with pytest.raises(PlanError, match=r"p\.yaml:5: checks\.state.*a pattern with one `\*`"):
        load_plan(plan)
    plan.write_text(head + "targets: {kafka: {nodes: 1}, postgres: {}, redis: {}}\n"
                    "checks: {state: {redis: {hash: counts, sum: total}}}\n")
    with pytest.raises(PlanError, match="sum: only for one hash per key"):
        load_plan(plan)


def test_a_commit_made_before_the_servers_clock_jumped_is_placed_by_the_reading_before_the_jump() -> None:
    from onceproof.pgdecode import visibility_runs

    s = 10**9
    # a clock fault healed between two reads: the server's clock jumps 90 s forward; a commit made
    # during the skew (at server time 1000.2, local 10.2 s) is read after the heal
    before = (1000.0, 10 * s)  # the previous read's reading: server 1000.0 s at local 10 s (skewed by -90 s)
    now = (1090.5, int(10.5 * s))  # healed: server 1090.5 at local 10.5 s
    assert visibility_runs([[1, 1000.2], [2, 1090.4]], *now, previous=before) == [[1, int(10.2 * s)],
                                                                                    [2, int(10.4 * s)]]
    # applied: the clock jumps 90 s back; a commit made before the jump (server 1090.3)
    before, now = (1090.0, 10 * s), (1000.5, int(10.5 * s))
    assert visibility_runs([[1, 1090.3]], *now, previous=before) == [[1, int(10.3 * s)]]
    # without a reading before: this reading's placement (bounded later by the observer)
    assert visibility_runs([[1, 1090.3]], *now) == [[1, int(100.3 * s)]]


def test_ids_no_read_saw_are_placed_where_they_claim_no_reorder_and_seen_ones_keep_their_order():
    """harness/mappings.py `in_read_order`: seen effects by (first read, seq); an unseen one
    right after its key's highest seq not above its own. Per key, a content that was in order
    stays in order with the unseen ones in it; a real inversion between seen ones stays."""
    from onceproof.mappings import in_read_order

    first = {"a1": 1, "a5": 2, "b9": 1, "c5": 1, "c2": 2}
    content = [["a5", "a", 5, None], ["a3", "a", 3, None], ["b9", "b", 9, None], ["a1", "a", 1, None],
               ["a0", "a", 0, None], ["b2", "b", 2, None], ["c2", "c", 2, None], ["c5", "c", 5, None],
               ["d7", "d", 7, None]]
    out = in_read_order(content, first)
    per_key: dict[str, list[int]] = {}
    for e in out:
        per_key.setdefault(e[1], []).append(e[2])
    assert per_key == {"a": [0, 1, 3, 5], "b": [2, 9], "c": [5, 2], "d": [7]}
    assert sorted(map(str, out)) == sorted(map(str, content))
