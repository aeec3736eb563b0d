"""Where the Docker API is, whether it answers, and how to make it answer on this kind of
machine.

The engine is found, in order, at `$DOCKER_HOST`, `/var/run/docker.sock` (a CI runner's
Docker), or `/run/podman/podman.sock` (Debian's podman serving the Docker API, which
`engine.sh` installs and starts; see the README's docker section for why runc and which
rlimits). testcontainers is configured here for such an engine: no Ryuk (it needs an image
from a registry; a run's containers are removed by label instead, see cleanup.py) and the
`docker_host` connection mode (testcontainers' `gateway_ip` mode, chosen when /.dockerenv
exists, reads a field podman's list API does not return)."""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from onceproof.errors import OnceproofError

if TYPE_CHECKING:
    import docker

PODMAN_SOCKET = Path("/run/podman/podman.sock")
DOCKER_SOCKET = Path("/var/run/docker.sock")
ENGINE_SCRIPT = Path(__file__).with_name("engine.sh")
LABEL = "io.onceproof.run"  # every container, network and volume of a run carries it: value = run id


class EngineError(OnceproofError, RuntimeError):
    """No container engine answers, or it refused a request (the message says what to do)."""


def docker_host() -> str:
    """The Docker API's URL: $DOCKER_HOST, else the first socket of DOCKER_SOCKET and
    PODMAN_SOCKET that exists, else DOCKER_SOCKET's URL (which then does not answer)."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    for sock in (DOCKER_SOCKET, PODMAN_SOCKET):
        if sock.is_socket():
            return f"unix://{sock}"
    return f"unix://{DOCKER_SOCKET}"


def configure_testcontainers() -> None:
    """Set testcontainers' settings (environment variables it reads when first imported),
    unless the user set them: DOCKER_HOST, no Ryuk, `docker_host` connection mode, host
    `localhost`."""
    os.environ.setdefault("DOCKER_HOST", docker_host())
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    os.environ.setdefault("TESTCONTAINERS_CONNECTION_MODE", "docker_host")
    os.environ.setdefault("TESTCONTAINERS_HOST_OVERRIDE", "localhost")


def client(timeout: float = 60.0) -> "docker.DockerClient":
    """A docker SDK client of the engine (API version negotiated). Raises EngineError when
    nothing answers."""
    import docker

    configure_testcontainers()
    try:
        c = docker.DockerClient(base_url=docker_host(), version="auto", timeout=int(timeout))
        c.ping()
        return c
    except Exception as e:  # noqa: BLE001 - docker raises several kinds for "nobody there"
        raise EngineError(f"no container engine answers at {docker_host()}: {e}; run "
                          "`onceproof setup --images` (it provisions podman here), or set DOCKER_HOST") from None


PROVISION_TIMEOUT_S = 900.0  # Debian packages on a fresh machine take 1-3 min; a hang is a bug


def provision(log: "Callable[[str], None]" = print, timeout: float = PROVISION_TIMEOUT_S) -> None:
    """Run engine.sh: nothing when an engine answers already; otherwise (root, Debian) install
    podman + runc, write /etc/containers/containers.conf, start the API service (detached:
    it outlives this call, and holds none of its pipes). Raises EngineError with the script's
    output if it fails or takes longer than `timeout` seconds."""
    try:
        res = subprocess.run(["bash", str(ENGINE_SCRIPT)], capture_output=True, text=True,
                             start_new_session=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        raise EngineError(f"engine provisioning ({ENGINE_SCRIPT}) did not finish in {timeout:.0f} s; "
                          f"it printed: {out.strip()[-2000:] or 'nothing'}") from None
    for line in res.stdout.splitlines():
        log(line)
    if res.returncode != 0:
        raise EngineError(f"engine provisioning failed ({res.returncode}): {res.stderr.strip()[-2000:]}")


@dataclass
class EngineStatus:
    """What `onceproof doctor` says of the engine."""

    url: str
    reachable: bool
    detail: str  # "podman 4.3.1, API 1.41" or why it does not answer


def status() -> EngineStatus:
    """The engine's status, asked with a short timeout (never raises)."""
    url = docker_host()
    try:
        c = client(timeout=5)
        v = c.version()
        name = next((comp.get("Name", "") for comp in v.get("Components", []) if comp.get("Name")), "Docker Engine")
        return EngineStatus(url, True, f"{name} {v.get('Version', '?')}, API {c.api.api_version} at {url}")
    except EngineError as e:
        return EngineStatus(url, False, str(e).split(";")[0])


if TYPE_CHECKING:
    from collections.abc import Callable
