"""Bring your own pipeline (issue 17), end to end through the CLI with faults, on pipelines
nobody here wrote the framework of:

- Quix Streams with its own PostgreSQLSink (it creates and fills `orders` from the message
  fields of the plan's JSON format; its sinks are at-least-once: flushed at each checkpoint,
  before the offsets are committed). PostgreSQL's replies slowed down (100 ms) so the library
  always has a backlog, then the pipeline cut off from Kafka past its session timeout: the
  order being checkpointed is written to PostgreSQL, its offset commit fails (`Unknown
  member`), the replica dies and, restarted, writes it again - a `duplicate` found through a
  `query:` mapping on the library's table; then kills on top;
- a Kafka Streams topology counting events per key into a topic of 8-byte longs (and copying
  the events), the record cache off (statestore.cache.max.bytes 0: every update reaches the
  changelog and the output at once): exactly_once_v2 passes the state check under kills;
  at_least_once with slow commits (commit.interval.ms 5 s) is caught as `state-mismatch` after
  a kill (the updates since the last commit are counted again);
- a pipeline reading a text format (`customer,n`, the id in a header) and upserting its own
  table, followed by logical decoding with an applied_count column: valid under kills.

The README's "Put your pipeline under test" section walks through the same three plans."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
KAFKA_STREAMS = "4.1.1"

QUIX = """name: quix-orders
targets: {{kafka: {{nodes: 1}}, postgres: {{}}}}
pipeline:
  command: [python, {root}/tests/e2e/pipelines/quix_to_postgres.py]
  replicas: 1
  cwd: {cwd}
  env: {{COMMIT_INTERVAL: 0}}
workload:
  source: kafka:orders
  format: {{value: {{order_id: "{{id}}", customer: "{{key}}", n: "{{seq}}"}}, key: "{{key}}"}}
  sink: {{postgres: {{query: "SELECT order_id, customer, n FROM orders"}}}}
  rate: 20
  keys: 5
  duration: 40s
faults:
  - {{at: 6s, for: 34s, latency: {{target: postgres, ms: 100}}}}
  - {{at: 12s, for: 15s, partition: {{target: kafka-1, from: pipeline}}}}
  - {{at: 31s, kill: pipeline-0, restart-after: 500ms}}
  - {{at: 36s, kill: pipeline-0, restart-after: 500ms}}
quiesce: {{idle: 5s, max: 90s}}
"""

KSTREAMS = """name: kstreams-count-{guarantee}
targets: {{kafka: {{nodes: 1}}}}
pipeline:
  command: [java, -Xmx256m, -XX:TieredStopAtLevel=1, -XX:+UseSerialGC, -cp, "{classpath}", CountPerKey,
            ks-events, ks-copy, ks-counts]
  replicas: 1
  cwd: {cwd}
  env: {{PROCESSING_GUARANTEE: {guarantee}, COMMIT_MS: {commit_ms}, CACHE_BYTES: 0, STATE_DIR: {cwd}/state}}
workload: {{source: kafka:ks-events, sink: kafka:ks-copy, rate: 200, keys: 10, duration: 40s}}
checks: {{state: {{topic: ks-counts, value: long}}}}
faults:
  - {{at: 26s, kill: pipeline-0, restart-after: 1s}}
  - {{at: 34s, kill: pipeline-0, restart-after: 1s}}
quiesce: {{idle: 5s, max: 90s}}
"""

TEXT = """name: text-orders
targets: {{kafka: {{nodes: 1}}, postgres: {{}}}}
pipeline: {{command: [python, {root}/tests/e2e/pipelines/text_orders.py], replicas: 1, cwd: {cwd}}}
workload:
  source: kafka:order-lines
  format: {{value: "{{key}},{{seq}}", headers: {{onceproof-id: "{{id}}"}}}}
  sink: {{postgres: {{table: shipments, id: order_id, key: customer, seq: n, applied: applied_count}}}}
  rate: 300
  keys: 10
  duration: 12s
faults:
  - {{at: 4s, kill: pipeline-0, restart-after: 1s}}
  - {{at: 8s, kill: pipeline-0, restart-after: 1s}}
checks: {{state: {{query: "SELECT customer, count(*), sum(n) FROM shipments GROUP BY customer"}}}}
quiesce: {{idle: 4s, max: 60s}}
"""


def _run(tmp_path: Path, text: str) -> tuple[int, dict, Path]:
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out), "--json"],
                         capture_output=True, text=True, timeout=600, cwd=ROOT)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    eo = (results.get("checkers") or {}).get("exactly-once", {})
    print(f"{results.get('name')}: exit {res.returncode}, valid={results.get('valid')}, "
          f"{time.monotonic() - t0:.0f} s, anomalies={eo.get('anomalies')}; {res.stderr[-2000:]}")
    return res.returncode, results, out


def _history(out: Path, f: str) -> list[dict]:
    return [r for r in map(json.loads, (out / "history.jsonl").open()) if r.get("f") == f]


@pytest.fixture(scope="module")
def kstreams_classes(tmp_path_factory: pytest.TempPathFactory) -> str:
    """CountPerKey.java compiled against the Kafka Streams jars targets/setup.sh fetched."""
    from onceproof.home import home

    jars = home() / f"kafka-streams-{KAFKA_STREAMS}"
    assert (jars / f"kafka-streams-{KAFKA_STREAMS}.jar").exists(), \
        f"no Kafka Streams jars in {jars}: run `bash tests/e2e/kstreams/fetch.sh` (targets/setup.sh does)"
    javac = shutil.which("javac")
    assert javac, "javac is missing (a JDK is needed for the Kafka Streams test)"
    classes = tmp_path_factory.mktemp("kstreams-classes")
    subprocess.run([javac, "-d", str(classes), "-cp", f"{jars}/*", str(ROOT / "tests/e2e/kstreams/CountPerKey.java")],
                   check=True, capture_output=True, timeout=300)
    return f"{classes}{os.pathsep}{jars}/*"


def test_quix_streams_postgres_sink_duplicates_under_kills_are_found_through_a_query_mapping(tmp_path: Path) -> None:
    code, results, out = _run(tmp_path, QUIX.format(root=ROOT, cwd=tmp_path))
    eo = results["checkers"]["exactly-once"]
    assert code == 1 and results["valid"] is False, results.get("notes")
    assert eo["anomalies"]["duplicate"] >= 1
    assert eo["anomalies"]["lost"] == 0 and eo["anomalies"]["phantom"] == 0
    example = eo["examples"]["duplicate"][0]
    assert example["id"].startswith("e")


def test_kafka_streams_exactly_once_v2_passes_the_state_check_under_kills(tmp_path: Path, kstreams_classes: str) -> None:
    code, results, out = _run(tmp_path, KSTREAMS.format(guarantee="exactly_once_v2", commit_ms=1000, cwd=tmp_path,
                                                        classpath=kstreams_classes))
    eo = results["checkers"]["exactly-once"]
    assert code == 0 and results["valid"] is True, (eo.get("anomalies"), results.get("notes"))
    states = [r for r in _history(out, "state") if r["type"] == "ok"]
    assert states and sum(v["count"] for v in states[-1]["value"].values()) == results["workload"]["ok"]


def test_kafka_streams_at_least_once_with_slow_commits_is_a_state_mismatch_after_a_kill(
        tmp_path: Path, kstreams_classes: str) -> None:
    code, results, out = _run(tmp_path, KSTREAMS.format(guarantee="at_least_once", commit_ms=5000, cwd=tmp_path,
                                                        classpath=kstreams_classes))
    eo = results["checkers"]["exactly-once"]
    assert code == 1 and eo["anomalies"]["state-mismatch"] >= 1, (eo.get("anomalies"), results.get("notes"))
    assert eo["anomalies"]["lost"] == 0
    assert "in the sink" in eo["examples"]["state-mismatch"][0]["why"]


def test_text_format_with_the_id_in_a_header_and_an_upserted_table_followed_by_decoding_is_valid(
        tmp_path: Path) -> None:
    code, results, out = _run(tmp_path, TEXT.format(root=ROOT, cwd=tmp_path))
    assert code == 0 and results["valid"] is True, (results["checkers"]["exactly-once"].get("anomalies"),
                                                     results.get("notes"))
    observes = [r for r in _history(out, "observe") if r["type"] == "ok"]
    assert any(r["value"]["events"] for r in observes)  # followed while the run went on
    assert not any(r["value"]["full"] for r in observes)  # never a full read during the run
