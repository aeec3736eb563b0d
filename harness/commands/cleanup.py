"""`onceproof cleanup`: remove what runs killed with SIGKILL left behind."""
from __future__ import annotations

import argparse

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cleanup", help="remove processes, data dirs and namespaces of dead runs")
    p.add_argument("--all", action="store_true", help="also runs whose harness is still alive")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof.targets.ledger import remove_run, stale_runs

    runs = stale_runs(include_live=args.all)
    if not runs:
        print("cleanup: nothing left behind")
        return ExitCode.VALID
    for entry in runs:
        refused: list[str] = []
        removed = remove_run(entry, refused)
        print(f"cleanup: run {entry.run_id}: removed {len(removed)} item(s)")
        for item in removed:
            print(f"  - {item}")
        for item in refused:  # a ledger entry naming what is not ours: never acted on
            print(f"  - left alone, not ours: {item}")
    return ExitCode.VALID
