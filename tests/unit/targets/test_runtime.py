"""Runtimes: one protocol that every runtime implements, found by name; no server starts here."""
from __future__ import annotations

import subprocess
import sys

import pytest

from onceproof.targets.local import LocalRuntime
from onceproof.targets.netns import NetnsRuntime
from onceproof.targets.runtime import KINDS, Runtime, make_runtime

from ..test_code_quality import ROOT, installed_tree

MEMBERS = ("name", "run_id", "log_dir", "clock_shim", "client_proxies", "host_for", "free_port", "node_dir",
           "register", "unregister", "spawning", "entered", "close")


def test_both_runtimes_satisfy_the_runtime_protocol_for_mypy(tmp_path):
    tree = installed_tree(tmp_path)
    program = ("from onceproof.targets.runtime import Runtime\n"
               "from onceproof.targets.local import LocalRuntime\n"
               "from onceproof.targets.netns import NetnsRuntime\n"
               "def local(r: LocalRuntime) -> Runtime:\n    return r\n"
               "def netns(r: NetnsRuntime) -> Runtime:\n    return r\n")
    res = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(ROOT / ".mypy_cache"), "--follow-imports", "silent", "-c", program],
                         cwd=tree, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_the_protocol_names_what_nodes_faults_and_the_engine_ask_of_a_runtime():
    declared = {m for m in dir(Runtime) if not m.startswith("_")}
    assert declared == set(MEMBERS)


def test_a_local_runtime_is_a_runtime_and_places_processes_right_here(tmp_path):
    with LocalRuntime(log_dir=tmp_path / "logs") as rt:
        assert isinstance(rt, Runtime)
        assert rt.name == "local" and rt.client_proxies
        with rt.spawning("redis"), rt.entered("load"):  # nothing to enter on loopback
            assert rt.host_for("redis") == "127.0.0.1"
        assert rt.free_port() != rt.free_port()
        assert rt.node_dir("redis").is_dir()
    assert rt.closed and not rt.scratch.exists()


def test_the_netns_runtime_declares_itself_a_runtime_without_proxies():
    for member in MEMBERS:  # instance attributes come from LocalRuntime.__init__, which it runs
        assert hasattr(NetnsRuntime, member) or member in ("run_id", "log_dir", "clock_shim"), member
    assert issubclass(NetnsRuntime, LocalRuntime)
    assert NetnsRuntime.name == "netns" and NetnsRuntime.client_proxies is False


def test_make_runtime_gives_the_runtime_named_in_a_plan(tmp_path):
    rt = make_runtime("local", "unit-make-runtime", tmp_path / "logs")
    try:
        assert isinstance(rt, LocalRuntime) and rt.run_id == "unit-make-runtime"
        assert rt.log_dir == tmp_path / "logs"
    finally:
        rt.close()
    assert KINDS == ("local", "netns", "docker")


def test_make_runtime_refuses_an_unknown_kind_and_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown runtime 'kubernetes': expected one of local, netns, docker"):
        make_runtime("kubernetes")


def test_servers_listen_below_the_kernels_ephemeral_range_never_on_a_used_port(tmp_path, monkeypatch):
    """A port the kernel hands out for port 0 is ephemeral: any outgoing connection may take it
    before the server binds it (CI: a Kafka node failed with `Address already in use`). Ports
    come from below /proc's ip_local_port_range, never one already bound, never twice; with no
    room below that range, the kernel's port 0 again."""
    import socket

    from onceproof.targets import local

    monkeypatch.setenv("ONCEPROOF_SCRATCH", str(tmp_path / "scratch"))
    low, high = local.listen_ports()
    first = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    assert (low, high) == ((20000, min(32767, first - 1)) if first > 21000 else (0, 0))
    with LocalRuntime() as rt, socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        monkeypatch.setattr(local, "listen_ports", lambda: (taken.getsockname()[1], taken.getsockname()[1] + 1))
        ports = [rt.free_port()]
        assert ports == [taken.getsockname()[1] + 1]  # the bound one is skipped
        monkeypatch.setattr(local, "listen_ports", lambda: (0, 0))
        more = {rt.free_port() for _ in range(50)}
        assert len(more) == 50 and ports[0] not in more and all(p >= first for p in more)
