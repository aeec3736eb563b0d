"""End-to-end latency of one run, two ways from the same history, side by side (issue 17):

    .venv/bin/python benchmarks/latency.py [RUN_FOLDER] [--plan plans/demo.yaml]

ending at the read (the observer's poll that first saw each effect) and ending when the effect
became visible in the sink (the commit time logical decoding gives, `visible` in the history:
checkers/HISTORY.md). Both start at the event's acknowledgement (checkers/perf.py). Without a
RUN_FOLDER the plan is run first (`onceproof run PLAN --out <temp folder>`) and its folder read.
The difference is the observer's polling delay: the report shows the second."""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from onceproof.checkers.history import read_history
from onceproof.checkers.perf import latency_ms


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_folder", nargs="?", type=Path)
    ap.add_argument("--plan", default=str(Path(__file__).resolve().parent.parent / "plans" / "demo.yaml"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.run_folder
        if folder is None:
            folder = Path(tmp) / "run"
            print(f"running {args.plan} ...", flush=True)
            res = subprocess.run([sys.executable, "-m", "onceproof", "run", args.plan, "--out", str(folder)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
            print(f"run: exit {res.returncode}; {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else ''}")
        results = folder / "results.json"
        if results.exists():
            import json

            print(f"verdict: {'VALID' if json.loads(results.read_text()).get('valid') else 'not valid'}")
        h = read_history(folder / "history.jsonl")
        if h.eff_vis is None:
            print(f"{folder}: the history has no `visible` times (a sink that gives none): one latency only")
        to_visible = latency_ms(h)
        h.eff_vis = None  # every effect's time is then the time of the read that saw it
        to_read = latency_ms(h)
    print(f"end-to-end latency of {to_read['n']:,} acknowledged events, ms (acknowledgement -> ...)")
    print(f"{'':>6} {'the read (poll)':>16} {'visible (commit)':>17}")
    for q in ("p50", "p90", "p99", "max"):
        a, b = to_read[q], to_visible[q]
        print(f"{q:>6} {a if a is not None else '-':>16} {b if b is not None else '-':>17}")


if __name__ == "__main__":
    main()
