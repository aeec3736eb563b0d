"""The docker runtime's tests run against a real container engine: this session fixture
provisions it (targets/docker/engine.sh: podman + runc serving the Docker API on a machine
without Docker; nothing on one that has it) and builds the local images (cached by content
hash: seconds when nothing changed), once per session, for every test under tests/docker/.
One set of targets is shared by the tests that leave it as they found it.

netavark (podman's network backend) leaves its own iptables chains (NETAVARK_*) behind, empty,
once the last container is gone; they carry no run id and are not ours to remove."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS


@pytest.fixture(scope="session", autouse=True)
def docker_engine():
    """The engine answers and the images the default plan names are present. Fails (never
    skips) when it cannot be provisioned: the message says why."""
    from onceproof.targets.docker import engine, images

    engine.provision(log=lambda m: None)
    os.environ.setdefault("DOCKER_HOST", engine.docker_host())
    images.build_local_images(log=lambda m: None)
    images.build_pipeline_image(log=lambda m: None)
    yield engine.docker_host()


@pytest.fixture(scope="module")
def docker_targets(docker_engine):
    """One Kafka node + Redis + PostgreSQL + Toxiproxy as containers, shared by a module's
    tests (removed after it, so no container of ours outlives tests/docker/); tests heal what
    they break and use their own keys."""
    from onceproof.targets.deployment import Deployment, TargetsSpec
    from onceproof.targets.docker.runtime import DockerRuntime

    runtime = DockerRuntime(log_dir=ARTIFACTS / "docker-shared-logs")
    d = Deployment.create(runtime, TargetsSpec(kafka_nodes=1, redis="aof-always", postgres=True))
    try:
        d.start()
        yield d
    finally:
        d.stop()


def path_without_java(tmp_path: Path) -> str:
    """A PATH with every command of the current one except java and its tools (links in one
    folder, so /usr/bin's other commands stay reachable)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            src = os.path.join(d, name)
            if (name.startswith(("java", "jshell", "keytool", "jar", "mvn")) or (bin_dir / name).exists()
                    or not os.access(src, os.X_OK) or os.path.isdir(src)):
                continue
            (bin_dir / name).symlink_to(src)
    return str(bin_dir)
