"""A class-data-sharing (AppCDS) archive of the classes a Kafka broker loads, so each broker's
JVM maps them ready-parsed instead of loading ~7,000 classes from the jars: a broker's start
takes less time and CPU (`benchmarks/startup.py --cds` measures both, side by side).

Built once by the set-up (`onceproof setup`), for the installed Java and Kafka: one broker is
started with `-XX:DumpLoadedClassList`, serves a topic (produce and consume, so the request
paths are loaded too), and is killed; then `java -Xshare:dump` writes the archive
(JEP 310, "Application Class-Data Sharing"; JDK 17 has no auto-archive flag). Brokers start
with `-XX:SharedArchiveFile=<archive> -Xshare:auto`: a JVM that finds the archive unusable
(another Java, another class path) ignores it and loads classes as before, so the archive is
an optimisation that can never stop a broker. Building it is best-effort too: a failure is
logged and set-up goes on."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from onceproof.targets import paths


def _java_fingerprint() -> str | None:
    """A short hash of the `java` binary's real path, size and mtime (another Java: another
    archive), or None when there is no java."""
    java = shutil.which("java")
    if java is None:
        return None
    real = os.path.realpath(java)
    st = os.stat(real)
    return hashlib.sha256(f"{real}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]


def archive_path() -> Path | None:
    """Where the archive of this Java and Kafka version lives (it may not exist yet), or None
    without java."""
    fp = _java_fingerprint()
    return None if fp is None else paths.kafka_libs().parent / f"broker-cds-{fp}.jsa"


def class_list() -> Path | None:
    """The list of classes a broker loads, recorded when the archive was built (kept beside it:
    class names only, so the docker runtime makes an archive of its own from it with the
    image's Java and jar paths, targets/docker/kafka_cds.py), or None when not recorded."""
    path = paths.kafka_libs().parent / "broker-classes.lst"
    return path if path.is_file() else None


def jvm_options() -> list[str]:
    """The options a broker's JVM starts with to use the archive; [] when it is not built."""
    path = archive_path()
    if path is None or not path.is_file():
        return []
    return [f"-XX:SharedArchiveFile={path}", "-Xshare:auto"]


def build(log: Callable[[str], None] = print) -> Path | None:
    """Build the archive unless it exists: returns its path, or None (logged) when it could not
    be built. Takes 30-60 s (one broker start and one dump). Never raises."""
    target = archive_path()
    if target is None or target.is_file():
        return target
    log("kafka: building the broker's class-data-sharing archive (once; faster broker starts)")
    try:
        with tempfile.TemporaryDirectory(prefix="onceproof-cds-") as tmp:
            classes = Path(tmp) / "classes.lst"
            _exercise_broker(Path(tmp), classes)
            partial = target.with_suffix(".tmp")
            res = subprocess.run(["java", "-Xshare:dump", f"-XX:SharedClassListFile={classes}",
                                  f"-XX:SharedArchiveFile={partial}", "-cp", str(paths.kafka_libs() / "*")],
                                 capture_output=True, text=True, timeout=600)
            if res.returncode != 0 or not partial.is_file():
                raise RuntimeError(f"java -Xshare:dump exited {res.returncode}: {res.stderr.strip()[-500:]}")
            shutil.copy(classes, paths.kafka_libs().parent / "broker-classes.lst")
            partial.rename(target)
    except Exception as e:  # noqa: BLE001 - an optimisation: brokers start without it
        log(f"kafka: no class-data-sharing archive ({e}); brokers start without one")
        return None
    return target


def _exercise_broker(scratch: Path, classes: Path) -> None:
    """Start one broker that records the classes it loads into `classes`, create a topic,
    produce and consume a record through it, and tear it down."""
    from onceproof.targets.deployment import Deployment, TargetsSpec
    from onceproof.targets.local import LocalRuntime

    runtime = LocalRuntime(log_dir=scratch / "logs")
    d = Deployment.create(runtime, TargetsSpec(kafka_nodes=1))
    for node in d.servers():
        node.jvm_extra = [f"-XX:DumpLoadedClassList={classes}"]  # type: ignore[attr-defined]
    try:
        d.start()
        _produce_and_consume(d.endpoint("kafka"))
    finally:
        d.stop()
    if not classes.is_file() or classes.stat().st_size == 0:
        raise RuntimeError("the broker wrote no class list")
    # the broker is killed while it writes the list: a last line cut short makes -Xshare:dump
    # refuse the whole list ("Line with @ tag has too few items"), so keep the whole lines only
    data = classes.read_bytes()
    classes.write_bytes(data[:data.rfind(b"\n") + 1])


def _produce_and_consume(bootstrap: str) -> None:
    """Create topic `cds`, produce one record (idempotent producer) and consume and commit it;
    every client is gone when this returns (none logs about a broker that went away)."""
    from confluent_kafka import Consumer, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    quiet = {"bootstrap.servers": bootstrap, "log_level": 0}
    admin = AdminClient(quiet)  # kept: its futures die with it
    admin.create_topics([NewTopic("cds", 1, 1)])["cds"].result(30)
    p = Producer({**quiet, "enable.idempotence": True})
    p.produce("cds", b"x")
    p.flush(30)
    c = Consumer({**quiet, "group.id": "cds", "auto.offset.reset": "earliest"})
    c.subscribe(["cds"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = c.poll(1.0)
        if m is not None and not m.error():
            c.commit(m, asynchronous=False)
            break
    c.close()
    del p, admin
