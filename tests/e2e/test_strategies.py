"""The exactly-once strategies of the README's table, each as the plan a user runs: the correct
pipeline is VALID, the broken one exits 1 with its row's anomaly.

Each plan takes about a minute on 2 cores, so CI runs the rows in CI_PLANS once (the plan's own
seed): the two-phase commit both ways (the two-sink run and the `partial` checker), the outbox
done right (the most involved correct pipeline: a false `lost` there is the worst failure) and
the separate snapshot (the derived-state check), and the read replicas both ways (the standby
target, the read workload and the `reads` checker: a false stale read on the correct one would
be a false alarm, and the stale one's example must be its smallest non-linearizable set of
operations). Every plan, on several seeds:
`ONCEPROOF_STRATEGY_PLANS=all ONCEPROOF_STRATEGY_SEEDS=1,2,3 pytest tests/e2e/test_strategies.py`;
`python benchmarks/strategies.py` prints the catch rate and time to the first anomaly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

# plan -> expected anomaly (None: VALID), as in the README's table of strategies
ROWS = {
    "outbox-correct": None,
    "outbox-relay-crash": "duplicate",
    "outbox-dual-write": "lost",
    "dedup-cache-correct": None,
    "dedup-cache-short-ttl": "duplicate",
    "dedup-cache-clock-jump": "duplicate",
    "checkpoint-correct": None,
    "checkpoint-separate-snapshot": "state-mismatch",
    "rebalance-correct": None,
    "rebalance-zombie": "duplicate",
    "two-phase-commit-correct": None,
    "two-phase-commit-no-recovery": "partial",
    "read-replica-correct": None,
    "read-replica-stale": "stale-read",
}

# the checker that reports each anomaly of the table (default: exactly-once)
CHECKER = {"partial": "partial", "stale-read": "reads"}


CI_PLANS = ("two-phase-commit-correct", "two-phase-commit-no-recovery", "outbox-correct",
            "checkpoint-separate-snapshot", "read-replica-correct", "read-replica-stale")


def _plans() -> list[str]:
    raw = os.environ.get("ONCEPROOF_STRATEGY_PLANS", "").strip()
    if raw == "all":
        return list(ROWS)
    return [p.strip() for p in raw.split(",") if p.strip()] or list(CI_PLANS)


def _seeds() -> list[int]:
    raw = os.environ.get("ONCEPROOF_STRATEGY_SEEDS", "")
    return [int(s) for s in raw.split(",") if s.strip()] or [0]  # 0: the plan's own seed


@pytest.mark.parametrize("seed", _seeds())
@pytest.mark.parametrize("plan", _plans())
def test_strategy_plan_gives_the_verdict_of_the_table(tmp_path, plan, seed):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "onceproof", "run", str(ROOT / "plans" / f"{plan}.yaml"), "--out", str(out), "--json"]
    if seed:
        cmd += ["--seed", str(seed)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=ROOT)
    summary = next((json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")), {})
    anomalies: dict[str, int] = {}
    for checker in summary.get("checkers", {}).values():  # exactly-once, and partial with two sinks
        anomalies |= {k: v for k, v in (checker.get("anomalies") or {}).items() if v}
    expected = ROWS[plan]
    why = (plan, seed, res.returncode, summary, res.stderr[-3000:])
    if expected is None:
        assert res.returncode == 0 and summary["valid"] is True, why
        results = json.loads((out / "results.json").read_text())
        assert all(f["outcome"] == "ok" for f in results["faults"]), results["faults"]  # the faults happened
    else:
        assert res.returncode == 1 and summary["valid"] is False, why
        assert anomalies.get(expected, 0) > 0, why
        results = json.loads((out / "results.json").read_text())
        checker = CHECKER.get(expected, "exactly-once")
        example = results["checkers"][checker]["examples"][expected][0]
        assert example["records"], example  # the records that prove it
        if checker == "reads":  # the smallest set: the read, what it missed, the write of its value
            assert 2 <= len(example["operations"]) <= 4, example
            assert results["checkers"]["reads"]["first_anomaly_s"] is not None
            assert "stale-read" in (out / "junit.xml").read_text()
            assert "smallest set that cannot be linearized" in (out / "report.html").read_text()  # the lanes
    if plan.startswith("read-replica"):  # the reads happened and were checked
        results = json.loads((out / "results.json").read_text())
        assert results["checkers"]["reads"]["reads"]["ok"] > 100, results["checkers"]["reads"]["reads"]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
