"""`workload.processes: 2` (harness/loadprocs.py) against real Kafka and PostgreSQL, one set of
servers for the module (a Session): a correct pipeline is VALID with every send in one merged
history; a broken one is still caught; a load process that dies takes the verdict away."""
from __future__ import annotations

import json
import threading
import time

import psutil
import pytest

from onceproof.plan import Plan, parse_plan_yaml
from onceproof.session import Session

TARGETS = "targets: {kafka: {nodes: 1}, postgres: {}}\n"

CORRECT = TARGETS + """name: k2p-procs
seed: 3
pipeline:
  command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]
  replicas: 2
  progress: SELECT partition, max(next_offset) FROM onceproof_offsets GROUP BY partition
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 2000, keys: 20, duration: 6s,
           processes: 2}
faults:
  - {at: 2s, kill: pipeline-0, restart-after: 1s}
checks: {exactly-once: {order: per-key}}
quiesce: {idle: 3s, max: 60s}
"""

BROKEN = TARGETS + """name: at-least-once-procs
seed: 7
pipeline: {command: [python, -m, onceproof.targets.pipelines.at_least_once], replicas: 2}
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 2000, keys: 20, duration: 14s,
           processes: 2}
faults:  # kills 2.5 s apart: a replica killed every second on a busy machine never rejoined, so no kill hit a batch
  - {at: 0s, for: 13s, latency: {target: postgres, ms: 100, direction: both}}
  - {random: {from: 3s, until: 13s, every: 2500ms, kinds: [kill], for: 300ms, targets: [pipeline-0, pipeline-1]}}
quiesce: {idle: 3s, max: 60s}
"""


def _plan(text: str) -> Plan:
    data, _ = parse_plan_yaml(text)
    return Plan.model_validate(data)


def _load_processes() -> list[psutil.Process]:
    """The live load processes under this one (another child that exited meanwhile, or one
    not reaped yet, a zombie, has no command line: not one of them)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "onceproof.loadprocs" in " ".join(p.cmdline()):
                out.append(p)
        except (psutil.ZombieProcess, psutil.NoSuchProcess):
            continue
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    with Session(_plan(CORRECT), tmp_path_factory.mktemp("session-logs")) as s:
        yield s


def test_two_load_processes_give_a_valid_run_and_one_correct_history(session, tmp_path):
    result = session.execute(_plan(CORRECT), tmp_path / "out")
    assert result.valid is True, (result.results.get("errors"), result.results["checkers"])
    load = result.results["workload"]
    assert load["sent"] == load["ok"] and 11_000 <= load["sent"] <= 12_100, load
    assert not (tmp_path / "out" / "logs" / "shards").exists()
    assert not _load_processes()
    times, ids, seqs, n = [], set(), {}, 0
    with open(tmp_path / "out" / "history.jsonl", "rb") as f:
        for i, line in enumerate(f):
            r = json.loads(line)
            assert r["index"] == i
            times.append(r["time"])
            n += 1
            if r["f"] == "send" and r["type"] == "invoke":
                v = r["value"]
                assert v["id"] not in ids
                ids.add(v["id"])
                assert seqs.get(v["key"], -1) + 1 == v["seq"], v  # each key's seq in order, from one process
                seqs[v["key"]] = v["seq"]
    assert times == sorted(times)
    assert len(ids) == load["sent"]
    assert len(seqs) == 20
    first, last = (json.loads(x) for x in (tmp_path / "out" / "history.jsonl").read_bytes().splitlines()[::n - 1])
    assert (first["f"], last["f"]) == ("start", "end")


def test_a_broken_pipeline_is_still_caught_with_two_load_processes(session, tmp_path):
    """The at-least-once pipeline duplicates only when a kill lands between its write and its
    offset commit (a few hundred ms of each batch): up to 3 runs, as `run --runs 3` would; each
    run must be VALID or caught (never unknown, never another anomaly), and one must be caught."""
    seen = []
    for i in range(3):
        result = session.execute(_plan(BROKEN), tmp_path / f"out-{i}")
        anomalies = {k: n for k, n in result.results["checkers"]["exactly-once"]["anomalies"].items() if n}
        seen.append((result.valid, anomalies))
        assert result.valid is True or (result.valid is False and set(anomalies) == {"duplicate"}), \
            (result.results.get("errors"), result.results["checkers"])
        assert not _load_processes()
        if result.valid is False:
            break
    assert seen[-1][0] is False, f"not caught in 3 runs: {seen}"


def test_a_load_process_that_dies_is_reported_and_the_run_has_no_verdict(session, tmp_path):
    killed: list[int] = []

    def kill_one() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            procs = _load_processes()
            if len(procs) == 2 and procs[0].create_time() < time.time() - 2:  # loading by now (the load lasts 6 s)
                procs[0].kill()
                killed.append(procs[0].pid)
            time.sleep(0.2)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    result = session.execute(_plan(CORRECT), tmp_path / "out")
    killer.join()
    assert killed
    assert result.valid == "unknown"
    errors = " ".join(result.results["errors"])
    assert "load process" in errors and "exited with code -9" in errors, errors
    assert not _load_processes()
    assert not (tmp_path / "out" / "logs" / "shards").exists()  # what it recorded is merged all the same
