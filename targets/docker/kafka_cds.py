"""A class-data-sharing archive for the docker runtime's Kafka brokers, made by the image's own
Java (JEP 310, as targets/kafka/cds.py does for the local runtime).

The local runtime's archive records the host's Java and jar paths, so a container cannot use
it: a broker in a container loaded its ~7,000 classes from the jars and took about 10 s longer
to serve than a local one (benchmarks/startup.py). Here a one-shot container of the run's Kafka
image runs `java -Xshare:dump` over the class list the local set-up recorded
(`cds.class_list()`: class names only, valid for any Java and jar path) into a bind-mounted
folder, cached per image id under $ONCEPROOF_HOME/docker/ like the storage template
(kafka_storage.py). Brokers mount it read-only and start with `-XX:SharedArchiveFile=...
-Xshare:auto`. Everything here is an optimisation and can never stop a broker: without a class
list (a machine set up with `--docker-only`), when the dump fails (remembered, so it is not
tried on every run) or when the JVM finds the archive unusable, brokers start without it."""
from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from onceproof.targets import paths
from onceproof.targets.docker.kafka_storage import TIMEOUT, container_user, image_id
from onceproof.targets.kafka import cds

if TYPE_CHECKING:
    from onceproof.targets.docker.runtime import DockerRuntime

MOUNT = "/onceproof/cds"
ARCHIVE = "broker.jsa"
_LOCK = threading.Lock()  # the nodes of a cluster start at once: one dump, the others wait for it


def archive_dir(image: str) -> Path:
    """Where the archive made by image `image` (`sha256:<hex>`) is cached."""
    return paths.home() / "docker" / f"kafka-cds-{image.rpartition(':')[2][:16]}"


def archive(runtime: "DockerRuntime") -> Path | None:
    """The folder holding ARCHIVE for the run's Kafka image (made on first use by one container,
    labelled with the run id and removed when it ends), or None when there is none to be had.
    Never raises."""
    classes = cds.class_list()
    if classes is None:
        return None
    with _LOCK:
        return _archive(runtime, classes)


def _archive(runtime: "DockerRuntime", classes: Path) -> Path | None:
    try:
        target = archive_dir(image_id(runtime, runtime.image("kafka")))
        if (target / ARCHIVE).is_file():
            return target
        failed = target.with_name(target.name + ".failed")
        if failed.exists():
            return None
        target.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            shutil.copy(classes, work / "classes.lst")
            if not _dump(runtime, work) or not (work / ARCHIVE).is_file():
                failed.write_text("java -Xshare:dump failed in the image: brokers start without an archive\n")
                return None
            try:
                work.rename(target)  # atomic: a concurrent run may have won; then keep its
            except OSError:
                pass
            return target if (target / ARCHIVE).is_file() else None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    except Exception:  # noqa: BLE001 - an optimisation: brokers start without it
        return None


def jvm_options(folder: Path | None) -> list[str]:
    """A broker's JVM options for the archive in `folder` (mounted at MOUNT); [] without one."""
    return [] if folder is None else [f"-XX:SharedArchiveFile={MOUNT}/{ARCHIVE}", "-Xshare:auto"]


def _dump(runtime: "DockerRuntime", work: Path) -> bool:
    """Run the image's `java -Xshare:dump` over work/classes.lst into work/ARCHIVE: whether it
    exited 0. Raises docker.errors.APIError when the engine refuses the container."""
    container = runtime.client.containers.run(
        runtime.image("kafka"), entrypoint=["java"],
        command=["-Xshare:dump", f"-XX:SharedClassListFile={MOUNT}/classes.lst",
                 f"-XX:SharedArchiveFile={MOUNT}/{ARCHIVE}", "-cp", "/opt/kafka/libs/*"],
        volumes={str(work): {"bind": MOUNT, "mode": "rw"}}, user=container_user(),
        labels=runtime.labels("kafka-cds"), name=f"op-{runtime.run_id}-kafka-cds", detach=True)
    try:
        return int(container.wait(timeout=TIMEOUT).get("StatusCode", -1)) == 0
    finally:
        try:
            container.remove(force=True)
        except Exception:  # noqa: BLE001 - gone already; the run's cleanup removes by label anyway
            pass
