"""Servers shared by the integration tests that ask for them (session-scoped: started once, by
the first test that needs them; stopped at the end of the session):

- `spark`: one SparkSession (one JVM; its start costs tens of seconds on 2 cores) for
  tests/integration/test_spark_check.py and test_spark_s3.py;
- `s3`: a real S3-compatible server, SeaweedFS (`weed server -s3`, Apache-2.0), on free ports
  of 127.0.0.1 in a temporary folder, with one access key; the `weed` binary is built from
  source once into $ONCEPROOF_HOME/bin by this fixture (`provision.install_seaweedfs`: the
  test path provisions it, not `onceproof setup`). Its first build takes 10-15 minutes on 2
  cores, so when the session will need it and it is not built, the build starts in the
  background at nice 19 as soon as the tests are collected (`pytest_collection_finish`): it
  uses the CPU the other tests leave idle while they wait on their servers, and the fixture
  waits for it. The server dies with this process
  (PR_SET_PDEATHSIG); its folder and the gRPC sockets it names by port in /tmp are removed
  after the session.
"""
from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ARTIFACTS


_PREBUILD: list[subprocess.Popen] = []  # the background build of `weed`, if one was started


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start building `weed` in the background (nice 19, its own process group, its output in
    the artifacts) when a collected test uses the `s3` fixture and the binary is not built."""
    from onceproof.targets import paths

    if paths.seaweedfs_binary().exists() or shutil.which("go") is None:
        return
    if not any("s3" in getattr(item, "fixturenames", ()) for item in session.items):
        return
    log = ARTIFACTS / "seaweedfs-build.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    code = "from onceproof.targets.provision import install_seaweedfs; install_seaweedfs()"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["nice", "-n", "19", sys.executable, "-c", code], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_die_with_us)
    _PREBUILD.append(proc)
    # reaped as soon as it ends: a zombie child of the session broke tests that list its children
    threading.Thread(target=proc.wait, name="weed-build-reaper", daemon=True).start()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A background build still running when the session ends (the s3 tests deselected or
    interrupted) is stopped: nothing of the session outlives it."""
    for proc in _PREBUILD:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from onceproof.checkers import spark as spark_engine

    session = spark_engine.session("local[2]")
    yield session
    spark_engine.shutdown(session)


@dataclass
class S3Server:
    """A running SeaweedFS S3 endpoint: its URL, its key pair and the region to sign with."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and the AWS CLI) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": self.region,
                "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports nobody listens on now (all held open until each is chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _die_with_us() -> None:
    """In the child: SIGKILL when the process that started it dies (Linux prctl PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """SeaweedFS's S3 gateway (with its master, volume and filer servers, one process), ready
    (a bucket can be made). Fails (never skips) when it cannot be built or started."""
    from onceproof.targets import provision

    for proc in _PREBUILD:  # the background build: done, or failed (then the build below says why)
        proc.wait()
    weed = provision.install_seaweedfs(log=lambda m: print(m, flush=True))
    folder = Path(tempfile.mkdtemp(prefix="onceproof-seaweedfs-", dir=os.environ.get("ONCEPROOF_SCRATCH")
                                   if os.environ.get("ONCEPROOF_SCRATCH") and os.path.isdir(
                                       os.environ["ONCEPROOF_SCRATCH"]) else None))
    server = S3Server("", "onceproof-test", "onceproof-test-secret")
    (folder / "s3.json").write_text(json.dumps({"identities": [{
        "name": "onceproof", "credentials": [{"accessKey": server.access_key, "secretKey": server.secret_key}],
        "actions": ["Admin", "Read", "List", "Write", "Tagging"]}]}))
    (folder / "data").mkdir()
    master, master_g, volume, volume_g, filer, filer_g, s3_port, s3_g = _free_ports(8)
    server.endpoint = f"http://127.0.0.1:{s3_port}"
    log = ARTIFACTS / "seaweedfs.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
           f"-master.port={master}", f"-master.port.grpc={master_g}", "-master.telemetry=false",
           "-master.volumeSizeLimitMB=64", "-volume.max=4", "-volume.preStopSeconds=0",
           f"-volume.port={volume}", f"-volume.port.grpc={volume_g}",
           "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_g}",
           f"-filer.localSocket={folder / 'filer.sock'}",
           "-s3", f"-s3.port={s3_port}", f"-s3.port.grpc={s3_g}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.config={folder / 's3.json'}", f"-s3.localSocket={folder / 's3.sock'}"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=folder, start_new_session=True, preexec_fn=_die_with_us)
    try:
        client = server.client()
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"weed server exited ({proc.returncode}) before it served S3: see {log}:\n"
                                   + log.read_text(errors="replace")[-3000:])
            try:
                client.create_bucket(Bucket="onceproof-ready")
                break
            except Exception as e:  # noqa: BLE001 - not ready yet (connection refused, 503 while the volumes start)
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed server did not serve S3 in 180 s ({e}): see {log}") from None
                time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(folder, ignore_errors=True)
        for port in (master_g, volume_g, filer_g, s3_g):  # weed's gRPC sockets: fixed names in /tmp, by our ports
            for kind in ("master", "volume", "filer", "s3"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(f"/tmp/seaweedfs-{kind}-grpc-{port}.sock")
