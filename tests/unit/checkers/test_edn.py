"""Jepsen EDN histories as Jepsen writes them, read with Jepsen's meaning (issue 15)."""
from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceproof.checkers import edn, linearizable, models
from onceproof.checkers.history import HistoryError
from onceproof.checkers.ops import guess_model, read_edn_history
from onceproof.cli import main
from onceproof.commands.check import guess_format

# The register history: linearizable under Jepsen's meaning (the failed cas never
# happened), not under Porcupine's (a failed cas returned false, but its old value matched).
MAPS = [
    "{:process 0, :type :invoke, :f :write, :value 3}",
    "{:process 0, :type :ok, :f :write, :value 3}",
    "{:process 1, :type :invoke, :f :cas, :value [3 4]}",
    "{:process 1, :type :fail, :f :cas, :value [3 4]}",
    "{:process 2, :type :invoke, :f :read, :value nil}",
    "{:process 2, :type :ok, :f :read, :value 3}",
]

SHAPES = {
    "one map per line": "\n".join(MAPS) + "\n",
    "vector across lines": """; register history, one vector, maps across lines
[{:process 0, :type :invoke, :f :write, :value 3}
 {:process 0, :type :ok,     :f :write, :value 3}
 {:process 1, :type :invoke, :f :cas,   :value [3 4]}
 {:process 1, :type :fail,   :f :cas,   :value [3 4]}
 {:process 2, :type :invoke, :f :read,  :value nil
  :time 1234567}
 {:process 2, :type :ok,     :f :read,  :value 3}]
""",
    "list, no commas": "(" + "\n".join(m.replace(",", "") for m in MAPS) + ")\n",
    "all on one line": "[" + " ".join(MAPS) + "]",
    "comments and blank lines": ";; header\n\n" + "\n; between\n".join(MAPS) + " ; trailing\n",
    "tagged jepsen.history.Op": "[" + "\n".join("#jepsen.history.Op" + m for m in MAPS) + "]\n",
    "extra keys": "\n".join(m[:-1] + f', :index {i}, :time {10**20 + i}N, :node "n1", :error "x\\"y\\n"'
                                      ', :debug {:set #{1 2} :r 22/7 :f 1.5e3 :d 2.5M :at #inst "2024-01-01T00:00:00Z"}'
                                      ', :nested [[1 {:a [2]}] ()]}'
                            for i, m in enumerate(MAPS)) + "\n",
    "discarded forms and nemesis ops": "[#_{:process 9, :type :invoke, :f :write, :value 9}\n"
                                       "{:process :nemesis, :type :info, :f :start, :value nil}\n"
                                       + "\n".join(MAPS) + "]\n",
    "a map split mid-pair": "\n".join(m.replace(":value ", ":value\n  ") for m in MAPS) + "\n",
}


def write(tmp_path: Path, text: str, name: str = "h.edn") -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def strip(ops: list[Any]) -> list[tuple[Any, ...]]:
    """Ops without their times (line-based in one layout, position-based in the other)."""
    return [(o.id, o.process, o.input, o.output) for o in ops]


@pytest.mark.parametrize("shape", list(SHAPES))
def test_every_edn_layout_reads_to_the_same_ops_and_verdict(shape: str, tmp_path: Path) -> None:
    ref = read_edn_history(write(tmp_path, SHAPES["one map per line"], "ref.edn"))
    h = read_edn_history(write(tmp_path, SHAPES[shape]))
    assert strip(h.ops) == strip(ref.ops) == [(0, 0, ("write", 3), None), (1, 2, ("read",), 3)]
    if "nemesis" not in shape:  # a nemesis op takes a place in time too
        assert [(o.call, o.ret) for o in h.ops] == [(o.call, o.ret) for o in ref.ops]
    assert guess_model(h) == "cas-register"
    assert guess_format(str(tmp_path / "h.edn")) == "jepsen-edn"
    assert linearizable.check(h.ops, models.cas_register.configured(nil_read_any=True))["valid"] is True


@pytest.mark.parametrize("text, value", [
    ("nil", None), ("true", True), ("false", False), ("42", 42), ("-7", -7), ("+3", 3),
    ("123456789012345678901234567890N", 123456789012345678901234567890), ("22/7", Fraction(22, 7)),
    ("1.5", 1.5), ("1e3", 1000.0), ("2.5M", Decimal("2.5")), ('"a\\"b\\n\\u0041"', 'a"b\nA'),
    (":read", ":read"), ("foo/bar", "foo/bar"),
])
def test_scalars_read_as_edn_says(text: str, value: Any) -> None:
    got = edn.atom(text)
    assert got == value and type(got) is type(value) or isinstance(got, str)


@pytest.mark.parametrize("text, value", [
    ("{:v [1 [2 3]]}", {":v": (1, (2, 3))}),
    ("{:v {:x 1}}", {":v": {":x": 1}}),
    ("{:v #{1 2}}", {":v": frozenset({1, 2})}),
    ("{:v (1 \\a \\newline)}", {":v": (1, "a", "\n")}),
    ('{:v #inst "2024-01-01"}', {":v": "2024-01-01"}),
    ('{:v #uuid "0000"}', {":v": "0000"}),
    ('{:v "two\nlines"}', {":v": "two\nlines"}),
    ("{:v ##Inf}", {":v": float("inf")}),
])
def test_nested_values_read_as_python_values(text: str, value: Any, tmp_path: Path) -> None:
    [(line, m)] = list(edn.iter_maps(write(tmp_path, text)))
    assert line == 1 and m == value


@pytest.mark.parametrize("text, line, words", [
    ("[{:process 0, :type :invoke, :f :read, :value nil}\n", 1, "never closed"),
    ("{:process 0, :type :invoke, :f :read, :value nil]\n", 1, "closes the '{'"),
    ("{:process 0, :type :invoke, :f :read, :value nil}\n]\n", 2, "nothing open"),
    ("{:process 0 :type}\n", 1, "odd number"),
    ("{:process 0, :type :invoke, :f :read}\n42\n", 2, "expected an EDN op map"),
    ("{:type :invoke, :f :read, :value nil}\n", 1, "no :process"),
    ("{:process 0, :type :started, :f :read, :value nil}\n", 1, ":type must be"),
    ("{:process 0, :type :ok, :f :read, :value 1}\n", 1, "no :invoke before it"),
    ("{:process 0, :type :invoke, :f :cas, :value 3}\n", 1, "[old new]"),
    ("{:process 0, :type :invoke, :f :txn, :value [[:x 1 2]]}\n", 1, "micro-op"),
    ('{:process 0, :type :invoke, :f :read, :value "open\n', 1, "never closed"),
    ("{:process 0, :type :invoke, :f :read, :value 12abc}\n", 1, "not an EDN number"),
    ("{:process 0, :type :invoke, :f :frobnicate, :value 1}\n", None, "cannot tell the model"),
    ("{:process 0, :type :invoke, :f :read, :value nil}\n"
     "{:process 1, :type :invoke, :f :cas, :value [1 2]}\n", 2, "models that accept :cas: cas-register"),
    # a kv op whose :value has no key (issue 18): refused, not judged
    ("{:process 0, :type :invoke, :f :get, :value {}}\n{:process 0, :type :ok, :f :get, :value {}}\n", 1,
     "a :get of the kv model needs a key"),
    ("{:process 0, :type :invoke, :f :put, :key \"a\", :value \"1\"}\n{:process 0, :type :ok, :f :put, :key \"a\", "
     ":value \"1\"}\n{:process 1, :type :invoke, :f :get, :value [\"a\"]}\n", 3, "a :get of the kv model needs a key"),
    # a vector (or map, or nil) as the key of an independent [key value] op
    ("{:process 0, :type :invoke, :f :read, :value [[1 2] nil]}\n"
     "{:process 0, :type :ok, :f :read, :value [[1 2] 3]}\n", 1, "the key of an independent [key value] :value "
     "must be a string, keyword or number"),
    ('{:process 0, :type :invoke, :f :get, :key [1], :value nil}\n', 1, ":key must be a string, keyword or number"),
    # found by a new user (nu3 N5): malformed histories once read as a verdict
    # a process invokes twice without completing (Jepsen: a process is single-threaded)
    ("{:type :invoke, :f :write, :value 1, :process 0}\n{:type :invoke, :f :write, :value 2, :process 0}\n"
     "{:type :ok, :f :write, :value 2, :process 0}\n", 2, "has not completed"),
    # a completion whose :f is not its invoke's
    ("{:type :invoke, :f :write, :value 1, :process 0}\n{:type :ok, :f :read, :value 1, :process 0}\n", 2,
     "completes the :invoke :write on line 1 (expected :f :write"),
    # a map with a duplicate key (invalid EDN)
    ("{:type :invoke :f :write :value 1 :process 0 :process 1}\n", 1, "the key :process twice"),
    # a tag no Jepsen history holds
    ("{:type :invoke, :f :write, :value #foo 1, :process 0}\n{:type :ok, :f :write, :value 1, :process 0}\n", 1,
     "an unknown tag #foo"),
    # a string process: neither a client (an integer) nor :nemesis
    ('{:type :invoke, :f :write, :value 1, :process "zero"}\n{:type :ok, :f :write, :value 1, :process "zero"}\n', 1,
     ':process must be an integer (a client) or a keyword such as :nemesis, got "zero"'),
])
def test_bad_edn_exits_2_with_file_line_and_what_was_expected(text: str, line: int | None, words: str,
                                                               tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path, text)
    args = ["check", path] + (["--model", "register"] if "cas-register" in words else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert (f"{path}:{line}:" if line else f"{path}:") in err and words in err and "Traceback" not in err


@pytest.mark.parametrize("model, f, takers", [
    ("register", "cas", "cas-register"), ("counter", "cas", "cas-register"),
    ("cas-register", "acquire", "mutex"), ("kv", "read", "register, cas-register, counter, set"),
])
def test_an_op_the_model_does_not_know_is_refused_naming_the_models_that_accept_it(
        model: str, f: str, takers: str, tmp_path: Path, capsys: Any) -> None:
    path = write(tmp_path, f"{{:process 0, :type :invoke, :f :{f}, :value [1 2]}}\n"
                           f"{{:process 0, :type :ok, :f :{f}, :value [1 2]}}\n")
    assert main(["check", "--model", model, path]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1:" in err and f":f :{f} is not one the {model} model knows" in err
    assert f"models that accept :{f}: {takers}" in err and "Traceback" not in err


def history(*ops: tuple[int, str, str, str]) -> str:
    """EDN maps from (process, type, f, value) tuples."""
    return "\n".join(f"{{:process {p}, :type :{t}, :f :{f}, :value {v}}}" for p, t, f, v in ops) + "\n"


def run_check(tmp_path: Path, text: str, capsys: Any, *args: str) -> tuple[int, dict[str, Any]]:
    rc = main(["check", "--json", *args, write(tmp_path, text)])
    out = capsys.readouterr().out.strip()
    return rc, json.loads(out) if out else {}


# independent ops: [k v] on every op; each key is its own register
KEYED_VALID = history((0, "invoke", "write", "[1 3]"), (1, "invoke", "write", "[2 5]"),
                      (0, "ok", "write", "[1 3]"), (1, "ok", "write", "[2 5]"),
                      (2, "invoke", "read", "[1 nil]"), (2, "ok", "read", "[1 3]"),
                      (3, "invoke", "read", "[2 nil]"), (3, "ok", "read", "[2 5]"))
KEYED_INVALID = KEYED_VALID.replace("{:process 3, :type :ok, :f :read, :value [2 5]}",
                                    "{:process 3, :type :ok, :f :read, :value [2 3]}")
KEYED_CAS = history((0, "invoke", "write", "[1 3]"), (0, "ok", "write", "[1 3]"),
                    (1, "invoke", "cas", "[1 [3 4]]"), (1, "ok", "cas", "[1 [3 4]]"),
                    (2, "invoke", "read", "[1 nil]"), (2, "ok", "read", "[1 4]"),
                    (3, "invoke", "write", "[2 4]"), (3, "ok", "write", "[2 4]"))


@pytest.mark.parametrize("model", ["register", "cas-register", None])
@pytest.mark.parametrize("text, rc", [(KEYED_VALID, 0), (KEYED_INVALID, 1)])
def test_independent_ops_are_checked_per_key_under_each_register_model(
        model: str | None, text: str, rc: int, tmp_path: Path, capsys: Any) -> None:
    code, out = run_check(tmp_path, text, capsys, *(["--model", model] if model else []))
    lin = out["checkers"]["linearizable"]
    assert code == rc and lin["partitions"] == 2 and lin["model"].endswith("per key")


def test_independent_cas_ops_read_the_pair_inside_the_tuple(tmp_path: Path, capsys: Any) -> None:
    code, out = run_check(tmp_path, KEYED_CAS, capsys)
    assert code == 0 and out["checkers"]["linearizable"]["model"] == "cas-register per key"
    bad = KEYED_CAS.replace(":value [1 [3 4]]}", ":value [1 [4 5]]}")
    assert run_check(tmp_path, bad, capsys)[0] == 1


# Verdicts that differ between Jepsen's and Porcupine's meaning of :fail (and of a nil read)
MEANING_CASES = {
    "failed cas whose old value matched": (SHAPES["one map per line"], 0, 1),
    "failed cas that would have changed what is read": (
        history((0, "invoke", "write", "1"), (0, "ok", "write", "1"), (1, "invoke", "cas", "[1 2]"),
                (1, "fail", "cas", "[1 2]"), (2, "invoke", "read", "nil"), (2, "ok", "read", "1")), 0, 1),
    "failed write is dropped under both": (
        history((0, "invoke", "write", "1"), (0, "fail", "write", "1"), (1, "invoke", "read", "nil"),
                (1, "ok", "read", "1")), 1, 1),
    "a read of nil after a write": (
        history((0, "invoke", "write", "1"), (0, "ok", "write", "1"), (1, "invoke", "read", "nil"),
                (1, "ok", "read", "nil")), 0, 1),
    "a failed cas that really failed": (
        history((0, "invoke", "write", "1"), (0, "ok", "write", "1"), (1, "invoke", "cas", "[5 2]"),
                (1, "fail", "cas", "[5 2]"), (2, "invoke", "read", "nil"), (2, "ok", "read", "1")), 0, 0),
    "info may happen at any time after its invoke": (
        history((0, "invoke", "write", "1"), (0, "info", "write", "1"), (1, "invoke", "read", "nil"),
                (1, "ok", "read", "nil"), (2, "invoke", "read", "nil"), (2, "ok", "read", "1")), 0, 0),
}


@pytest.mark.parametrize("case", list(MEANING_CASES))
def test_fail_means_what_the_source_format_says(case: str, tmp_path: Path, capsys: Any) -> None:
    text, jepsen_rc, porcupine_rc = MEANING_CASES[case]
    assert run_check(tmp_path, text, capsys)[0] == jepsen_rc
    assert run_check(tmp_path, text, capsys, "--meaning", "jepsen")[0] == jepsen_rc
    assert run_check(tmp_path, text, capsys, "--meaning", "porcupine")[0] == porcupine_rc


MODEL_CASES = {
    "mutex": (
        history((0, "invoke", "acquire", "nil"), (0, "ok", "acquire", "nil"), (0, "invoke", "release", "nil"),
                (0, "ok", "release", "nil"), (1, "invoke", "acquire", "nil"), (1, "ok", "acquire", "nil")),
        history((0, "invoke", "acquire", "nil"), (0, "ok", "acquire", "nil"), (1, "invoke", "acquire", "nil"),
                (1, "ok", "acquire", "nil"))),
    "multi-register": (
        history((0, "invoke", "txn", "[[:w :x 1] [:w :y 2]]"), (0, "ok", "txn", "[[:w :x 1] [:w :y 2]]"),
                (1, "invoke", "txn", "[[:r :x nil] [:r :y nil] [:r :z nil]]"),
                (1, "ok", "txn", "[[:r :x 1] [:r :y 2] [:r :z nil]]")),
        history((0, "invoke", "txn", "[[:w :x 1] [:w :y 2]]"), (0, "ok", "txn", "[[:w :x 1] [:w :y 2]]"),
                (1, "invoke", "txn", "[[:r :x nil] [:r :y nil]]"), (1, "ok", "txn", "[[:r :x 1] [:r :y 3]]"))),
    "fifo-queue": (
        history((0, "invoke", "enqueue", "1"), (0, "ok", "enqueue", "1"), (0, "invoke", "enqueue", "2"),
                (0, "ok", "enqueue", "2"), (1, "invoke", "dequeue", "nil"), (1, "ok", "dequeue", "1")),
        history((0, "invoke", "enqueue", "1"), (0, "ok", "enqueue", "1"), (0, "invoke", "enqueue", "2"),
                (0, "ok", "enqueue", "2"), (1, "invoke", "dequeue", "nil"), (1, "ok", "dequeue", "2"))),
    "unordered-queue": (
        history((0, "invoke", "enqueue", "1"), (0, "ok", "enqueue", "1"), (0, "invoke", "enqueue", "2"),
                (0, "ok", "enqueue", "2"), (1, "invoke", "dequeue", "nil"), (1, "ok", "dequeue", "2")),
        history((0, "invoke", "enqueue", "1"), (0, "ok", "enqueue", "1"), (1, "invoke", "dequeue", "nil"),
                (1, "ok", "dequeue", "1"), (1, "invoke", "dequeue", "nil"), (1, "ok", "dequeue", "1"))),
}


@pytest.mark.parametrize("model", list(MODEL_CASES))
def test_each_new_model_judges_a_valid_and_an_invalid_history(model: str, tmp_path: Path, capsys: Any) -> None:
    valid, invalid = MODEL_CASES[model]
    args = [] if model != "unordered-queue" else ["--model", model]
    code, out = run_check(tmp_path, valid, capsys, *args)
    assert code == 0 and out["checkers"]["linearizable"]["model"] == model
    code, out = run_check(tmp_path, invalid, capsys, *args)
    assert code == 1 and out["checkers"]["linearizable"]["minimal_invalid"]


def test_unordered_queue_model_accepts_what_fifo_refuses() -> None:
    q = models.unordered_queue
    ok, s = q.step(q.step(q.init(), ("enqueue", 1), None)[1], ("enqueue", 2), None)
    assert q.step(s, ("dequeue",), 2)[0] and not models.fifo_queue.step(((1, 2)), ("dequeue",), 2)[0]


def test_initial_value_sets_the_registers_first_state(tmp_path: Path, capsys: Any) -> None:
    text = history((0, "invoke", "read", "nil"), (0, "ok", "read", "0"), (1, "invoke", "cas", "[0 1]"),
                   (1, "ok", "cas", "[0 1]"))
    assert run_check(tmp_path, text, capsys)[0] == 1
    assert run_check(tmp_path, text, capsys, "--initial", "0")[0] == 0
    assert run_check(tmp_path, text, capsys, "--initial", "0", "--meaning", "porcupine")[0] == 0
    assert run_check(tmp_path, text, capsys, "--initial", "5")[0] == 1
    text = history((0, "invoke", "txn", "[[:r :x nil]]"), (0, "ok", "txn", "[[:r :x 7]]"))
    assert run_check(tmp_path, text, capsys, "--initial", "7")[0] == 0
    assert run_check(tmp_path, text, capsys)[0] == 1
    assert main(["check", "--initial", "0", "--model", "mutex", write(tmp_path, text)]) == 2
    assert "fixed initial state" in capsys.readouterr().err
    assert main(["check", "--initial", "12abc", write(tmp_path, text)]) == 2


def test_invalid_history_reports_the_smallest_set_that_cannot_be_linearized(tmp_path: Path, capsys: Any) -> None:
    # starts at 1: reading 1 is fine until some write ends before the read starts
    noise = [(p, t, "read", "nil" if t == "invoke" else "1") for p in range(3, 8) for t in ("invoke", "ok")]
    after = [(p, t, f, "2" if v == "1" else v) for p, t, f, v in noise[4:]]
    text = history(*noise[:4], (0, "invoke", "write", "2"), (0, "ok", "write", "2"), *after,
                   (1, "invoke", "read", "nil"), (1, "ok", "read", "1"))
    code, out = run_check(tmp_path, text, capsys, "--initial", "1")
    lin = out["checkers"]["linearizable"]
    assert code == 1 and lin["minimal_complete"] is True
    assert [(o["input"], o["output"], o["line"]) for o in lin["minimal_invalid"]] == [
        (["write", 2], None, 5), (["read"], 1, 13)]


def test_porcupine_kv_edn_with_key_field_is_still_read_as_kv(tmp_path: Path, capsys: Any) -> None:
    text = ('{:process 0, :type :invoke, :f :put, :key "a", :value "x"}\n'
            '{:process 0, :type :ok, :f :put, :key "a", :value "x"}\n'
            '{:process 1, :type :invoke, :f :get, :key "a", :value nil}\n'
            '{:process 1, :type :ok, :f :get, :key "a", :value "y"}\n')
    code, out = run_check(tmp_path, text, capsys)
    assert code == 1 and out["checkers"]["linearizable"]["model"] == "kv"


def test_a_history_that_raises_in_the_model_is_refused_not_a_traceback(tmp_path: Path, capsys: Any) -> None:
    text = history((0, "invoke", "add", "[1 2]"), (0, "ok", "add", "[1 2]"), (1, "invoke", "read", "nil"),
                   (1, "ok", "read", "3"))
    assert main(["check", write(tmp_path, text)]) == 2
    err = capsys.readouterr().err
    assert ":1:" in err and "shape the counter model takes" in err and "Traceback" not in err


def test_reader_yields_ops_before_the_history_vector_closes(tmp_path: Path) -> None:
    path = write(tmp_path, "[" + "\n".join(MAPS) + "\n")  # never closed: the error comes last
    got = []
    with pytest.raises(HistoryError) as e:
        for line, m in edn.iter_maps(path):
            got.append(line)
    assert got == [1, 2, 3, 4, 5, 6] and e.value.line == 1


# ---------------------------------------------------------------- property: layout changes nothing

_VALUES = st.sampled_from(["nil", "0", "1", "2", "3"])


@st.composite
def edn_histories(draw: Any) -> list[str]:
    """Random register histories as EDN maps (well-formed: each invoke then maybe a completion)."""
    maps: list[str] = []
    pending: dict[int, tuple[str, str]] = {}
    for _ in range(draw(st.integers(1, 14))):
        p = draw(st.integers(0, 3))
        if p in pending:
            f, v = pending.pop(p)
            typ = draw(st.sampled_from(["ok", "ok", "fail", "info"]))
            if f == "read" and typ == "ok":
                v = draw(_VALUES)
            maps.append(f"{{:process {p}, :type :{typ}, :f :{f}, :value {v}, :time {len(maps)}}}")
            continue
        f = draw(st.sampled_from(["read", "write", "cas"]))
        v = "nil" if f == "read" else (draw(_VALUES) if f == "write" else f"[{draw(_VALUES)} {draw(_VALUES)}]")
        pending[p] = (f, v)
        maps.append(f"{{:process {p}, :type :invoke, :f :{f}, :value {v}}}")
    return maps


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(maps=edn_histories(), breaks=st.lists(st.booleans(), min_size=8, max_size=8))
def test_one_map_per_line_and_a_multiline_vector_give_the_same_ops_and_verdict(
        maps: list[str], breaks: list[bool], tmp_path: Path) -> None:
    per_line = write(tmp_path, "\n".join(maps) + "\n", "a.edn")
    spread = [m.replace(", ", ",\n  " if breaks[i % 8] else " ") for i, m in enumerate(maps)]
    vector = write(tmp_path, "; a vector\n[" + "\n ".join(spread) + "]\n", "b.edn")
    a, b = read_edn_history(per_line), read_edn_history(vector)
    assert strip(a.ops) == strip(b.ops)
    assert [(o.call, o.ret) for o in a.ops] == [(o.call, o.ret) for o in b.ops]
    for meaning in ("jepsen", "porcupine"):
        ha, hb = read_edn_history(per_line, meaning), read_edn_history(vector, meaning)
        model = models.cas_register.configured(nil_read_any=meaning == "jepsen")
        assert linearizable.check(ha.ops, model)["valid"] == linearizable.check(hb.ops, model)["valid"]


def test_report_lanes_mark_the_smallest_non_linearizable_set(tmp_path: Path) -> None:
    from onceproof.report import figures

    h = read_edn_history(write(tmp_path, history((0, "invoke", "write", "1"), (0, "ok", "write", "1"),
                                                 (1, "invoke", "read", "nil"), (1, "ok", "read", "2"))))
    r = linearizable.check(h.ops, models.cas_register, minimise_s=1)
    fig, _ = figures.lanes(r)
    assert fig is not None and r["minimal_invalid"] == [0, 1]  # the read of 2, and the write it contradicts
    assert "in the smallest set that cannot be linearized" in [t["name"] for t in fig["data"]]


def test_what_jepsen_writes_is_still_read(tmp_path: Path, capsys: Any) -> None:
    # a :value that differs from its invoke's (a read's invoke has nil; a write that completes
    # with another value is the history's business, not malformed), :nemesis ops, tags Jepsen
    # writes (#jepsen.history.Op, #inst, #uuid, Clojure's #error and #object) and a
    # process that invokes again after its op completed
    path = write(tmp_path, (
        '#jepsen.history.Op{:index 0, :time 1, :type :invoke, :process 0, :f :write, :value 1}\n'
        '{:type :ok, :f :write, :value 2, :process 0, :time #inst "2026-12-01T00:00:00.000-00:00"}\n'
        '{:type :info, :f :start, :value nil, :process :nemesis, :id #uuid "f81d4fae-7dec-11d0-a765-00a0c91e6bf6"}\n'
        '{:type :invoke, :f :read, :value nil, :process 0}\n'
        '{:type :ok, :f :read, :value 1, :process 0}\n'
        '{:type :invoke, :f :read, :value nil, :process 1}\n'
        '{:type :info, :f :read, :value nil, :process 1, :exception #error {:cause "timeout"}, '
        ':obj #object[java.lang.Object 0x1 "x"]}\n'))
    assert main(["check", path]) == 0, capsys.readouterr()
