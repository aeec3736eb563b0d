"""Whole runs on the docker runtime, through the CLI: the README's demo plan is VALID, the
broken at-least-once pipeline is caught (`duplicate`), a pipeline given as an image is
judged like a local one; and a run stopped by SIGINT tears its containers down, one killed
by SIGKILL leaves them to `onceproof cleanup`, which removes every one."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from onceproof.targets.docker import cleanup

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float = 600) -> tuple[int, dict]:
    res = subprocess.run([sys.executable, "-m", "onceproof", "run", *args, "--json"], capture_output=True,
                         text=True, cwd=ROOT, timeout=timeout)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("{")), None)
    assert line is not None, f"exit {res.returncode}, no JSON summary; stderr: {res.stderr[-3000:]}"
    return res.returncode, json.loads(line)


def test_the_demo_plan_on_docker_is_valid_with_every_fault_applied(tmp_path: Path) -> None:
    code, summary = _run("plans/demo.yaml", "--runtime", "docker", "--out", str(tmp_path / "out"))
    assert summary["errors"] == []
    assert (code, summary["valid"]) == (0, True), summary
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["plan"]["runtime"] == "docker"
    assert [f["outcome"] for f in results["faults"]] == ["ok"] * 6, results["faults"]


def test_the_at_least_once_pipeline_on_docker_is_caught_duplicating(tmp_path: Path) -> None:
    code, summary = _run("plans/at-least-once.yaml", "--runtime", "docker", "--out", str(tmp_path / "out"))
    assert code == 1, summary
    assert summary["checkers"]["exactly-once"]["anomalies"]["duplicate"] > 0
    assert summary["checkers"]["exactly-once"]["anomalies"]["lost"] == 0


IMAGE_PLAN = """name: pipeline-image
runtime: docker
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline:
  image: onceproof/pipeline-entrypoint:test  # no command: the image's entrypoint runs the pipeline
  replicas: 2
  progress: SELECT partition, max(next_offset) FROM onceproof_offsets GROUP BY partition  # its positions live in PostgreSQL
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 500, keys: 20, duration: 12s}
faults:
  - {at: 3s, kill: pipeline-0, restart-after: 2s}
  - {at: 6s, for: 3s, partition: {target: postgres, from: pipeline}}
  - {at: 8s, for: 2s, pause: pipeline-1}
quiesce: {idle: 3s, max: 60s}
"""


@pytest.fixture
def entrypoint_image():
    """A user's image whose own ENTRYPOINT runs the pipeline (built FROM the test pipelines'
    image); removed afterwards."""
    import io

    from onceproof.targets.docker.images import PIPELINE_IMAGE, client

    tag = "onceproof/pipeline-entrypoint:test"
    engine = client(timeout=300)
    dockerfile = (f"FROM {PIPELINE_IMAGE}\n"
                  'ENTRYPOINT ["python", "-m", "onceproof.targets.pipelines.kafka_to_postgres"]\n')
    engine.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    try:
        yield tag
    finally:
        engine.images.remove(tag, force=True)


def test_a_pipeline_given_as_an_image_is_valid_under_kill_partition_and_pause(tmp_path: Path, entrypoint_image) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text(IMAGE_PLAN)
    code, summary = _run(str(plan), "--out", str(tmp_path / "out"))
    assert summary["errors"] == []
    assert (code, summary["valid"]) == (0, True), summary
    logs = tmp_path / "out" / "logs"
    assert (logs / "pipeline-0.log").exists() and (logs / "pipeline-1.log").exists()
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [f["outcome"] for f in results["faults"]] == ["ok"] * 3, results["faults"]
    # the killed replica's log: each incarnation's own output after its starting line (the
    # engine's log was appended once, at the end, with the two starting lines bunched together)
    lines = [ln for ln in (logs / "pipeline-0.log").read_text().splitlines()
             if ln.startswith("--- onceproof: starting") or ": start: " in ln]
    assert [ln.startswith("---") for ln in lines] == [True, False, True, False], lines


STOP_PLAN = """name: docker-stop
runtime: docker
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres], replicas: 1}
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 200, keys: 10, duration: 120s}
quiesce: {idle: 3s, max: 30s}
"""


# the pipeline as an image: its container shares Toxiproxy's network namespace, so the engine
# refuses to remove Toxiproxy's before it (found: `onceproof cleanup` after a SIGKILL stopped at
# "has dependent containers" and removed nothing)
STOP_PLAN_IMAGE = STOP_PLAN.replace(
    "pipeline: {command:", "pipeline: {image: 'onceproof/pipelines:local', command:").replace(
    "name: docker-stop", "name: docker-stop-image")


def _start_and_wait_for_load(tmp_path: Path, image: bool = False) -> tuple[subprocess.Popen, str]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(STOP_PLAN_IMAGE if image else STOP_PLAN)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    history = out / "history.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (history.exists() and b"load-start" in history.read_bytes()):
        assert proc.poll() is None, f"the run ended early ({proc.returncode})"
        time.sleep(0.5)
    assert history.exists() and b"load-start" in history.read_bytes(), "the load never started"
    run_id = json.loads(history.read_text().splitlines()[0])["value"]["run_id"]
    # kafka-1, postgres, toxiproxy, the network (and the pipeline's container)
    assert len(cleanup.leftovers(run_id)) == 4 + image
    return proc, run_id


def test_sigint_tears_down_every_container_and_the_network_of_the_run(tmp_path: Path) -> None:
    proc, run_id = _start_and_wait_for_load(tmp_path)
    os.kill(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) == 3
    assert cleanup.leftovers(run_id) == []


@pytest.mark.parametrize("image", [False, True], ids=["local-pipeline", "image-pipeline"])
def test_after_sigkill_onceproof_cleanup_removes_every_container_and_the_network(tmp_path: Path, image: bool) -> None:
    proc, run_id = _start_and_wait_for_load(tmp_path, image)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert cleanup.leftovers(run_id) != []  # nobody tore them down
    res = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"network op-{run_id}" in res.stdout
    assert cleanup.leftovers(run_id) == []


def test_kafka_quorum_on_docker_is_valid_with_broker_to_broker_cuts_applied_and_healed(tmp_path: Path) -> None:
    """plans/kafka-quorum-docker.yaml: the controller isolated, the cluster halved (network
    disconnect/connect), a broker killed; the reference pipeline stays exactly-once."""
    code, summary = _run("plans/kafka-quorum-docker.yaml", "--out", str(tmp_path / "out"))
    assert summary["errors"] == []
    assert (code, summary["valid"]) == (0, True), summary
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [(f["kind"], f["outcome"]) for f in results["faults"]] == [
        ("partition-isolate", "ok"), ("partition-halves", "ok"), ("kill", "ok")], results["faults"]
    applied = [json.loads(line)["value"] for line in (tmp_path / "out" / "history.jsonl").read_text().splitlines()
               if '"nemesis"' in line and '"ok"' in line and '"apply"' in line]
    assert [sorted(a.get("moved", {})) for a in applied[:2]] != [[], []], applied[:2]  # each cut moved a broker
    assert all(len(a["components"]) == 2 for a in applied[:2]), applied[:2]
    assert cleanup.leftovers(results["run_id"]) == []  # side networks removed with the rest


def test_a_cut_the_docker_runtime_cannot_make_is_refused_when_the_plan_is_read(tmp_path: Path) -> None:
    text = (ROOT / "plans" / "kafka-quorum-docker.yaml").read_text()
    assert "partition-halves: {target: kafka}" in text
    plan = tmp_path / "ring.yaml"
    plan.write_text(text.replace("partition-halves: {target: kafka}", "partition-majorities-ring: {target: kafka}"))
    res = subprocess.run([sys.executable, "-m", "onceproof", "plan", "validate", str(plan)], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "partition-majorities-ring needs `runtime: netns`" in res.stdout + res.stderr
    assert "Traceback" not in res.stderr
    ok = subprocess.run([sys.executable, "-m", "onceproof", "plan", "validate", "plans/kafka-quorum-docker.yaml"],
                        capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
