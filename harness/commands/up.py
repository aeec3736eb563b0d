"""`onceproof up PLAN`: start the plan's targets, print their endpoints, wait for Ctrl-C."""
from __future__ import annotations

import argparse
import contextlib
import signal
import threading

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start a plan's targets and keep them up until Ctrl-C")
    p.add_argument("plan")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof import stages
    from onceproof.commands.run import runnable_plan
    from onceproof.targets.kinds import target_kinds
    from onceproof.targets.ledger import new_run_id

    plan = runnable_plan(args.plan)
    if plan is None:
        return ExitCode.BAD_INPUT
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *a: stop.set())
    run_id = new_run_id()
    with contextlib.ExitStack() as scope:
        scope.callback(print, "up: done", flush=True)  # the last word, after the targets stopped
        print(f"up: starting targets of {plan.name!r} (run {run_id})", flush=True)
        deployment = scope.enter_context(stages.targets_up(plan, run_id, None))  # logs in the scratch space
        scope.callback(print, "up: tearing down", flush=True)
        print(f"{'node':<10} {'direct':<22} proxied (per client group)")
        for name, direct, proxied in deployment.endpoints():
            print(f"{name:<10} {direct:<22} {proxied}")
        for name, kind in target_kinds().items():
            if deployment.target(name) is not None:
                print(f"{name} {kind.endpoint_name}: direct {deployment.endpoint(name)}  "
                      f"pipeline {deployment.endpoint(name, 'pipeline')}")
        known = {kind.env for kind in target_kinds().values()}
        for var, value in deployment.pipeline_env().items():  # a target's other endpoints (a standby)
            if var not in known:
                print(f"{var}: pipeline {value}")
        print(f"logs: {deployment.runtime.log_dir}")
        print("up: ready; Ctrl-C to tear down", flush=True)
        while not stop.wait(0.5):
            pass
    return ExitCode.VALID
