"""`run --out DIR` never deletes what it did not write (issue 18): a folder holding anything
but a previous run is refused (exit 2, nothing touched), a previous run folder has only the
run's own files replaced, a file or an unwritable folder is bad input, and the report and
results are never written through a symlink put at their temporary file."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onceproof import stages
from onceproof.cli import main
from onceproof.plan import validate_plan

PLAN = {"name": "folder", "targets": {"postgres": {}},
        "pipeline": {"command": ["python", "-c", "pass"]},
        "workload": {"source": "postgres:src", "sink": "postgres:onceproof_effects", "duration": 1}}
PLAN_YAML = """name: folder
targets: {postgres: {}}
pipeline: {command: [python, -c, pass]}
workload: {source: postgres:src, sink: postgres:onceproof_effects, duration: 1s}
"""


@pytest.fixture
def plan() -> Any:
    return validate_plan(PLAN)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def _previous_run(out: Path) -> None:
    (out / "logs").mkdir(parents=True)
    (out / "logs" / "pipeline-0.log").write_text("old")
    (out / "history.jsonl").write_text(json.dumps({"index": 0, "process": "harness", "type": "info",
                                                   "f": "start", "value": {}}) + "\n")
    for name in ("plan.yaml", "results.json", "junit.xml", "report.html"):
        (out / name).write_text("old")


@pytest.mark.parametrize("content", [
    {"notes.txt": "my thesis"},
    {".git/HEAD": "ref: refs/heads/main"},
    {"plan.yaml": "mine", "history.jsonl": "not a run's history"},
    {"results.json": '{"valid": true}'},
], ids=["a-user-file", "a-repository", "our-names-not-our-content", "results-without-run-id"])
def test_a_folder_that_is_not_a_previous_run_is_refused_and_left_untouched(tmp_path: Path, plan: Any,
                                                                            capsys: Any, content: dict[str, str]) -> None:
    out = tmp_path / "out"
    for name, text in content.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    before = _tree(out)
    with pytest.raises(stages.RunFolderError, match="not a previous run"):
        stages.new_run(plan, out)
    assert _tree(out) == before
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN_YAML)
    assert main(["run", str(plan_file), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "never deletes what it did not write" in err and "Traceback" not in err
    assert _tree(out) == before


def test_a_previous_run_folder_is_reused_replacing_only_the_runs_own_files(tmp_path: Path, plan: Any) -> None:
    out = tmp_path / "out"
    _previous_run(out)
    (out / "my-notes.txt").write_text("keep me")
    (out / "analysis").mkdir()
    (out / "analysis" / "x.csv").write_text("keep me too")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_text("not the run's")
    (out / "junit.xml").unlink()
    (out / "junit.xml").symlink_to(elsewhere)  # replaced, never followed
    run = stages.new_run(plan, out)
    assert sorted(p.name for p in out.iterdir()) == ["analysis", "logs", "my-notes.txt", "plan.yaml"]
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert (out / "analysis" / "x.csv").read_text() == "keep me too"
    assert elsewhere.read_text() == "not the run's"
    assert run.out_dir == out and not any((out / "logs").iterdir())


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() == 0:  # root writes through permission bits: a folder that cannot be made
        return Path("/sys/onceproof-test-out")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("kind", ["a-file", "under-a-file", "read-only"])
def test_out_at_a_file_or_an_unwritable_folder_is_bad_input(tmp_path: Path, kind: str) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("precious")
    out = {"a-file": a_file, "under-a-file": a_file / "out", "read-only": _unwritable(tmp_path)}[kind]
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text(PLAN_YAML)
    res = subprocess.run([sys.executable, "-m", "onceproof", "run", str(plan_file), "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res.stderr
    assert f"--out {out}" in res.stderr and "Traceback" not in res.stderr
    assert a_file.read_text() == "precious"


def test_the_report_and_results_are_never_written_through_a_symlink(tmp_path: Path) -> None:
    from onceproof.report import render
    from onceproof.runner import _write_json

    out = tmp_path / "run"
    _previous_run(out)
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    for name in ("report.html.tmp", "results.tmp", ".report.html.tmp"):
        (out / name).symlink_to(victim)
    render(out)
    _write_json(out / "results.json", {"run_id": "x"})
    assert victim.read_text() == "untouched"
    assert (out / "report.html").read_text().lstrip().lower().startswith("<!doctype html")
    assert not (out / "report.html").is_symlink()
