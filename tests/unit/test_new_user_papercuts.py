"""Small things a new user hit: a null read shown as the model's -1 in `onceproof check`; a
negative `--budget` answered with argparse's terse message; the report not saying where its
latency ends; `check --memory 64MiB` taken but not kept to."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from onceproof.cli import main, negative_values_joined
from tests.unit.checkers.test_reads import H


def _write(h: H, path: Path) -> Path:
    h.recs.sort(key=lambda r: r["time"])
    for i, r in enumerate(h.recs):
        r["index"] = i
    path.write_text("".join(json.dumps(r) + "\n" for r in h.recs))
    return path


def test_a_null_read_in_the_smallest_set_is_shown_as_null_not_minus_one(tmp_path: Path, capsys: Any) -> None:
    h = H()
    h.write("k", 0, 0, 10)  # seq 0 applied at 10 ms
    h.read("reader-1", "k", 20, 30, None)  # then a read of nothing: stale
    code = main(["check", str(_write(h, tmp_path / "h.jsonl"))])
    out = capsys.readouterr().out
    assert code == 1, out
    ops = [line.strip() for line in out.splitlines() if line.strip().startswith("op ")]
    assert any(line.endswith("['read'] -> null") for line in ops), ops
    assert any(line.endswith("['write', 0] -> ok") for line in ops), ops
    assert not any(line.endswith("-> -1") or line.endswith("-> None") for line in ops), ops


def test_a_read_of_a_value_is_shown_as_it(tmp_path: Path, capsys: Any) -> None:
    h = H()
    h.write("k", 0, 0, 10)
    h.write("k", 1, 40, 50)
    h.read("reader-1", "k", 60, 65, 0)  # seq 1 was seen at 50: stale
    main(["check", str(_write(h, tmp_path / "h.jsonl"))])
    ops = [line.strip() for line in capsys.readouterr().out.splitlines() if line.strip().startswith("op ")]
    assert any(line.endswith("['read'] -> 0") for line in ops), ops


@pytest.mark.parametrize("value", ["-5m", "-1", "-0.5s"])
def test_a_negative_budget_gets_the_projects_message_and_exit_2(value: str, capsys: Any) -> None:
    code = main(["explore", "plans/at-least-once.yaml", "--budget", value])
    err = capsys.readouterr().err
    assert code == 2
    assert f"onceproof explore: --budget: expected a duration above zero such as 10m, got '{value}'" in err, err
    assert "expected one argument" not in err


def test_only_a_value_after_an_option_is_joined() -> None:
    assert negative_values_joined(["run", "p.yaml", "--duration", "-5s", "--json"]) == \
        ["run", "p.yaml", "--duration=-5s", "--json"]
    assert negative_values_joined(["explore", "p.yaml", "--budget=-5m"]) == ["explore", "p.yaml", "--budget=-5m"]
    assert negative_values_joined(["check", "-h"]) == ["check", "-h"]


def test_check_memory_below_the_floor_is_refused_with_why(tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["check", "--memory", "64MiB", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "'64MiB' is below the minimum of 128MiB, the smallest budget the check keeps to" in err, err
    assert "Traceback" not in err


def test_the_report_says_where_latency_ends(tmp_path: Path) -> None:
    import html

    from onceproof.report import render_html
    from onceproof.report.page import LATENCY_TO, _latency_to
    from tests.unit.report.synthetic_run import write_run

    write_run(tmp_path, rate=50, duration_s=4.0)
    results = json.loads((tmp_path / "results.json").read_text())
    for to in ("visible", "read"):
        results.setdefault("checkers", {}).setdefault("perf", {})["latency_to"] = to
        (tmp_path / "results.json").write_text(json.dumps(results))
        page = html.unescape(render_html(tmp_path))
        assert f'<p class="hint" id="latency-to">{LATENCY_TO[to]}</p>' in page

    assert _latency_to({"checkers": {"perf": {"latency_to": "visible"}}}) == LATENCY_TO["visible"]
    assert "commit time" in LATENCY_TO["visible"] and "polling is not counted" in LATENCY_TO["visible"]
    assert _latency_to({"checkers": {"perf": {"latency_to": "read"}}}) == LATENCY_TO["read"]
    assert "read time, not commit time" in LATENCY_TO["read"]
