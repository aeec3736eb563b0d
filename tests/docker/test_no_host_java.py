"""A docker run needs no Java on the harness machine (a CI runner has Docker, not a JRE nor
Kafka's jars): the Kafka image formats its own KRaft storage (targets/docker/kafka_storage.py).
The run below has no `java` on its PATH and a fresh ONCEPROOF_HOME holding only the clock shim
and the checker's compiled cores (what `onceproof setup --docker-only` installs), and still
starts Kafka, applies its fault and is VALID."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from onceproof.home import home
from onceproof.targets.docker import cleanup
from tests.docker.conftest import path_without_java

pytestmark = [pytest.mark.e2e, pytest.mark.docker]

ROOT = Path(__file__).resolve().parents[2]

PLAN = """name: no-host-java
runtime: docker
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres], replicas: 1}
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 300, keys: 10, duration: 8s}
faults:
  - {at: 3s, kill: pipeline-0, restart-after: 1s}
quiesce: {idle: 3s, max: 60s}
"""


def test_setup_docker_only_installs_no_kafka_and_needs_no_java(tmp_path: Path) -> None:
    fresh = tmp_path / "home"
    env = dict(os.environ, PATH=path_without_java(tmp_path), ONCEPROOF_HOME=str(fresh))
    res = subprocess.run([sys.executable, "-m", "onceproof", "setup", "--docker-only"], capture_output=True,
                         text=True, cwd=ROOT, env=env, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert sorted(p.name for p in (fresh / "lib").iterdir()) == [
        "libonceproof_clock.so", "libonceproof_pgoutput.so", "libonceproof_scan.so", "libonceproof_wgl.so"]
    assert not list(fresh.glob("kafka-*")) and not (fresh / "bin").exists()
    # doctor: such a machine is ready for the docker runtime, and not for the local one
    docker = subprocess.run([sys.executable, "-m", "onceproof", "doctor", "--runtime", "docker"],
                            capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert docker.returncode == 0, docker.stdout + docker.stderr
    assert "MISSING" not in docker.stdout and "docker engine" in docker.stdout
    local = subprocess.run([sys.executable, "-m", "onceproof", "doctor"], capture_output=True, text=True,
                           cwd=ROOT, env=env, timeout=120)
    assert local.returncode == 1, local.stdout + local.stderr
    assert any(ln.split()[:2] == ["MISSING", "kafka"] for ln in local.stdout.splitlines()), local.stdout


def test_a_docker_run_without_java_on_the_path_formats_kafka_in_the_image_and_is_valid(tmp_path: Path) -> None:
    fresh = tmp_path / "home"
    (fresh / "lib").mkdir(parents=True)
    for lib in ("libonceproof_clock.so", "libonceproof_pgoutput.so", "libonceproof_scan.so", "libonceproof_wgl.so"):
        shutil.copy(home() / "lib" / lib, fresh / "lib" / lib)
    path = path_without_java(tmp_path)
    assert shutil.which("java", path=path) is None
    plan = tmp_path / "plan.yaml"
    plan.write_text(PLAN)
    env = dict(os.environ, PATH=path, ONCEPROOF_HOME=str(fresh), ONCEPROOF_SCRATCH=str(tmp_path / "scratch"))
    res = subprocess.run([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(tmp_path / "out"),
                          "--json"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("{")), None)
    assert line is not None, f"exit {res.returncode}; stderr: {res.stderr[-3000:]}"
    summary = json.loads(line)
    assert summary["errors"] == []
    assert (res.returncode, summary["valid"]) == (0, True), summary
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [f["outcome"] for f in results["faults"]] == ["ok"], results["faults"]
    assert not list(fresh.glob("kafka-*"))  # no jars, no host-made template
    templates = list((fresh / "docker").glob("kafka-storage-*/bootstrap.checkpoint"))
    assert len(templates) == 1, list(fresh.rglob("*"))  # formatted by the image, cached for the next run
    assert cleanup.leftovers(results["run_id"]) == []  # the one-shot format container is gone too
