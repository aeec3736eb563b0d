"""A real run through the CLI whose pipeline gets secrets in `pipeline.env`: no file the run writes (plan.yaml, results.json, report.html, junit.xml, the
history, the logs) carries any of them; the run folder is closed to other users."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

SECRETS = {"DB_PASSWORD": "pw-3f9a1c77", "API_TOKEN": "tok-8b2e44d0", "SIGNING_KEY": "key-51c0a9e3",
           "LISTED": "listed-7d1e6f02"}

PLAN = f"""name: secrets
targets: {{kafka: {{nodes: 1}}, postgres: {{}}}}
pipeline:
  command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres]
  env: {json.dumps({**SECRETS, "MODE": "plain-value"})}
  secret-env: [LISTED]
  progress: SELECT partition, max(next_offset) FROM onceproof_offsets GROUP BY partition  # its positions live in PostgreSQL
workload: {{source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 200, keys: 5, duration: 3s}}
quiesce: {{idle: 2s, max: 30s}}
"""


def test_a_run_writes_no_secret_of_pipeline_env(tmp_path: Path) -> None:
    plan = tmp_path / "secrets.yaml"
    plan.write_text(PLAN)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "onceproof", "run", str(plan), "--out", str(out), "--json"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"plan.yaml", "results.json", "report.html", "junit.xml", "history.jsonl"} <= {p.name for p in written}
    for path in written:
        data = path.read_bytes()
        for name, value in SECRETS.items():
            assert value.encode() not in data, f"{name}'s value is in {path.relative_to(out)}"
    assert b"plain-value" in (out / "plan.yaml").read_bytes()  # what is not secret is kept
    assert "<redacted>" in (out / "plan.yaml").read_text()
    assert stat.S_IMODE(out.stat().st_mode) & 0o007 == 0, "the run folder is open to every user"
    for line in res.stdout.splitlines() + res.stderr.splitlines():
        assert not any(v in line for v in SECRETS.values()), line
