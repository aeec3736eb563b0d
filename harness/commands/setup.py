"""`onceproof setup`: install Kafka's jars, the Toxiproxy server and the clock shim into the
cache. (Debian packages and the virtualenv come from targets/setup.sh, which calls this.)"""
from __future__ import annotations

import argparse
import sys

from onceproof.errors import ExitCode


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("setup", help="install Kafka jars, Toxiproxy and the clock shim into $ONCEPROOF_HOME")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from onceproof.targets.provision import install_all

    try:
        install_all(log=lambda m: print(f"setup: {m}", flush=True))
    except RuntimeError as e:
        print(f"setup failed: {e}", file=sys.stderr)
        return ExitCode.UNKNOWN
    print("setup: done")
    return ExitCode.VALID
