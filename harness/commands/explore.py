"""`onceproof explore PLAN`: search fault schedules for one that breaks the pipeline and
shrink it to the smallest plan that still fails (harness/explore/)."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rich.console import Console
from rich.markup import escape

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="search fault schedules for a failure and shrink it to a minimal plan")
    p.add_argument("plan", help="the plan (YAML); its `explore:` section, if any, is the space searched")
    p.add_argument("--budget", default="15m",
                   help="how long the whole command may take (default 15m), counted from its start: starting the "
                        "targets, the search, the minimal plan's reproduction runs (--confirm; those that do not fit "
                        "are not run) and stopping the targets all count. No run starts once it is spent, so the "
                        "command ends within the budget plus at most one run (its load, quiesce.max and its check)")
    p.add_argument("--runs", type=int, default=1, metavar="N",
                   help="replays of a shrink candidate before it counts as passing (default 1)")
    p.add_argument("--need", type=int, default=1, metavar="K",
                   help="failing replays (same anomaly) for a schedule to count as failing (default 1)")
    p.add_argument("--confirm", type=int, default=3, metavar="N",
                   help="runs of the minimal plan at the end, for its reproduction rate (default 3; 0: none)")
    p.add_argument("--keep-passing", action="store_true",
                   help="keep the run folders of schedules that passed (removed by default: ~10 MB a run)")
    p.add_argument("--run-duration", default="15s", help="load per run (default 15s)")
    p.add_argument("--seed", type=int, help="Hypothesis's seed and the runs' base seed (default: the plan's)")
    p.add_argument("--out", help="the folder (default runs/<plan name>-explore-<time>)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof.commands.run import runnable_plan
    from onceproof.explore.driver import ExploreFolderError, explore
    from onceproof.explore.search import Search
    from onceproof.explore.space import schedule_size
    from onceproof.plan import PlanError, parse_duration

    for flag, value in (("--budget", args.budget), ("--run-duration", args.run_duration)):
        try:
            if parse_duration(value) <= 0:
                raise ValueError(f"expected a duration above zero such as 10m, got {value!r}")
        except ValueError as e:
            print(f"onceproof explore: {flag}: {e}", file=sys.stderr)
            return ExitCode.BAD_INPUT
    if args.confirm < 0:
        print(f"onceproof explore: --confirm {args.confirm}: expected 0 or more runs", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if args.runs < 1 or not 1 <= args.need <= args.runs:
        print(f"onceproof explore: --need {args.need} of --runs {args.runs}: expected 1 <= need <= runs",
              file=sys.stderr)
        return ExitCode.BAD_INPUT
    plan = runnable_plan(args.plan, {"seed": args.seed} if args.seed is not None else {})
    if plan is None:
        return ExitCode.BAD_INPUT
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"onceproof: exploring {escape(repr(plan.name))} for {args.budget} ({args.run_duration} of load per "
                  f"run, a schedule fails when {args.need} of up to {args.runs} replays fail alike); Ctrl-C stops and "
                  "keeps the best plan so far")
    last = [0.0]

    def on_event(kind: str, s: Search) -> None:
        if kind != "example":
            return
        e = s.examples[-1]
        size = f"{schedule_size(s.minimal.schedule)[0]} fault(s)" if s.minimal else "-"
        verdicts = ",".join(str(r["valid"]) for r in e.judgement.replays)
        console.print(f"#{e.index} {e.phase}: {'FAILS ' + str(e.judgement.anomaly) if e.judgement.fails else 'passes'} "
                      f"({verdicts}) [{len(e.schedule)} fault(s)] | tried {len(s.examples)}, failures "
                      f"{sum(x.judgement.fails for x in s.examples)}, smallest failing {size}, "
                      f"{s.time_left:.0f}s left", markup=False)

    def on_progress(p: Any) -> None:
        if time.monotonic() - last[0] >= 10:
            last[0] = time.monotonic()
            console.print(f"  [{p.phase}] {p.elapsed_s:4.0f}s sent={p.sent} applied={p.applied}", markup=False)

    try:
        # the path, not the Plan: minimal.yaml is written from the user's own file (their values, unredacted)
        result = explore(args.plan, budget=args.budget, replays=args.runs, need=args.need, seed=args.seed,
                         run_duration=args.run_duration, out=args.out, on_event=on_event, on_progress=on_progress,
                         confirm=args.confirm, keep_passing=args.keep_passing)
    except (ExploreFolderError, PlanError, ValueError) as e:
        print(f"onceproof explore: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    s = result.summary
    if result.minimal_plan is not None:
        repro = s["minimal"]["reproduction"]
        rate = (f"failed again in {repro['failed']} of {repro['runs']} reproduction runs" if repro and repro["runs"]
                else f"failed in {result.reproduced[0]} of {result.reproduced[1]} replay(s), no reproduction runs")
        if repro and repro.get("skipped"):
            rate += f"; {repro['skipped']} reproduction run(s) not started: the budget was spent"
        console.print(f"found {s['anomaly']} in {s['schedules_tried']} schedules: minimal plan {result.minimal_plan} "
                      f"({len(s['minimal']['faults'])} fault(s), {rate})", markup=False)
        if len(result.search.steps) <= 1 and s["ended"] == "budget":
            console.print("not shrunk: the budget ran out right after the first failure (give a larger --budget)",
                          markup=False)
        if repro and repro.get("interrupted"):
            console.print("the reproduction runs were interrupted: their rate counts only the runs that ended",
                          markup=False)
    else:
        console.print(f"no failing schedule in {s['schedules_tried']} schedules ({s['runs']} runs); ended: "
                      f"{s['ended']}", markup=False)
    d = s["disk"]
    if d["removed_runs"]:
        console.print(f"kept the run folders of the {d['kept_runs']} failing runs; removed the {d['removed_runs']} "
                      f"that did not fail ({d['removed_mb']:g} MB; summarised in explore.html; --keep-passing keeps "
                      "them)", markup=False)
    console.print(f"report: {result.out_dir / 'explore.html'}", markup=False)
    return result.exit_code
