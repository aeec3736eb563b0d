"""The front-end of `onceproof run PLAN --runs N` (harness/repeat.py does the work)."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from onceproof.errors import ExitCode, verdict_word


def run_many_command(plan: Any, args: argparse.Namespace) -> int:
    """Run `plan` args.runs times; print a line per run and the aggregate; exit code of the
    aggregate verdict (2 for a bad --runs or --out)."""
    from onceproof.repeat import run_many
    from onceproof.stages import RunFolderError
    from onceproof.targets.ledger import new_run_id

    if args.runs < 1:
        print(f"onceproof run: --runs: expected a number of runs of at least 1, got {args.runs}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    out = Path(args.out) if args.out else Path("runs") / f"{plan.name}-{new_run_id()}-x{args.runs}"
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"onceproof: running plan {escape(repr(plan.name))} {args.runs} times (seed {plan.seed} "
                  f"and derived ones, {plan.workload.duration:g}s of load each; targets "
                  f"{'started for each run' if args.restart_targets else 'kept up between runs'})")
    last_t, last_phase = [0.0], [""]

    def on_progress(p: Any) -> None:
        if time.monotonic() - last_t[0] >= 5 or p.phase != last_phase[0]:
            last_t[0], last_phase[0] = time.monotonic(), p.phase
            console.print(f"  \\[{p.phase}] {p.elapsed_s:5.1f}s sent={p.sent} applied={p.applied}")

    def on_run(i: int, r: Any) -> None:
        from onceproof.repeat import anomalies_of

        found = ", ".join(f"{k}={n}" for k, n in anomalies_of(r.results).items()) or "-"
        why = ""
        if r.valid not in (True, False):  # why there is no verdict, as the single run says it
            reasons = [str(c["reason"]) for c in (r.results.get("checkers") or {}).values()
                       if isinstance(c, dict) and c.get("valid") not in (True, False) and c.get("reason")]
            said = reasons or [str(e) for e in r.results.get("errors") or []]
            why = f": {said[0].splitlines()[0][:200]}" if said and said[0] else ""
        console.print(f"run {i}/{args.runs}: {verdict_word(r.valid)} ({found}){why} {r.out_dir}", markup=False)

    try:
        result = run_many(plan, args.runs, out, reuse=not args.restart_targets, on_progress=on_progress,
                          on_run=on_run)
    except RunFolderError as e:
        print(f"onceproof run: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    s = result.summary
    if args.json:
        print(json.dumps({"out": str(out), **{k: s[k] for k in ("valid", "exit_code", "verdicts", "catch_rate")}}))
    rates = ", ".join(f"{k} {c['runs']}/{c['of']}" for k, c in s["catch_rate"].items()) or "no anomaly"
    console.print(f"aggregate: {verdict_word(s['valid'])} ({s['verdicts']['invalid']} invalid, {s['verdicts']['unknown']} "
                  f"unknown of {s['runs_done']} runs); catch rate: {rates}", markup=False)
    console.print(f"summary: {out / 'summary.html'}", markup=False)
    return result.exit_code
