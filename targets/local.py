"""The `local` runtime: every node is a process on 127.0.0.1 with its own port and data
directory. Client traffic goes through Toxiproxy (see targets/deployment.py). It implements
targets.runtime.Runtime."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
from pathlib import Path

from onceproof.targets import paths
from onceproof.targets.ledger import RunEntry, new_run_id

LISTEN_PORTS = (20000, 32767)  # where servers listen, if the ephemeral range starts above it
_draw = random.SystemRandom()  # not the module's generator: a test that seeds it must not make runs collide


def listen_ports() -> tuple[int, int]:
    """(low, high) of LISTEN_PORTS below the kernel's ephemeral range
    (/proc/sys/net/ipv4/ip_local_port_range, Linux's default 32768-60999); (0, 0) when the
    range leaves no room (then the kernel's port 0 is used)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            first = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return (0, 0)
    low, high = LISTEN_PORTS[0], min(LISTEN_PORTS[1], first - 1)
    return (low, high) if high - low >= 1000 else (0, 0)


class LocalRuntime:
    """Processes on 127.0.0.1, data under `<scratch root>/<run id>/`, listed in the run's ledger
    while they live. Raises OSError if the scratch space cannot be made."""

    name = "local"
    client_proxies = True  # every node shares 127.0.0.1: faults act on the clients' proxies

    def __init__(self, run_id: str | None = None, log_dir: Path | None = None) -> None:
        self.run_id = run_id or new_run_id()
        # an exclusive mkdir (what tempfile.mkdtemp does, under the run's own unique name) in a
        # root only we can write: nobody can have put a folder or a symlink there first
        self.scratch = paths.private_scratch_root() / self.run_id
        os.mkdir(self.scratch, 0o700)
        if os.geteuid() == 0:
            os.chmod(self.scratch, 0o711)  # servers' own accounts traverse to their 0700 folders
        self.log_dir = Path(log_dir) if log_dir else self.scratch / "logs"
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.entry = RunEntry(run_id=self.run_id, scratch=str(self.scratch))
        self.entry.save()
        self._ports: set[int] = set()
        self.closed = False
        self.clock_shim = self._copy_clock_shim()

    def _copy_clock_shim(self) -> Path | None:
        # a copy every process can read (PostgreSQL runs unprivileged and cannot reach ~root)
        shim = paths.clock_shim()
        if not shim.exists():
            return None
        target = self.scratch / "lib" / shim.name
        target.parent.mkdir(exist_ok=True)
        os.chmod(target.parent, 0o755)
        shutil.copy(shim, target)
        os.chmod(target, 0o755)
        return target

    def host_for(self, node_name: str) -> str:
        """Every node listens on 127.0.0.1."""
        return "127.0.0.1"

    def free_port(self) -> int:
        """A port nobody uses on 127.0.0.1 now, never handed out twice in this run, drawn from
        LISTEN_PORTS (below the kernel's ephemeral range) when that range leaves room. A port
        the kernel hands out for port 0 is an ephemeral one, which any outgoing connection of
        the machine may take as its local port before our server binds it: a Kafka node then
        failed to start with `BindException: Address already in use` (CI, while other runs
        opened connections). Raises RuntimeError when none is found."""
        low, high = listen_ports()
        for _ in range(400):
            if high > low:
                port = _draw.randint(low, high)
                try:
                    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                        s.bind(("127.0.0.1", port))
                except OSError:
                    continue
            else:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
            if port not in self._ports:
                self._ports.add(port)
                return port
        raise RuntimeError("no free TCP port found on 127.0.0.1")

    def node_dir(self, name: str, sub: str = "data") -> Path:
        """`<scratch>/<sub>/<name>`, created 0700 (a node that runs as another account gets it
        chowned by its node class)."""
        d = self.scratch / sub / name
        d.parent.mkdir(mode=0o711, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
        return d

    def register(self, name: str, pid: int) -> None:
        """Record process `pid` as node `name` in the run's ledger."""
        self.entry.add_process(name, pid)

    def unregister(self, name: str) -> None:
        """Forget node `name`'s process in the ledger (a no-op if it is not there)."""
        self.entry.remove_process(name)

    def spawning(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Processes start right here: nothing to do."""
        return contextlib.nullcontext()

    def entered(self, name: str) -> contextlib.AbstractContextManager[None]:
        """Every host is this machine's loopback: nothing to do."""
        return contextlib.nullcontext()

    def close(self) -> None:
        """Remove the scratch space and the ledger entry (nodes must be stopped first)."""
        if self.closed:
            return
        self.closed = True
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.entry.forget()

    def __enter__(self) -> "LocalRuntime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
