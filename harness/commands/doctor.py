"""`onceproof doctor [--runtime R]`: is everything the default plans (or runtime R) need installed?
Exit 0 when every required component is there, 1 when one is missing."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.markup import escape

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check the installed components, one line each")
    p.add_argument("--runtime", choices=("local", "netns", "docker"),
                   help="only what this runtime needs is required (default: the local runtimes' needs; "
                        "a docker-only machine, set up with `setup --docker-only`, uses --runtime docker)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof.targets.provision import components

    console = Console(highlight=False, soft_wrap=True)
    ok = True
    for c in components(args.runtime):
        word, colour = ("ok", "green") if c.ok else (("MISSING", "red") if c.required else ("absent", "yellow"))
        line = f"[{colour}]{word:<8}[/] {escape(c.name):<16} {escape(c.detail)}"  # padded as text, then coloured
        if not c.ok:
            line += f"   -> fix: [bold]{escape(c.fix)}[/]"
            ok = ok and not c.required
        console.print(line)
    return ExitCode.VALID if ok else ExitCode.INVALID
