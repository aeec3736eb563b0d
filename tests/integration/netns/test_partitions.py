"""Every partition shape, checked by its connectivity matrix: for every ordered pair of hosts a
real TCP connect succeeds or fails exactly as the shape says, and after heal all succeed."""
from __future__ import annotations

import random
import socket
import subprocess
import threading
import time

import pytest

from onceproof.faults.netns import Partitioner
from onceproof.targets.netns import HARNESS
from tests.integration.netns.conftest import needs_root, reachability, unreachable

pytestmark = [pytest.mark.integration, needs_root]

SERVERS = ["n1", "n2", "n3", "n4", "n5"]
EVERYONE = [*SERVERS, "load", "pipeline-0", HARNESS]


def cut_between(groups: list[list[str]]) -> set[tuple[str, str]]:
    """The ordered pairs a partition into these groups must cut."""
    return {(a, b) for ga in groups for gb in groups if ga is not gb for a in ga for b in gb}


def assert_healed(rt, names=EVERYONE) -> None:
    assert unreachable(reachability(rt, names)) == set()


def test_every_host_reaches_every_other_before_any_cut(hosts_rt):
    assert_healed(hosts_rt)


def test_isolating_one_node_cuts_it_from_every_other_host_and_heal_restores_all(hosts_rt):
    p = Partitioner(hosts_rt)
    p.isolate(["n2"])
    others = [h for h in EVERYONE if h != "n2"]
    assert unreachable(reachability(hosts_rt, EVERYONE)) == cut_between([["n2"], others])
    p.heal()
    assert_healed(hosts_rt)


def test_isolating_a_set_keeps_the_set_talking_among_itself(hosts_rt):
    p = Partitioner(hosts_rt)
    p.isolate(["n1", "n2"])
    rest = [h for h in EVERYONE if h not in ("n1", "n2")]
    assert unreachable(reachability(hosts_rt, EVERYONE)) == cut_between([["n1", "n2"], rest])
    p.heal()
    assert_healed(hosts_rt)


def test_isolation_from_some_hosts_only_leaves_the_others_connected(hosts_rt):
    p = Partitioner(hosts_rt)
    p.isolate(["n5"], from_=["n1", "n2", "n3", "n4"])  # the clients and the harness still reach n5
    assert unreachable(reachability(hosts_rt, EVERYONE)) == cut_between([["n5"], ["n1", "n2", "n3", "n4"]])
    p.heal()
    assert_healed(hosts_rt)


def test_halves_cut_the_smaller_half_from_the_larger_and_leave_clients_alone(hosts_rt):
    p = Partitioner(hosts_rt)
    cut = p.halves(SERVERS)
    assert cut.components == [["n1", "n2"], ["n3", "n4", "n5"]]
    assert unreachable(reachability(hosts_rt, EVERYONE)) == cut_between(cut.components)
    p.heal()
    assert_healed(hosts_rt)


def test_random_halves_are_seeded_and_cut_as_reported(hosts_rt):
    cuts = []
    for _ in range(2):
        p = Partitioner(hosts_rt, rng=random.Random(7))
        cut = p.random_halves(SERVERS)
        cuts.append(cut.components)
        assert sorted(map(len, cut.components)) == [2, 3]
        assert unreachable(reachability(hosts_rt, SERVERS)) == cut_between(cut.components)
        p.heal()
    assert cuts[0] == cuts[1]
    assert_healed(hosts_rt, SERVERS)


def test_bridge_node_reaches_both_halves_which_cannot_reach_each_other(hosts_rt):
    p = Partitioner(hosts_rt)
    cut = p.bridge(SERVERS)
    matrix = reachability(hosts_rt, SERVERS)
    assert unreachable(matrix) == cut_between([["n1", "n2"], ["n4", "n5"]])
    assert all(matrix[("n3", x)] and matrix[(x, "n3")] for x in SERVERS if x != "n3")
    assert cut.components == [["n1", "n2"], ["n3"], ["n4", "n5"]]
    p.heal()
    assert_healed(hosts_rt, SERVERS)


@pytest.mark.parametrize("size", [3, 4, 5])
def test_majorities_ring_gives_every_node_a_different_majority(hosts_rt, size):
    nodes = SERVERS[:size]
    p = Partitioner(hosts_rt, rng=random.Random(size))
    cut = p.majorities_ring(nodes)
    matrix = reachability(hosts_rt, nodes)
    seen = {a: frozenset([a] + [b for b in nodes if b != a and matrix[(a, b)]]) for a in nodes}
    assert all(len(v) > size // 2 for v in seen.values()), seen  # each sees a majority
    assert len(set(seen.values())) == size, seen  # no two the same
    assert all(matrix[(a, b)] == matrix[(b, a)] for a in nodes for b in nodes if a != b)
    assert {a: sorted(v) for a, v in seen.items()} == cut.views
    p.heal()
    assert_healed(hosts_rt, nodes)


def test_one_way_lets_b_reach_a_while_a_cannot_reach_b(hosts_rt):
    p = Partitioner(hosts_rt)
    p.one_way("n1", "n2")
    p.one_way("load", HARNESS)  # the harness's side is enforced from its peer
    assert unreachable(reachability(hosts_rt, EVERYONE)) == {("n1", "n2"), ("load", HARNESS)}
    p.heal()
    assert_healed(hosts_rt)


def test_one_way_also_stops_connections_opened_before_the_cut(hosts_rt):
    rt = hosts_rt
    with rt.entered("n2"):
        srv = socket.socket()
    srv.bind((rt.address_of("n2"), 7701))
    srv.listen(4)
    with rt.entered("n1"):
        c = socket.create_connection((rt.address_of("n2"), 7701), timeout=1)
    conn, _ = srv.accept()
    try:
        p = Partitioner(rt)
        p.one_way("n1", "n2")
        c.sendall(b"lost")  # n1 -> n2 on n1's own connection: dropped
        conn.settimeout(0.7)
        with pytest.raises(socket.timeout):
            conn.recv(10)
        p.heal()
        assert conn.recv(10) == b"lost"  # retransmitted once healed
    finally:
        for s in (c, conn, srv):
            s.close()


def test_heal_removes_only_its_own_rules(hosts_rt):
    rt = hosts_rt
    foreign = ["INPUT", "-s", rt.address_of("n4"), "-p", "udp", "--dport", "9", "-j", "DROP"]
    rt.exec("n3", "iptables", "-A", *foreign)
    try:
        before = rt.exec("n3", "iptables", "-S").stdout
        a, b = Partitioner(rt), Partitioner(rt)
        a.isolate(["n3"])
        b.isolate(["n3"])  # the same drop twice, by two cuts
        a.heal()
        assert unreachable(reachability(rt, ["n3", "n4"])) == {("n3", "n4"), ("n4", "n3")}  # b still holds
        b.heal()
        assert rt.exec("n3", "iptables", "-S").stdout == before
    finally:
        rt.exec("n3", "iptables", "-D", *foreign)
    assert_healed(rt, ["n3", "n4"])


def test_total_packet_loss_cuts_and_partial_loss_lets_most_connections_through(hosts_rt):
    p = Partitioner(hosts_rt)
    p.packet_loss(["n1"], 1.0)
    assert unreachable(reachability(hosts_rt, ["n1", "n2"])) == {("n1", "n2"), ("n2", "n1")}
    p.heal()
    rt = hosts_rt
    with rt.entered("n1"):
        rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with rt.entered("n2"):
        tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((rt.address_of("n1"), 7704))
    rx.settimeout(0.3)
    p.packet_loss(["n1"], 0.3)
    try:
        for i in range(400):
            tx.sendto(b"%d" % i, (rt.address_of("n1"), 7704))
        got = 0
        while True:
            try:
                rx.recv(16)
                got += 1
            except socket.timeout:
                break
    finally:
        p.heal()
        rx.close()
        tx.close()
    assert 200 < got < 340, got  # ~280 of 400 arrive
    assert_healed(hosts_rt, ["n1", "n2"])


def test_bandwidth_cap_slows_what_a_node_sends(hosts_rt):
    rt = hosts_rt

    def seconds_to_send(nbytes: int) -> float:
        with rt.entered("n5"):
            srv = socket.socket()
        srv.bind((rt.address_of("n5"), 7702))
        srv.listen(1)
        with rt.entered("n4"):
            c = socket.create_connection((rt.address_of("n5"), 7702), timeout=5)
        conn, _ = srv.accept()
        conn.settimeout(10)
        sender = threading.Thread(target=c.sendall, args=(b"x" * nbytes,), daemon=True)
        try:
            t0 = time.monotonic()
            sender.start()
            got = 0
            while got < nbytes:
                data = conn.recv(65536)
                assert data, "connection closed early"
                got += len(data)
            return time.monotonic() - t0
        finally:
            for s in (c, conn, srv):
                s.close()

    assert seconds_to_send(256_000) < 0.5
    p = Partitioner(rt)
    p.bandwidth(["n4"], rate_kbit=1024)  # 128 KB/s
    try:
        took = seconds_to_send(256_000)
    finally:
        p.heal()
    assert 1.2 < took < 5, took  # 256 KB at 128 KB/s: about 2 s
    assert "tbf" not in rt.exec("n4", "tc", "qdisc", "show").stdout


def test_dropped_replies_leave_the_client_in_doubt_while_the_server_applied_it(hosts_rt):
    rt = hosts_rt
    with rt.entered("n1"):
        srv = socket.socket()
    srv.bind((rt.address_of("n1"), 7703))
    srv.listen(4)
    p = Partitioner(rt)
    p.drop_replies("load", "n1", 7703)
    try:
        with rt.entered("load"):
            c = socket.create_connection((rt.address_of("n1"), 7703), timeout=1)  # handshake passes
        conn, _ = srv.accept()
        c.sendall(b"write k=1")
        conn.settimeout(2)
        assert conn.recv(100) == b"write k=1"  # the server got (and would apply) it
        conn.sendall(b"ok")
        c.settimeout(0.7)
        with pytest.raises(socket.timeout):
            c.recv(10)  # the client never learns
    finally:
        p.heal()
    try:
        c.settimeout(3)
        assert c.recv(10) == b"ok"  # retransmitted after heal
    finally:
        for s in (c, conn, srv):
            s.close()


def test_nothing_is_sent_off_the_run_from_a_namespace(hosts_rt):
    # no default route inside: any other address is unreachable, not routed off the machine
    res = hosts_rt.exec("n1", "ip", "route", "get", "192.0.2.1", check=False)
    assert res.returncode != 0 and "unreachable" in res.stderr.lower()
    assert subprocess.run(["ip", "route", "get", hosts_rt.address_of("n1")], capture_output=True,
                          text=True).stdout.split()[2] == hosts_rt.bridge
