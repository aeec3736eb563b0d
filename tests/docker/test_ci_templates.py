"""The CI jobs in ci/ that users copy: the GitHub workflow passes actionlint (built from its Go
module, pinned) and its `run:` steps, run in order in a shell as the runner would, run a
plan on the docker runtime against this machine's engine and leave the artifacts the
upload step names; the GitLab job has the structure GitLab needs (no schema of GitLab's is
reachable from a registry here), and its `before_script` and `script` lines, run in order in
one shell as a shell executor would, with its variables expanded as GitLab does, run a plan
and leave the artifacts its `artifacts:` names."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from onceproof.targets import paths
from tests.docker.conftest import path_without_java

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / "ci" / "github" / "onceproof.yml"
GITLAB = ROOT / "ci" / "gitlab" / "onceproof.gitlab-ci.yml"
ACTIONLINT = "v1.7.12"


@pytest.fixture(scope="session")
def actionlint() -> Path:
    """actionlint, `go install`ed once into $ONCEPROOF_HOME/tools/actionlint-<version>."""
    gobin = paths.home() / "tools" / f"actionlint-{ACTIONLINT}"
    binary = gobin / "actionlint"
    if not binary.exists():
        go = shutil.which("go") or "/usr/local/go/bin/go"
        res = subprocess.run([go, "install", f"github.com/rhysd/actionlint/cmd/actionlint@{ACTIONLINT}"],
                             env={**os.environ, "GOBIN": str(gobin)}, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"go install actionlint failed: {res.stderr[-2000:]}"
    return binary


def test_actionlint_passes_the_workflow_and_catches_a_broken_copy(actionlint: Path, tmp_path: Path) -> None:
    res = subprocess.run([str(actionlint), str(WORKFLOW)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    broken = tmp_path / "broken.yml"
    broken.write_text(WORKFLOW.read_text().replace("runs-on: ubuntu-latest", "runs-on: ubuntu-latest\n    timeout: 3"))
    res = subprocess.run([str(actionlint), str(broken)], capture_output=True, text=True)
    assert res.returncode == 1 and "timeout" in res.stdout


def test_the_gitlab_job_keeps_the_artifacts_and_publishes_junit() -> None:
    doc = yaml.safe_load(GITLAB.read_text())
    job = doc["onceproof"]
    assert job["stage"] in doc["stages"]
    assert all(isinstance(line, str) for line in job["before_script"] + job["script"])
    assert any("onceproof run" in line and "--runtime docker" in line for line in job["script"])
    assert job["script"][-1] == "exit $code"  # the run's own exit code fails the job (1, 3)
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == "$ONCEPROOF_OUT/junit.xml"
    for name in ("report.html", "results.json", "history.jsonl"):
        assert f"$ONCEPROOF_OUT/{name}" in artifacts["paths"]


PLAN = """name: ci-check
runtime: docker
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline:
  command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]
  replicas: 1
  progress: SELECT partition, max(next_offset) FROM onceproof_offsets GROUP BY partition  # its positions live in PostgreSQL
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 300, keys: 10, duration: 6s}
faults:
  - {at: 2s, for: 2s, latency: {target: postgres, ms: 100}}
quiesce: {idle: 3s, max: 60s}
"""


def test_the_workflow_run_steps_in_order_leave_the_artifacts_and_a_passing_job(tmp_path: Path) -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    job = workflow["jobs"]["onceproof"]
    work = tmp_path / "repo"
    (work / "onceproof").mkdir(parents=True)
    (work / "onceproof" / "plan.yaml").write_text(PLAN)  # the user's plan; no Dockerfile
    output, summary = tmp_path / "github_output", tmp_path / "step_summary"
    output.touch()
    summary.touch()
    # a runner's machine: no Java, no Kafka jars, an empty cache (what `onceproof setup` makes)
    env = {**os.environ, **{k: str(v) for k, v in job["env"].items()},
           "PATH": f"{Path(sys.executable).parent}:{path_without_java(tmp_path)}",
           "ONCEPROOF_HOME": str(tmp_path / "cache"), "ONCEPROOF_SCRATCH": str(tmp_path / "scratch"),
           "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary),
           "ONCEPROOF_PIP_SPEC": "onceproof"}  # the user sets it (empty in the template): installed here already
    ran = []
    for step in job["steps"]:
        if "run" not in step:
            continue  # actions (checkout, setup-python, cache, upload): the runner's
        if "hashFiles('Dockerfile')" in str(step.get("if", "")) and not (work / "Dockerfile").exists():
            continue
        outputs = dict(re.findall(r"^([\w-]+)=(.*)$", output.read_text(), re.M))
        step_env = {k: re.sub(r"\$\{\{ steps\.run\.outputs\.([\w-]+) \}\}", lambda m: outputs.get(m.group(1), ""),
                              str(v)) for k, v in (step.get("env") or {}).items()}
        res = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=work, env={**env, **step_env},
                             capture_output=True, text=True, timeout=900)
        ran.append(step["name"])
        assert res.returncode == 0, (f"step {step['name']!r} exited {res.returncode}:\n{res.stdout[-3000:]}"
                                     f"{res.stderr[-3000:]}\nsummary: {summary.read_text()}")
    assert ran == ["Install onceproof", "Run the plan", "Verdict", "Fail on anomalies or no verdict"]
    assert "exit-code=0" in output.read_text()
    assert "## onceproof `ci-check`: VALID (exit 0)" in summary.read_text()
    assert "  - note: " in summary.read_text()  # the checkers' notes (why a run is UNKNOWN, say)
    out = work / "onceproof-run"
    for name in ("report.html", "results.json", "history.jsonl", "junit.xml", "plan.yaml"):
        assert (out / name).stat().st_size > 0, name
    assert any((out / "logs").iterdir())


def test_the_workflow_stops_at_once_while_the_pip_spec_is_not_set(tmp_path: Path) -> None:
    """No release of onceproof is on the package index yet, so the template leaves
    ONCEPROOF_PIP_SPEC empty and its install step stops with an error saying to set it (a
    new user's copy failed at `pip install onceproof==0.1.0`, a version that does not exist)."""
    job = yaml.safe_load(WORKFLOW.read_text())["jobs"]["onceproof"]
    assert job["env"]["ONCEPROOF_PIP_SPEC"] == ""
    step = next(s for s in job["steps"] if s.get("name") == "Install onceproof")
    res = subprocess.run(["bash", "-e", "-c", step["run"]], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "ONCEPROOF_PIP_SPEC": ""}, timeout=60)
    assert res.returncode == 2 and "::error::set ONCEPROOF_PIP_SPEC" in res.stdout, (res.stdout, res.stderr)
    gitlab = yaml.safe_load(GITLAB.read_text())["onceproof"]
    assert gitlab["variables"]["ONCEPROOF_PIP_SPEC"] == ""
    assert "ONCEPROOF_PIP_SPEC" in gitlab["before_script"][0] and "exit 2" in gitlab["before_script"][0]


def test_the_gitlab_job_lines_in_order_leave_the_artifacts_and_a_passing_job(tmp_path: Path) -> None:
    """The job's lines as a shell executor runs them (one shell, each line's exit code checked,
    `set +e` kept by the line that sets it), on a machine without Java nor an onceproof cache:
    the run's folder is made under ONCEPROOF_SHARED, copied into the project for the
    artifacts and removed there; the job's exit code is the run's."""
    import json

    job = yaml.safe_load(GITLAB.read_text())["onceproof"]
    work = tmp_path / "repo"
    (work / "onceproof").mkdir(parents=True)
    (work / "onceproof" / "plan.yaml").write_text(PLAN)  # no Dockerfile: the plan's command runs in the job
    shared = tmp_path / "srv"  # the host folder mounted at the same path (a docker executor's)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{path_without_java(tmp_path)}", "CI_JOB_ID": "4242"}
    variables = dict(job["variables"], ONCEPROOF_SHARED=str(shared), ONCEPROOF_PIP_SPEC="onceproof")
    variables.pop("DOCKER_HOST")  # this machine's engine is found where onceproof looks (engine.py)
    for name, value in variables.items():  # in order, each may use the ones before (GitLab's expansion)
        env[name] = re.sub(r"\$(\w+)", lambda m: env.get(m.group(1), ""), str(value))
    assert env["ONCEPROOF_RUN_DIR"] == f"{shared}/runs/4242" and env["ONCEPROOF_HOME"] == f"{shared}/home"
    lines = job["before_script"] + job["script"]
    res = subprocess.run(["bash", "-e", "-c", "\n".join(lines)], cwd=work, env=env, capture_output=True, text=True,
                         timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "onceproof: ci-check valid = True errors = []" in res.stdout
    out = work / env["ONCEPROOF_OUT"]
    for artifact in job["artifacts"]["paths"] + [job["artifacts"]["reports"]["junit"]]:
        path = work / artifact.replace("$ONCEPROOF_OUT", env["ONCEPROOF_OUT"])
        assert path.exists() and (path.is_dir() or path.stat().st_size > 0), artifact
    assert json.loads((out / "results.json").read_text())["valid"] is True
    assert not Path(env["ONCEPROOF_RUN_DIR"]).exists()  # copied, then removed from the shared folder
