"""The KRaft storage template of a docker run, formatted by the Kafka image itself.

On the local runtime Kafka's StorageTool runs with the machine's Java (targets/kafka
format_template). A docker run must need no Java on the harness machine (a CI runner has
Docker, not a JRE nor Kafka's jars), so here a one-shot container of the run's Kafka image runs
the image's own `/opt/kafka/bin/kafka-storage.sh format` (the official `apache/kafka` image
has it; the locally built image of that name carries a script of the same name and
arguments, targets/docker/kafka-storage.sh) into a bind-mounted folder. Each node then copies
that folder's `bootstrap.checkpoint` and writes its own `meta.properties`, as on the local
runtime, so the JVM starts once per image, not once per node: the template is cached under
$ONCEPROOF_HOME/docker/, keyed by the image's id (another image, e.g. another Kafka version,
gets its own)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from onceproof.targets import paths
from onceproof.targets.docker.images import rebuild_hint
from onceproof.targets.kafka import random_id
from onceproof.targets.process import NodeError

if TYPE_CHECKING:
    from onceproof.targets.docker.runtime import DockerRuntime

STORAGE_TOOL = "/opt/kafka/bin/kafka-storage.sh"
MOUNT = "/onceproof/format"
TIMEOUT = 180.0  # seconds for the one-shot container (a JVM start on a loaded 2-core machine)


def container_user() -> str:
    """`uid:gid` of the harness's process: what a container writing into a folder of ours runs
    as, so the files it leaves are ours to copy and remove (the official image's own account,
    `appuser`, is uid 1000, which a CI runner's user is not)."""
    return f"{os.getuid()}:{os.getgid()}"


def template_dir(image_id: str) -> Path:
    """Where the template formatted by image `image_id` (`sha256:<hex>`) is cached."""
    return paths.home() / "docker" / f"kafka-storage-{image_id.rpartition(':')[2][:16]}"


def image_id(runtime: "DockerRuntime", ref: str) -> str:
    """The engine's id (`sha256:<hex>`) of image `ref`, pulled if the engine lacks it. Raises
    NodeError when it can be neither found nor pulled."""
    import docker

    try:
        return str(runtime.client.images.get(ref).id)
    except docker.errors.ImageNotFound:
        pass
    try:
        return str(runtime.client.images.pull(ref).id)
    except docker.errors.APIError as e:
        raise NodeError(f"kafka: image {ref} is not in the engine and cannot be pulled: {e}") from None


def storage_template(runtime: "DockerRuntime") -> Path:
    """The folder holding `bootstrap.checkpoint` formatted by the run's Kafka image (made on
    first use: one container, labelled with the run id, removed when it ends). Raises
    NodeError with the tool's output when the format fails."""
    ref = runtime.image("kafka")
    template = template_dir(image_id(runtime, ref))
    if (template / "bootstrap.checkpoint").exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=template.name + ".tmp-", dir=template.parent))
    try:
        (work / "server.properties").write_text(
            "process.roles=broker,controller\nnode.id=1\ncontroller.quorum.voters=1@127.0.0.1:9\n"
            "listeners=DIRECT://127.0.0.1:8,CONTROLLER://127.0.0.1:9\ncontroller.listener.names=CONTROLLER\n"
            "listener.security.protocol.map=DIRECT:PLAINTEXT,CONTROLLER:PLAINTEXT\n"
            f"inter.broker.listener.name=DIRECT\nlog.dirs={MOUNT}/data\n")
        code, output = _run_format(runtime, ref, work)
        if code != 0 or not (work / "data" / "bootstrap.checkpoint").exists():
            raise NodeError(f"kafka: `{STORAGE_TOOL} format` in image {ref} exited {code} without writing "
                            f"bootstrap.checkpoint: {output[-1500:]}")
        try:
            (work / "data").rename(template)  # atomic: a concurrent run may have won; then keep its
        except OSError:
            if not (template / "bootstrap.checkpoint").exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return template


def _run_format(runtime: "DockerRuntime", ref: str, work: Path) -> tuple[int, str]:
    """(exit code, output) of the one-shot format container."""
    import docker

    try:
        container = runtime.client.containers.run(
            ref, entrypoint=[STORAGE_TOOL], command=["format", "-t", random_id(), "-c", f"{MOUNT}/server.properties"],
            volumes={str(work): {"bind": MOUNT, "mode": "rw"}}, user=container_user(),
            environment={"LOG_DIR": f"{MOUNT}/logs"},  # the official launcher's log dir: one we can write
            labels=runtime.labels("kafka-format"), name=f"op-{runtime.run_id}-kafka-format", detach=True)
    except docker.errors.APIError as e:
        hint = rebuild_hint(runtime.client, ref, STORAGE_TOOL, str(e))
        raise NodeError(f"kafka: the engine refused the storage-format container of {ref}: {e}{hint}") from None
    try:
        try:
            code = int(container.wait(timeout=TIMEOUT).get("StatusCode", -1))
        except Exception as e:  # noqa: BLE001 - a read timeout of the engine's API, among others
            return -1, f"did not end within {TIMEOUT:.0f}s ({e})"
        return code, container.logs().decode(errors="replace")
    finally:
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - gone already; the run's cleanup removes by label anyway
            pass
