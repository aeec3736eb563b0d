"""engine.sh's start of the podman API service, on a socket of its own (the session's
service is left alone): provision returns as soon as the service answers, and the service it
leaves holds none of the caller's pipes (a CI runner's first provision once hung here for
600 s: a background subshell kept the captured stdout open)."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from onceproof.targets.docker import engine


def test_provision_starts_a_detached_service_and_returns(tmp_path, monkeypatch):
    sock = tmp_path / "run" / "podman.sock"
    monkeypatch.setenv("ONCEPROOF_PODMAN_SOCKET", str(sock))
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    if Path("/var/run/docker.sock").is_socket():
        # a Docker engine answers: engine.sh starts nothing, which is what it should do
        engine.provision(log=lambda m: None, timeout=60)
        assert not sock.exists()
        return
    t0 = time.monotonic()
    engine.provision(log=lambda m: None, timeout=60)
    took = time.monotonic() - t0
    pid = int((sock.parent / "service.pid").read_text())
    try:
        assert sock.is_socket()
        # the pid file names the service itself, started from / (a deleted cwd breaks conmon)
        assert "podman" in Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert took < 50, f"provision took {took:.1f} s"
        # a second call finds it answering and returns at once
        engine.provision(log=lambda m: None, timeout=30)
        out = subprocess.run(["curl", "-sf", "--unix-socket", str(sock), "http://d/_ping"],
                             capture_output=True, text=True, timeout=10)
        assert out.stdout == "OK"
    finally:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            if not Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()
