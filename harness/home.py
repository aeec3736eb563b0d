"""Where onceproof keeps its cache: `$ONCEPROOF_HOME`, by default `~/.cache/onceproof`.

A foundation module beside `onceproof.errors`: it imports nothing of onceproof, so every
room may import it. It is the one definition of the default: `targets/paths.py` lays out
the cache under it (Kafka's jars, the Toxiproxy binary, the run ledger), and the checkers
find their compiled cores under `lib/` with it (`checkers/history/native.py`,
`checkers/linearizable.py`) without importing `targets/`, which they may not.
"""
from __future__ import annotations

import os
from pathlib import Path

ENV = "ONCEPROOF_HOME"


def home() -> Path:
    """`$ONCEPROOF_HOME` if set and not empty, else `~/.cache/onceproof` (read on every call,
    so a test may set the variable)."""
    return Path(os.environ.get(ENV) or Path.home() / ".cache" / "onceproof")


def library(name: str) -> Path:
    """Path of a compiled library of ours, `<home>/lib/<name>` (e.g. `libonceproof_scan.so`);
    it may not exist (`onceproof setup` builds it)."""
    return home() / "lib" / name
