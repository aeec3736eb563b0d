"""Fuzz `onceproof check` and `onceproof report` with mutated histories and run folders: every
case ends with an exit code in {0, 1, 2, 3}, no traceback, within a time limit, and nothing
outside the output folder changes (check writes nothing; report writes only in its run folder).

Bounded for CI (about a minute); `ONCEPROOF_FUZZ=N` runs N examples per test for local use
(e.g. ONCEPROOF_FUZZ=5000)."""
from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onceproof.cli import main

EXAMPLES = int(os.environ.get("ONCEPROOF_FUZZ", "0")) or None
SETTINGS = settings(max_examples=EXAMPLES or 600, deadline=None, derandomize=EXAMPLES is None,
                    suppress_health_check=list(HealthCheck))
CASE_LIMIT_S = 20.0

BASE: list[dict[str, Any]] = [
    {"index": 0, "time": 0, "process": "harness", "type": "info", "f": "start",
     "value": {"run_id": "r", "plan": "p", "seed": 1, "rate": 1, "duration_s": 1, "order": "per-key"}},
    {"index": 1, "time": 10, "process": "load", "type": "invoke", "f": "send", "value": {"id": "e1", "key": "k", "seq": 0}},
    {"index": 2, "time": 20, "process": "load", "type": "ok", "f": "send", "value": {"id": "e1", "key": "k", "seq": 0}},
    {"index": 3, "time": 25, "process": "load", "type": "invoke", "f": "send", "value": {"id": "e2", "key": "k", "seq": 1}},
    {"index": 4, "time": 26, "process": "load", "type": "info", "f": "send", "value": {"id": "e2", "key": "k", "seq": 1}},
    {"index": 5, "time": 30, "process": "nemesis", "type": "invoke", "f": "apply",
     "value": {"fault": "f1", "kind": "kill", "targets": ["kafka-1"]}},
    {"index": 6, "time": 40, "process": "observer", "type": "ok", "f": "observe",
     "value": {"full": False, "events": [["e1", "k", 0, 0]]}},
    {"index": 7, "time": 45, "process": "observer", "type": "ok", "f": "state", "value": {"k": {"count": 1, "sum": 0}}},
    {"index": 8, "time": 50, "process": "observer", "type": "ok", "f": "final-read",
     "value": {"full": True, "events": [["e1", "k", 0, 0], ["e2", "k", 1, 1]]}},
]

HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70), st.sampled_from([2**63, 2**64 - 1, -1, 0]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "x", "[/]", "[link=javascript:alert(1)]e1[/link]", "\x1b[2J\x1b[31m", "e1", "ok",
                     "invoke", "send", "final-read", "observe", "state", "start", "javascript:alert(1)",
                     "../../etc/passwd", "/etc/passwd", "\u202e", "logs/a.log"]),
    st.text(max_size=8), st.lists(st.sampled_from(["e1", 0, None]), max_size=4),
    st.fixed_dictionaries({}, optional={"id": st.sampled_from(["e1", 1, None]), "full": st.sampled_from([True, "no"]),
                                        "events": st.sampled_from([[], ["e1"], [["e1"]], [["e1", "k", 0, 0]]])}),
)


def _paths(v: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, at + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, at + (i,))
    return out


def _set(v: Any, at: tuple[Any, ...], new: Any, drop: bool) -> Any:
    if not at:
        return new
    parent = v
    for k in at[:-1]:
        parent = parent[k]
    if drop:
        del parent[at[-1]]
    else:
        parent[at[-1]] = new
    return v


@st.composite
def mutated_records(draw: Any, base: Any) -> Any:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        at = draw(st.sampled_from(paths))
        drop = bool(at) and draw(st.booleans()) and draw(st.booleans())
        # a copy: a drawn list or dict is the strategy's own object (sampled_from), and a later
        # mutation of it would change what the strategy draws next time (FlakyStrategyDefinition)
        doc = _set(doc, at, copy.deepcopy(draw(HOSTILE)), drop)
        if not isinstance(doc, (list, dict)):
            break
    return doc


@st.composite
def history_bytes(draw: Any) -> bytes:
    recs = draw(mutated_records(BASE))
    lines = [json.dumps(r).encode() for r in recs] if isinstance(recs, list) else [json.dumps(recs).encode()]
    if lines and draw(st.booleans()):  # byte-level damage: cut, duplicate or swap lines, stray bytes
        i = draw(st.integers(0, len(lines) - 1))
        what = draw(st.sampled_from(["cut", "dup", "bytes", "swap"]))
        if what == "cut":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif what == "dup":
            lines.insert(i, lines[i])
        elif what == "bytes":
            lines[i] = draw(st.binary(max_size=12)) + lines[i]
        else:
            lines[0], lines[i] = lines[i], lines[0]
    return b"\n".join(lines) + (b"\n" if draw(st.booleans()) else b"")


def _tree(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else "dir"
    return out


def _run(argv: list[str]) -> tuple[int, str, float]:
    out, err = io.StringIO(), io.StringIO()
    t0 = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse
            code = e.code if isinstance(e.code, int) else 2
    return int(code), out.getvalue() + err.getvalue(), time.monotonic() - t0


def _assert_sane(code: int, text: str, took: float, argv: list[str]) -> None:
    assert code in (0, 1, 2, 3), (argv, code, text[-2000:])
    assert "Traceback" not in text, (argv, text[-2000:])
    assert took < CASE_LIMIT_S, (argv, took)


@SETTINGS
@given(data=history_bytes(), json_out=st.booleans())
def test_check_of_any_mutated_history_exits_cleanly_and_writes_nothing(
        data: bytes, json_out: bool, tmp_path_factory: Any) -> None:
    root = tmp_path_factory.mktemp("fuzz-check")
    path = root / "history.jsonl"
    path.write_bytes(data)
    before = _tree(root)
    argv = ["check", *(["--json"] if json_out else []), str(path)]
    code, text, took = _run(argv)
    _assert_sane(code, text, took, argv)
    assert _tree(root) == before
    shutil.rmtree(root, ignore_errors=True)


RESULTS = {"verdict": "valid", "targets": {"kafka-1": {"log": "logs/kafka-1.log"}},
           "pipeline": {"logs": ["logs/pipeline-0.log"]}, "plan": {"name": "p", "targets": {}},
           "checkers": {}, "faults": [], "errors": [], "notes": []}
PLANS = st.one_of(
    st.sampled_from(["name: p\n", "a: &x [*x]\n", "a: " + "[" * 500 + "]" * 500 + "\n", ": : :\n", "\xff\xfe",
                     "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
                         f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))]),
    st.text(max_size=40))


@SETTINGS
@given(results=mutated_records(RESULTS), plan=PLANS, history=history_bytes(), has=st.sets(
    st.sampled_from(["results", "plan", "history", "logs"]), min_size=1))
def test_report_of_any_mutated_run_folder_exits_cleanly_and_writes_only_inside_it(
        results: Any, plan: str, history: bytes, has: set[str], tmp_path_factory: Any) -> None:
    root = tmp_path_factory.mktemp("fuzz-report")
    run = root / "run"
    run.mkdir()
    (root / "beside.txt").write_text("the user's file")
    if "results" in has:
        (run / "results.json").write_text(json.dumps(results))
    if "plan" in has:
        (run / "plan.yaml").write_bytes(plan.encode("utf-8", "surrogatepass"))
    if "history" in has or "results" not in has:
        (run / "history.jsonl").write_bytes(history)
    if "logs" in has:
        (run / "logs").mkdir()
        (run / "logs" / "kafka-1.log").write_text("log\n")
    outside = {k: v for k, v in _tree(root).items() if not k.startswith("run")}
    argv = ["report", str(run)]
    code, text, took = _run(argv)
    _assert_sane(code, text, took, argv)
    assert {k: v for k, v in _tree(root).items() if not k.startswith("run")} == outside
    if code == 0:
        html = (run / "report.html").read_text(errors="replace")
        assert 'href="javascript' not in html.lower()
    shutil.rmtree(root, ignore_errors=True)
