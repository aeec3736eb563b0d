"""Where onceproof keeps its cache (installed binaries) and its runs' scratch space."""
from __future__ import annotations

import os
from pathlib import Path

from onceproof.home import home as _home

KAFKA_VERSION = "4.1.1"
TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"


def home() -> Path:
    """$ONCEPROOF_HOME, default ~/.cache/onceproof: installed binaries and the run ledger
    (the default is defined once, in `onceproof.home`)."""
    return _home()


def kafka_libs() -> Path:
    return home() / f"kafka-{KAFKA_VERSION}" / "libs"


def kafka_template() -> Path:
    """A formatted KRaft log dir (bootstrap.checkpoint + meta.properties), copied per node."""
    return home() / f"kafka-{KAFKA_VERSION}" / "format-template"


def toxiproxy_binary() -> Path:
    return home() / "bin" / f"toxiproxy-server-{TOXIPROXY_VERSION}"


def clock_shim() -> Path:
    return home() / "lib" / "libonceproof_clock.so"


def ledger_dir() -> Path:
    """$ONCEPROOF_HOME/runs: one ledger file per live run (see targets/ledger.py)."""
    return home() / "runs"


registry_dir = ledger_dir  # the former name, still used by tests


def scratch_root() -> Path:
    """Nodes' data directories. Not under $HOME: PostgreSQL runs as an unprivileged user
    when we are root and must be able to reach its data directory."""
    return Path(os.environ.get("ONCEPROOF_SCRATCH") or "/tmp/onceproof")
