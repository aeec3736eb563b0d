"""Fixtures of the netns tests: they need root (CI runs as root) and skip otherwise."""
from __future__ import annotations

import concurrent.futures
import os
import socket
import subprocess

import pytest

from onceproof.targets.netns import HARNESS, NetnsRuntime

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runtime netns needs root")


def connects(rt: NetnsRuntime, a: str, b: str, port: int, timeout: float = 0.6) -> bool:
    """Can host a open a TCP connection to host b's listener? (only to the run's own hosts)"""
    address = rt.check_address(rt.address_of(b))
    with rt.entered(a):
        s = socket.socket()
    try:
        s.settimeout(timeout)
        s.connect((address, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def reachability(rt: NetnsRuntime, names: list[str], port: int = 7700) -> dict[tuple[str, str], bool]:
    """For every ordered pair of distinct hosts: does a TCP connect succeed?"""
    listeners = []
    try:
        for b in names:
            with rt.entered(b):
                s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((rt.address_of(b), port))
            s.listen(256)
            listeners.append(s)
        pairs = [(a, b) for a in names for b in names if a != b]
        with concurrent.futures.ThreadPoolExecutor(len(pairs)) as pool:
            results = list(pool.map(lambda ab: connects(rt, ab[0], ab[1], port), pairs))
        return dict(zip(pairs, results))
    finally:
        for s in listeners:
            s.close()


def unreachable(matrix: dict[tuple[str, str], bool]) -> set[tuple[str, str]]:
    return {pair for pair, ok in matrix.items() if not ok}


def machine_state() -> tuple[str, str, str]:
    """Namespaces, links and root iptables rules, to compare before and after."""
    def run(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    links = "\n".join(sorted(line.split(":")[1].split("@")[0].strip()
                             for line in run("ip", "-o", "link").splitlines()))
    rules = "\n".join(r for r in run("iptables", "-S").splitlines() if "guard" not in r)  # guards go at exit
    return run("ip", "netns", "list"), links, rules


@pytest.fixture(scope="session", autouse=True)
def no_netns_leak_after_suite():
    """Nothing of any netns run of this session is left: namespace, link or root rule
    (the guards, which last until this process exits, aside)."""
    yield
    from onceproof.targets import netns

    names, links, rules = machine_state()
    left = []
    for run_id, prefix in netns.made:
        left += [n for n in names.splitlines() if n.startswith(prefix + "-")]
        left += [n for n in links.splitlines() if n.startswith(prefix)]
        left += [r for r in rules.splitlines() if run_id in r]
    assert left == [], f"the netns tests leaked: {left}"


@pytest.fixture(scope="module")
def hosts_rt():
    """One run with five server hosts n1..n5 and two clients (load, pipeline-0)."""
    rt = NetnsRuntime()
    try:
        for name in ("n1", "n2", "n3", "n4", "n5", "load", "pipeline-0"):
            rt.add_host(name)
        yield rt
    finally:
        rt.close()
    assert rt.leftovers() == []  # (only this run's things: other runs may come and go meanwhile)


__all__ = ["HARNESS", "connects", "machine_state", "needs_root", "reachability", "unreachable"]
