"""Where onceproof keeps its cache (installed binaries) and its runs' scratch space."""
from __future__ import annotations

import os
import stat
from pathlib import Path

from onceproof.home import home as _home

KAFKA_VERSION = "4.1.1"
TOXIPROXY_VERSION = "v2.12.0"
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
# SeaweedFS (Apache-2.0): the S3-compatible server the tests of `check --engine spark s3://...` read from
SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
SEAWEEDFS_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"


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


def seaweedfs_binary() -> Path:
    """SeaweedFS's `weed`, built from source by provision.install_seaweedfs (tests only)."""
    return home() / "bin" / f"weed-{SEAWEEDFS_VERSION}"


def clock_shim() -> Path:
    return home() / "lib" / "libonceproof_clock.so"


def ledger_dir() -> Path:
    """$ONCEPROOF_HOME/runs: one ledger file per live run (see targets/ledger.py)."""
    return home() / "runs"


registry_dir = ledger_dir  # the former name, still used by tests


def scratch_root() -> Path:
    """Nodes' data directories: $ONCEPROOF_SCRATCH, default /tmp/onceproof-<uid> (one root per
    user, so another user cannot take the name first). Not under $HOME: PostgreSQL and Redis
    run as unprivileged users when we are root and must be able to reach their data."""
    return Path(os.environ.get("ONCEPROOF_SCRATCH") or f"/tmp/onceproof-{os.geteuid()}")


class ScratchError(OSError):
    """The scratch root is not a folder of ours that only we can write."""


def private_scratch_root() -> Path:
    """scratch_root(), made if missing, after checking it is a real folder (not a symlink)
    owned by us that no one else can write. Its mode is set through a descriptor opened with
    O_NOFOLLOW, never through a path someone could swap for a symlink: 0700, or 0711 when we
    are root (the unprivileged server accounts must traverse it; nobody else can list it).
    Raises ScratchError."""
    root = scratch_root()
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(root, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise ScratchError(f"scratch root {root} is not a folder (a symlink?): {e.strerror}; "
                           "remove it or set ONCEPROOF_SCRATCH to a folder of yours") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid():
            raise ScratchError(f"scratch root {root} belongs to uid {st.st_uid}, not to us (uid {os.geteuid()}): "
                               "remove it or set ONCEPROOF_SCRATCH to a folder of yours")
        os.fchmod(fd, 0o711 if os.geteuid() == 0 else 0o700)
        if not stat.S_ISDIR(st.st_mode):  # pragma: no cover - O_DIRECTORY already refused it
            raise ScratchError(f"scratch root {root} is not a folder")
    finally:
        os.close(fd)
    return root
