"""`onceproof plan schema` / `onceproof plan validate FILE`."""
from __future__ import annotations

import argparse
import json
import sys

import yaml

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="plan tools: print the JSON Schema, validate a plan")
    psub = p.add_subparsers(dest="plan_command", metavar="ACTION")
    s = psub.add_parser("schema", help="print the plans' JSON Schema (for editors)")
    s.set_defaults(func=schema)
    v = psub.add_parser("validate", help="validate a plan and print it with every default filled in")
    v.add_argument("file")
    v.set_defaults(func=validate)
    p.set_defaults(func=lambda args: (p.print_help(), ExitCode.BAD_INPUT)[1])


def schema(args: argparse.Namespace) -> int:
    from onceproof.plan import json_schema

    print(json.dumps(json_schema(), indent=2))
    return ExitCode.VALID


def validate(args: argparse.Namespace) -> int:
    from onceproof.plan import PlanError, load_plan

    try:
        plan = load_plan(args.file)
    except PlanError as e:
        print(e, file=sys.stderr)
        return ExitCode.BAD_INPUT
    print(f"# {args.file}: valid; resolved:")
    print(yaml.safe_dump(plan.resolved(), sort_keys=False), end="")
    return ExitCode.VALID
