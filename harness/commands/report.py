"""`onceproof report RUN_DIR`: (re-)render a run's report.html from the files in its folder."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from onceproof.errors import ExitCode


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="re-render a run's report.html from its folder",
        description="Re-render RUN_DIR/report.html from the run's plan.yaml, history.jsonl, "
                    "results.json, junit.xml and logs/ (any of them may be missing).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder, as written by `onceproof run --out DIR`")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof.report import render
    from onceproof.report.run_folder import is_run_folder

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        print(f"onceproof report: {run_dir} is not a folder; give the folder a run wrote "
              f"(`onceproof run PLAN --out DIR` writes one)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    if not is_run_folder(run_dir):
        print(f"onceproof report: {run_dir} is not a run folder: it has neither history.jsonl nor "
              f"results.json (a run folder is what `onceproof run PLAN --out DIR` writes)", file=sys.stderr)
        return ExitCode.BAD_INPUT
    path = render(run_dir)
    print(path)
    return ExitCode.VALID
