"""A run folder is input: its results.json may name any path and its plan.yaml may be a YAML
bomb; `onceproof report` links only files inside the folder, by relative links, and answers a
bad plan with a note, never a traceback."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from onceproof.cli import main
from onceproof.report.run_folder import load


def _folder(tmp_path: Path, plan: str | None = None, results: Any = None) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "history.jsonl").write_text("")
    if results is not None:
        (run / "results.json").write_text(json.dumps(results))
    if plan is not None:
        (run / "plan.yaml").write_text(plan)
    return run


@pytest.mark.parametrize("log", ["javascript:alert(1)", "data:text/html,x", "//evil.example/x", "/etc/passwd",
                                 "../outside.log", "logs/../../x", "a\nb", "http://x.example/a"])
def test_a_log_path_in_results_is_only_ever_a_relative_link_inside_the_folder(
        log: str, tmp_path: Path, capsys: Any) -> None:
    run = _folder(tmp_path, results={"targets": {"kafka-1": {"log": log}}})
    if "/" not in log and "\n" not in log:
        (run / log).write_text("a file of that name")
    assert main(["report", str(run)]) == 0
    html = (run / "report.html").read_text()
    hrefs = re.findall(r'<a href="([^"#]*)"', html)
    assert hrefs and all(h.startswith("./") and ":" not in h and ".." not in h for h in hrefs), hrefs
    for link in load(run).links():
        assert link["href"].startswith("./") and ":" not in link["href"]


BOMB = "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("plan, words", [
    ("a: &x [*x]\n", "recursive alias"),
    ("a: &x {b: *x}\n", "recursive alias"),
    ("a: " + "[" * 500 + "]" * 500 + "\n", "nested more than"),
    ("a: " + "{b: " * 500 + "1" + "}" * 500 + "\n", "nested more than"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + BOMB, "expands to more than"),
])
def test_a_recursive_deep_or_exploding_plan_is_a_note_not_a_traceback(
        plan: str, words: str, tmp_path: Path, capsys: Any) -> None:
    run = _folder(tmp_path, plan=plan)
    assert main(["report", str(run)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert words in (run / "report.html").read_text()


def test_a_plan_nested_500_deep_in_results_json_is_ignored_with_a_note(tmp_path: Path, capsys: Any) -> None:
    plan: Any = 1
    for _ in range(500):
        plan = {"a": plan}
    run = _folder(tmp_path, results={"plan": plan})
    assert main(["report", str(run)]) == 0
    assert "nested too deep" in (run / "report.html").read_text()


@pytest.mark.parametrize("section", ["targets", "pipeline", "workload", "checkers"])
@pytest.mark.parametrize("value", [True, 5, "x", ["a"]])
def test_a_section_that_is_not_a_mapping_is_shown_as_absent(section: str, value: Any, tmp_path: Path,
                                                             capsys: Any) -> None:
    """Found by the long fuzz run: `plan: {targets: true}` in results.json was a traceback."""
    run = _folder(tmp_path, results={"targets": None, section: value, "plan": {"name": "p", section: value}})
    assert main(["report", str(run)]) == 0
    assert "Traceback" not in capsys.readouterr().err
    assert (run / "report.html").exists()
