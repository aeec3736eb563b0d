"""Catch rate of the strategies' plans: each plan of the README's table of strategies on N seeds;
per plan, how many runs gave the table's verdict and, for the broken ones, how long after the
load started the first anomaly was visible.

Time to the first anomaly: a `duplicate` is visible when the observer's reads show an event id
a second time (or, when the reads during the run showed nothing, as they often do for a Kafka
sink, at the final read); `lost` and `state-mismatch` are known only once the pipeline caught up, so their
time is the final read's; `partial` is known once the other sinks were read after it; a
`stale-read` when the first accused read was invoked (the reads checker's `first_anomaly_s`).

    .venv/bin/python benchmarks/strategies.py                     # every plan, seeds 1 2 3
    .venv/bin/python benchmarks/strategies.py --seeds 1 --plans outbox-relay-crash
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.e2e.test_strategies import ROWS  # noqa: E402 - the table's plans and verdicts, one place


def first_anomaly_s(out: Path, anomaly: str) -> float | None:
    """Seconds from load-start to the first sight of `anomaly` in the run folder's history."""
    start = None
    counts: dict[str, int] = {}
    with open(out / "history.jsonl", "rb") as f:
        for line in f:
            if b'"f":"load-start"' in line:
                start = orjson.loads(line)["time"]
            elif anomaly == "duplicate" and b'"f":"observe"' in line and b'"type":"ok"' in line:
                rec = orjson.loads(line)
                value = rec.get("value") or {}
                if value.get("full"):
                    counts = {}
                for ev in value.get("events") or []:
                    counts[ev[0]] = counts.get(ev[0], 0) + 1
                    if counts[ev[0]] > 1 and start is not None:
                        return (rec["time"] - start) / 1e9
            elif anomaly == "duplicate" and b'"f":"final-read"' in line and b'"type":"ok"' in line:
                rec = orjson.loads(line)
                ids = [ev[0] for ev in (rec.get("value") or {}).get("events") or []]
                if len(ids) != len(set(ids)) and start is not None:
                    return (rec["time"] - start) / 1e9
            elif anomaly != "duplicate" and b'"type":"ok"' in line and (
                    b'"f":"sink-content"' in line if anomaly == "partial" else b'"f":"final-read"' in line):
                if start is not None:
                    return (orjson.loads(line)["time"] - start) / 1e9
    return None


def summarise(plan: str, out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    anomalies: dict[str, int] = {}
    for checker in results["checkers"].values():  # exactly-once, and partial with two sinks
        anomalies |= {k: v for k, v in ((checker or {}).get("anomalies") or {}).items() if v}
    expected = ROWS[plan]
    caught = results["valid"] is True if expected is None else anomalies.get(expected, 0) > 0
    return {"valid": results["valid"], "as_expected": caught,
            "anomalies": anomalies,
            "first_s": (results["checkers"]["reads"].get("first_anomaly_s") if expected == "stale-read"
                        else first_anomaly_s(out, expected)) if expected and caught else None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--plans", nargs="+", default=list(ROWS), choices=list(ROWS))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="onceproof-strategies-") as tmp:
        for plan in args.plans:
            for seed in args.seeds:
                out = Path(tmp) / f"{plan}-{seed}"
                subprocess.run([sys.executable, "-m", "onceproof", "run", str(ROOT / "plans" / f"{plan}.yaml"),
                                "--out", str(out), "--seed", str(seed)], cwd=ROOT, timeout=600,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                s = summarise(plan, out) if (out / "results.json").exists() else {"as_expected": False}
                rows.append((plan, seed, s))
                print(f"{plan:30} seed {seed}: {s}", flush=True)
    print(f"\n{'plan':30} {'expected':15} {'as expected':>11} {'first anomaly (s)':>18}")
    for plan in args.plans:
        mine = [s for p, _, s in rows if p == plan]
        firsts = [s["first_s"] for s in mine if s.get("first_s") is not None]
        print(f"{plan:30} {ROWS[plan] or 'VALID':15} {sum(s['as_expected'] for s in mine):>5}/{len(mine):<5} "
              f"{(f'{min(firsts):.1f}..{max(firsts):.1f}' if firsts else '-'):>18}")


if __name__ == "__main__":
    main()
