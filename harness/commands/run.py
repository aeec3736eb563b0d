"""`onceproof run PLAN`: the main job."""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from onceproof.errors import ExitCode, verdict_word

if TYPE_CHECKING:
    from onceproof.plan import Plan


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run a fault plan against real targets and check the pipeline")
    p.add_argument("plan", help="the plan (YAML)")
    p.add_argument("--out", help="results folder (default: runs/<plan name>-<run id>)")
    p.add_argument("--seed", type=int, help="override the plan's seed")
    p.add_argument("--duration", help="override the load's duration (e.g. 20s)")
    p.add_argument("--json", action="store_true", help="print results.json's summary as JSON on stdout")
    p.add_argument("--runtime", choices=("local", "netns", "docker"), help="override the plan's runtime")
    p.add_argument("--runs", type=int, metavar="N", help="run the plan N times (seeds derived from the plan's; "
                   "one folder each, an aggregate verdict and summary.html with the catch rate per anomaly)")
    p.add_argument("--restart-targets", action="store_true",
                   help="with --runs: start fresh targets for each run instead of keeping them up between runs")
    p.set_defaults(func=run)


def elapsed_text(elapsed_s: float, load_s: float) -> str:
    """The run's clock for the progress line: `5.0s/12s` while the `load_s` seconds of load go
    on; past them (the drain, the final read) `12s load done +5.0s`, never `17.0s/12s`."""
    if elapsed_s <= load_s:
        return f"{elapsed_s:5.1f}s/{load_s:.0f}s"
    return f"{load_s:.0f}s load done +{elapsed_s - load_s:.1f}s"


def _live_table(p: Any) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_row("[bold]phase[/]", p.phase, "[bold]elapsed[/]", elapsed_text(p.elapsed_s, p.total_s))
    t.add_row("[bold]sent[/]", f"{p.sent:,}", "[bold]acked[/]", f"{p.acked:,}")
    t.add_row("[bold]applied[/]", f"{p.applied:,}", "[bold]rate[/]", f"{p.rate:,.0f}/s")
    t.add_row("[bold]faults[/]", ", ".join(p.faults) or "-", "[bold]lag[/]",
              "-" if p.lag is None else f"{p.lag:,}")
    return t


def verdict_table(results: dict) -> Table:
    v = results.get("valid")
    title = "[green]VALID[/]" if v is True else "[red]ANOMALIES FOUND[/]" if v is False else \
        "[yellow]UNKNOWN (no verdict)[/]"
    t = Table(title=f"{escape(str(results.get('name')))}: {title}", show_lines=False)
    t.add_column("checker")
    t.add_column("verdict")
    t.add_column("anomalies")
    for name, r in (results.get("checkers") or {}).items():
        if r.get("measurement") is True:  # perf: figures, not anomalies
            lat = r.get("latency_ms") or {}
            t.add_row(escape(name), verdict_word(r.get("valid")), f"(latency ms p50={lat.get('p50')} p99={lat.get('p99')})")
            continue
        counts = ", ".join(f"{k}={n}" for k, n in (r.get("anomalies") or {}).items() if n) or "none"
        if r.get("unseen"):
            counts += f" (unseen={r['unseen']})"
        t.add_row(escape(name), verdict_word(r.get("valid")), escape(counts))
    return t


def why_unknown(name: str, result: dict) -> list[str]:
    """The lines saying why checker `name` gave no verdict: its reason, then its notes, each
    as `name: text` ([] unless its verdict is "unknown")."""
    if result.get("valid") != "unknown":
        return []
    notes = [str(n) for n in result.get("notes") or []]
    reason = str(result.get("reason") or "")
    said = reason in notes or reason.split(": ")[0] in {n.split(": ")[0] for n in notes}  # once, not twice
    return [f"{name}: {n}" for n in ([reason] if reason and not said else []) + notes]


def runnable_plan(plan_file: str, overrides: dict[str, Any] | None = None) -> Plan | None:
    """The plan in `plan_file` with `overrides` applied, or None after saying on stderr why it
    cannot run: the plan is bad (PlanError's message: file, line, field), or its runtime cannot
    run here (the netns runtime needs root: `onceproof.targets.netns.require_root` says so).
    Used by `run`, `up` and `explore`, which then exit with ExitCode.BAD_INPUT."""
    from onceproof.plan import PlanError, load_plan

    try:
        plan = load_plan(plan_file, overrides)
    except PlanError as e:
        print(e, file=sys.stderr)
        return None
    if plan.runtime != "netns":
        return plan
    from onceproof.targets.netns import NetnsError, require_root

    try:
        require_root()
    except NetnsError as e:
        print(f"{plan_file}: {e}", file=sys.stderr)
        return None
    return plan


def run(args: argparse.Namespace) -> int:
    from onceproof.plan import parse_duration
    from onceproof.runner import Progress, execute

    overrides = {}
    if args.seed is not None:
        overrides["seed"] = args.seed
    if getattr(args, "runtime", None):
        overrides["runtime"] = args.runtime
    if args.duration is not None:
        try:
            overrides["workload.duration"] = parse_duration(args.duration)
        except ValueError as e:
            print(f"onceproof run: --duration: {e}", file=sys.stderr)
            return ExitCode.BAD_INPUT
    plan = runnable_plan(args.plan, overrides)
    if plan is None:
        return ExitCode.BAD_INPUT
    from onceproof.stages import missing_program

    if (missing := missing_program(plan)) is not None:
        print(f"{args.plan}: {missing}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if args.runs is not None:
        from onceproof.commands.run_many import run_many_command

        return run_many_command(plan, args)
    from onceproof.stages import RunFolderError, check_out_dir

    try:
        if args.out:
            check_out_dir(Path(args.out))  # before anything starts; new_run checks again
    except RunFolderError as e:
        print(f"onceproof run: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    interactive = console.is_terminal and not args.json
    last_print = [0.0]

    live: Live | None = Live(_live_table(Progress()), console=console, refresh_per_second=4) if interactive else None

    def on_progress(p: Progress) -> None:
        if live is not None:
            live.update(_live_table(p))
        elif time.monotonic() - last_print[0] >= 5 or p.phase != getattr(on_progress, "phase", None):
            last_print[0] = time.monotonic()
            on_progress.phase = p.phase  # type: ignore[attr-defined]
            console.print(f"\\[{p.phase}] {elapsed_text(p.elapsed_s, p.total_s)} sent={p.sent} acked={p.acked} "
                          f"applied={p.applied} rate={p.rate:.0f}/s lag={'-' if p.lag is None else p.lag} "
                          f"faults={', '.join(p.faults) or '-'}")

    console.print(f"onceproof: running plan {escape(repr(plan.name))} (seed {plan.seed}, {plan.workload.duration:g}s of load)")
    try:
        with live if live is not None else contextlib.nullcontext():
            result = execute(plan, Path(args.out) if args.out else None, on_progress=on_progress)
    except RunFolderError as e:
        print(f"onceproof run: {e}", file=sys.stderr)
        return ExitCode.BAD_INPUT
    res = result.results
    if args.json:
        summary = {"out": str(result.out_dir), "valid": res["valid"], "exit_code": result.exit_code,
                   "checkers": {n: {"valid": r.get("valid"), "anomalies": r.get("anomalies"),
                                    "unseen": r.get("unseen"), "stall": r.get("stall"), "reason": r.get("reason")}
                                for n, r in res["checkers"].items()},
                   "workload": res["workload"], "errors": res["errors"]}
        print(json.dumps(summary))
    console.print(verdict_table(res))
    wl = res.get("workload") or {}
    if wl:
        console.print(f"load: asked {wl.get('asked_rate', 0):,.0f}/s, achieved {wl.get('achieved_rate', 0):,.0f}/s; "
                      f"sends ok={wl.get('ok')} fail={wl.get('fail')} info={wl.get('info')}")
    for err in res["errors"]:
        console.print(f"[red]error:[/] {escape(str(err))}")  # user strings are text, never markup
    for n in res["notes"]:
        console.print(f"note: {n}", markup=False)
    for name, r in (res.get("checkers") or {}).items():
        stall = r.get("stall")
        if isinstance(stall, dict) and stall.get("state") != "caught-up":
            console.print(f"{name}: pipeline {stall.get('state')}: group {stall.get('group')} lag {stall.get('lag'):,}, "
                          f"no progress for {stall.get('stalled_s')} s; unseen={r.get('unseen', 0):,}",
                          markup=False)
        for line in why_unknown(name, r):
            console.print(line, markup=False)
    console.print(f"report: {result.out_dir / 'report.html'}", markup=False)
    return result.exit_code
