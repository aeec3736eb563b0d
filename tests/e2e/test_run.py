"""`onceproof run` end to end through the CLI, against real targets: correct pipelines pass,
broken ones are caught with the right anomaly names, a vacuous run is unknown (never valid),
a malformed plan is bad input, and a harness killed mid-run leaves a checkable history."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _plan(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def _run(plan: Path, out: Path, *extra: str, timeout: float = 300) -> tuple[int, dict, str]:
    res = subprocess.run([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out), "--json", *extra],
                         capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    summary = {}
    for line in res.stdout.splitlines():
        if line.startswith("{"):
            summary = json.loads(line)
    return res.returncode, summary, res.stderr


KAFKA_TO_POSTGRES = """name: k2p
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline:
  command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]
  replicas: 2
  progress: SELECT partition, max(next_offset) FROM onceproof_offsets GROUP BY partition
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 1000, keys: 20, duration: 12s}
faults:
  - {at: 2s, kill: pipeline-0, restart-after: 1s}
  - {at: 5s, for: 3s, partition: {target: kafka-1, from: pipeline}}
  - {at: 9s, for: 2s, pause: pipeline-1}
checks: {exactly-once: {order: per-key}}
quiesce: {idle: 3s, max: 60s}
"""

TXN_COPY = """name: txn-copy
targets: {kafka: {nodes: 1}}
pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_txn_copy], replicas: 2}
workload: {source: kafka:onceproof.events, sink: kafka:onceproof.effects, rate: 500, keys: 20, duration: 12s}
faults:
  - {at: 3s, kill: pipeline-0, restart-after: 1s}
  - {at: 7s, kill: pipeline-1, restart-after: 1s}
quiesce: {idle: 3s, max: 60s}
"""

BROKEN = """name: {name}
targets: {{kafka: {{nodes: 1}}, postgres: {{}}}}
pipeline: {{command: [python, -m, onceproof.targets.pipelines.{module}], replicas: 2}}
workload: {{source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 2000, keys: 20, duration: 16s}}
faults:  # kills 2.5 s apart: a replica killed every second on a busy machine never rejoined, so no kill hit a batch
  - {{at: 0s, for: 15s, latency: {{target: postgres, ms: 100, direction: both}}}}
  - {{random: {{from: 3s, until: 15s, every: 2500ms, kinds: [kill], for: 300ms, targets: [pipeline-0, pipeline-1]}}}}
quiesce: {{idle: 3s, max: 60s}}
"""


def _assert_every_planned_fault_applied(results: dict, planned: int) -> None:
    """A VALID under faults means the faults happened: each planned one applied (outcome ok)."""
    assert len(results["faults"]) == planned, results["faults"]
    assert all(f["outcome"] == "ok" for f in results["faults"]), results["faults"]
    faults = results["checkers"]["faults"]
    assert faults["valid"] is True and faults["applied"] == planned == faults["planned"], faults


@pytest.mark.parametrize("seed", [1, 2])
def test_exactly_once_pipeline_passes_under_kills_partition_and_pause(tmp_path, seed):
    code, summary, err = _run(_plan(tmp_path, "k2p", KAFKA_TO_POSTGRES), tmp_path / "out", "--seed", str(seed))
    assert code == 0, (summary, err[-3000:])
    assert summary["valid"] is True
    assert summary["workload"]["ok"] > 5000
    _assert_every_planned_fault_applied(json.loads((tmp_path / "out" / "results.json").read_text()), 3)


def test_a_planned_fault_that_could_not_apply_leaves_the_run_without_a_verdict(tmp_path):
    """The pipeline is correct, but the one fault of the plan (the leader of a topic that does
    not exist) could not be applied: the run tested nothing, so it is unknown, never VALID."""
    plan = _plan(tmp_path, "k2p", KAFKA_TO_POSTGRES.replace("duration: 12s", "duration: 5s").split("faults:")[0]
                 + "faults:\n  - {at: 1s, for: 2s, pause: {target: kafka-leader, topic: no-such-topic}}\n"
                 + "quiesce: {idle: 2s, max: 60s}\n")
    code, summary, err = _run(plan, tmp_path / "out")
    assert code == 3, (summary, err[-3000:])
    assert summary["valid"] == "unknown"
    assert summary["checkers"]["exactly-once"]["valid"] is True  # the pipeline did nothing wrong
    reason = summary["checkers"]["faults"]["reason"]
    assert reason.startswith("f1 pause") and "was not applied: kafka-leader" in reason, reason
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [f["outcome"] for f in results["faults"]] == ["fail"]
    assert any("was not applied" in n for n in results["checkers"]["faults"]["notes"]), results["checkers"]
    junit = (tmp_path / "out" / "junit.xml").read_text()
    assert 'name="faults"' in junit and "no verdict (unknown): f1 pause" in junit, junit
    # lenient: the verdict stands, with the note
    lenient = _plan(tmp_path, "lenient", plan.read_text() + "checks: {faults: lenient}\n")
    code, summary, err = _run(lenient, tmp_path / "lenient-out")
    assert code == 0, (summary, err[-3000:])
    results = json.loads((tmp_path / "lenient-out" / "results.json").read_text())
    assert any("lenient" in n and "f1 pause" in n for n in results["notes"]), results["notes"]


def test_exactly_once_pipeline_passes_through_the_pytest_fixture(onceproof):
    """The third seed goes through the pytest front-end (the `onceproof` fixture)."""
    import yaml

    run = onceproof(yaml.safe_load(KAFKA_TO_POSTGRES), seed=3)
    assert run.valid is True, run.summary()
    assert run.exit_code == 0
    assert (run.out_dir / "report.html").exists() and (run.out_dir / "junit.xml").exists()
    assert run.results["workload"]["ok"] > 5000
    _assert_every_planned_fault_applied(run.results, 3)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_transactional_kafka_copy_passes_under_kills_and_our_kafka_clients_print_nothing(tmp_path, seed):
    """Kafka source and Kafka sink under kills: VALID; and every client of ours is closed before
    the brokers stop, librdkafka's own lines going to logs/harness-kafka.log, never to the user's
    terminal (this was a run of its own, a shorter copy of the same plan)."""
    code, summary, err = _run(_plan(tmp_path, "txn", TXN_COPY), tmp_path / "out", "--seed", str(seed))
    assert code == 0, (summary, err[-3000:])
    assert summary["valid"] is True
    assert "rdkafka" not in err, err[-3000:]
    assert (tmp_path / "out" / "logs" / "harness-kafka.log").exists()
    _assert_every_planned_fault_applied(json.loads((tmp_path / "out" / "results.json").read_text()), 2)


@pytest.mark.parametrize("module,anomaly", [("at_least_once", "duplicate"), ("commit_before_process", "lost")])
def test_broken_pipeline_is_caught_with_the_right_anomaly(tmp_path, module, anomaly):
    plan = _plan(tmp_path, module, BROKEN.format(name=module.replace("_", "-"), module=module))
    code, summary, err = _run(plan, tmp_path / "out")
    assert code == 1, (summary, err[-3000:])
    anomalies = summary["checkers"]["exactly-once"]["anomalies"]
    assert anomalies[anomaly] > 0, anomalies
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    example = results["checkers"]["exactly-once"]["examples"][anomaly][0]
    assert any(r["f"] == "send" for r in example["records"])
    if anomaly == "lost":  # proven by the pipeline's own committed position, not by a quiet sink
        assert "before the final committed position" in example["why"], example["why"]
        assert any(r["f"] == "progress" for r in example["records"])
    junit = (tmp_path / "out" / "junit.xml").read_text()
    assert "<failure" in junit and anomaly in junit


def test_pipeline_that_does_nothing_is_unknown_never_valid(tmp_path):
    code, summary, err = _run(ROOT / "plans" / "do-nothing.yaml", tmp_path / "out")
    assert code == 3, (summary, err[-2000:])
    assert summary["valid"] == "unknown"
    # unknown because the run was vacuous, not because the infrastructure failed
    assert summary["errors"] == [], summary["errors"]
    assert summary["checkers"]["exactly-once"]["reason"] == "vacuous run: nothing was ever seen in the sink", summary
    assert summary["workload"]["ok"] > 0


def test_malformed_plan_is_bad_input_naming_the_line(tmp_path):
    plan = _plan(tmp_path, "bad", "name: bad\ntargets: {postgres: {}}\npipeline: {command: [x]}\n"
                                  "workload: {sink: postgres:e, source: kafka:s, rate: fast}\n")
    code, summary, err = _run(plan, tmp_path / "out")
    assert code == 2
    assert f"{plan}:4" in err and "workload.rate" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_sigkill_of_the_harness_leaves_a_history_that_check_reads(tmp_path):
    plan = _plan(tmp_path, "k2p", KAFKA_TO_POSTGRES.replace("duration: 12s", "duration: 60s"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, start_new_session=True)
    history = out / "history.jsonl"
    try:
        deadline = time.monotonic() + 120
        # until the load has been running for a while and the sink has shown effects (else the
        # run is vacuous, which is another reason for no verdict)
        def going() -> bool:
            return history.exists() and history.stat().st_size > 200_000 and re.search(
                rb'"f":"observe","value":\{"full":(true|false),[^\n]*?"events":\[\["', history.read_bytes()) is not None

        while time.monotonic() < deadline and not going():
            time.sleep(0.2)
        assert going()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    res = subprocess.run([sys.executable, "-m", "onceproof", "check", "--json", str(history)], capture_output=True,
                         text=True, timeout=120, cwd=ROOT)
    # the pipeline is correct and the run never reached its final read: no verdict, and why
    assert res.returncode == 3, (res.stdout[-2000:], res.stderr)
    verdict = json.loads(res.stdout.splitlines()[0])
    assert verdict["valid"] == "unknown", verdict
    reason = verdict["checkers"]["exactly-once"]["reason"]
    assert reason.startswith("no final read (the run did not finish)"), reason
    assert verdict["stats"]["final_read"] is False and verdict["stats"]["sends"]["ok"] > 0, verdict["stats"]
    cleanup = subprocess.run([sys.executable, "-m", "onceproof", "cleanup"], capture_output=True, text=True, timeout=60)
    assert cleanup.returncode == 0
    assert "removed" in cleanup.stdout


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_tears_everything_down_and_keeps_what_it_recorded(tmp_path, sig):
    import psutil

    plan = _plan(tmp_path, "k2p", KAFKA_TO_POSTGRES.replace("duration: 12s", "duration: 60s"))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    history = out / "history.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (history.exists() and b"load-start" in history.read_bytes()):
        time.sleep(0.2)
    time.sleep(3)  # a fault is applied at 2s: the interrupt must heal it too
    children = psutil.Process(proc.pid).children(recursive=True)
    assert len(children) >= 5  # toxiproxy, kafka, postgres, 2 replicas
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err[-2000:]
    assert "Traceback" not in err
    still_alive = psutil.wait_procs(children, timeout=15)[1]
    assert not still_alive, f"still running: {still_alive}"
    results = json.loads((out / "results.json").read_text())
    assert results["interrupted"] is True and results["valid"] == "unknown"
    assert any(f["kind"] == "kill" and f["healed_s"] is not None for f in results["faults"])
    assert (out / "report.html").exists()
    from onceproof.targets import paths

    assert not any(paths.registry_dir().glob(f"{results['run_id']}*.json"))
    assert not (paths.scratch_root() / results["run_id"]).exists()
