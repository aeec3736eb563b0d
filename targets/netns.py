"""The `netns` runtime: every node is a host with its own address in its own network
namespace, all joined by one bridge in the root namespace, so partitions can be iptables
rules inside the namespaces and cut node-to-node traffic (see faults/netns.py).

Layout of one run (prefix `op` + 4 hex chars of the run id, so interface names stay short):

    root namespace:  bridge <prefix>br  10.213.X.1/24   = the host "harness"
                     veth   <prefix>v<i>  (enslaved to the bridge)
    namespace <prefix>-<node>:  lo up, veth <prefix>p<i>  10.213.X.<i+1>/24, NO default route

Safety, because this machine's root namespace has a default route off the machine:
- the /24 is chosen so no interface or route of this machine already covers it (another
  run's bridge included), under a lock, so two runs never share it;
- before any traffic, `ip route get` must show every address of the run going via the run's
  own bridge (and, from inside each namespace, via its own veth); otherwise the run refuses
  to start and removes what it made;
- the namespaces have no default route, so a node can reach nothing but the run's /24;
- `check_address` refuses any address that is not one of the run's own hosts.

Everything created is listed in the run ledger BEFORE it is created, so `onceproof
cleanup` removes it after a SIGKILL; close() (also on SIGINT, SIGTERM and at exit) removes it
otherwise. Root-namespace iptables rules are only precise ACCEPTs for the run's own /24 on
its own bridge (bridged frames traverse FORWARD when br_netfilter is loaded)."""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import fcntl
import hashlib
import ipaddress
import json
import os
import signal
import subprocess
import threading
import time
import weakref
from pathlib import Path
from typing import Iterator

from onceproof.errors import OnceproofError
from onceproof.targets import paths
from onceproof.targets.local import LocalRuntime
from onceproof.targets.ledger import RunEntry, remove_run

SUPERNET = "10.213"  # 10.213.X.0/24, X per run
HARNESS = "harness"  # the root namespace's end of the bridge
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(OnceproofError, RuntimeError):
    """The netns runtime cannot run here, or refused to (the message says why and what to do)."""


def require_root() -> None:
    """The one check that the netns runtime can run here (it needs root). Raises NetnsError,
    saying what to do, when this process is not root."""
    if os.geteuid() != 0:
        raise NetnsError("runtime: netns needs root (it creates network namespaces, veth pairs, a bridge "
                         "and iptables rules); run as root, or use `runtime: local`")


def sh(*argv: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, input=input,
                         start_new_session=True)  # a Ctrl-C to our group must not cut a teardown step
    if check and res.returncode != 0:
        raise NetnsError(f"`{' '.join(argv)}` failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return res


def setns(path: str | int) -> None:
    """Move the CALLING THREAD into a network namespace (Python 3.11 has no os.setns)."""
    fd = os.open(path, os.O_RDONLY) if isinstance(path, str) else path
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        if isinstance(path, str):
            os.close(fd)


@contextlib.contextmanager
def inside(netns_path: str) -> Iterator[None]:
    """Run the block with this thread in the namespace. Sockets made here stay in it, and so do
    processes spawned here and threads started here (a Kafka client's threads included)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        setns(netns_path)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)


def _used_subnets() -> set[int]:
    """Third octets of 10.213.X.0/24 that some interface or route of this machine touches."""
    used: set[int] = set()
    out = sh("ip", "-j", "addr", "show").stdout
    for link in json.loads(out or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
                used |= _octets_in(net)
    for line in sh("iptables", "-S", "OUTPUT").stdout.splitlines():  # guards of closed runs of live harnesses
        if "guard" in line and f"-d {SUPERNET}." in line:
            used |= _octets_in(ipaddress.ip_network(line.split("-d ")[1].split()[0], strict=False))
    for r in json.loads(sh("ip", "-j", "route", "show", "table", "all").stdout or "[]"):
        dst = r.get("dst", "default")
        if dst == "default" or ":" in dst:
            continue
        used |= _octets_in(ipaddress.ip_network(dst if "/" in dst else dst + "/32", strict=False))
    return used


def _octets_in(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> set[int]:
    """Which 10.213.X.0/24 a network overlaps."""
    ours = ipaddress.ip_network(f"{SUPERNET}.0.0/16")
    if net.version != 4 or not net.overlaps(ours):
        return set()
    if net.prefixlen <= 16:
        return set(range(256))
    first = int(net.network_address.packed[2])
    last = int(net.broadcast_address.packed[2])
    return set(range(first, last + 1))


class Host:
    """One address of the run: a namespace with a veth (or the harness, on the bridge)."""

    def __init__(self, name: str, index: int, address: str, netns: str | None, veth: str | None,
                 peer: str | None) -> None:
        self.name = name
        self.index = index
        self.address = address
        self.netns = netns  # None for the harness (root namespace)
        self.veth = veth  # root side, on the bridge
        self.peer = peer  # namespace side, carries the address

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}" if self.netns else f"/proc/{os.getpid()}/ns/net"

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.address} ns={self.netns}>"


_live: "weakref.WeakSet[NetnsRuntime]" = weakref.WeakSet()
_handlers_installed = False


_guards: list[RunEntry] = []
made: list[tuple[str, str]] = []  # (run id, name prefix) of every run of this process, for leak checks


def _on_exit() -> None:
    for rt in list(_live):
        rt.close()
    for guard in list(_guards):
        remove_run(guard)
        _guards.remove(guard)


def _install_signal_handlers() -> None:
    """SIGTERM (and SIGINT) become exceptions in the main thread, so `finally` blocks and
    context managers tear the run down; whatever is still open is closed at exit."""
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(_on_exit)
    if threading.current_thread() is not threading.main_thread():
        return

    def raise_exit(signum: int, frame: object) -> None:
        _on_exit()
        raise SystemExit(128 + signum)

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, raise_exit)
    # SIGINT already raises KeyboardInterrupt; close() also runs at exit


class NetnsRuntime(LocalRuntime):
    """Like LocalRuntime (scratch space, logs, ledger, clock shim), but every node name is a
    host in its own namespace. Call host_for(name) to create a host (nodes do it themselves);
    their processes are spawned inside it (see spawning())."""

    name = "netns"
    client_proxies = False  # clients reach each host at its own address; cuts are iptables rules

    def __init__(self, run_id: str | None = None, log_dir: Path | None = None) -> None:
        require_root()
        self.hosts: dict[str, Host] = {}
        self._lock = threading.RLock()
        self.prefix = ""
        _install_signal_handlers()
        super().__init__(run_id, log_dir)
        self._next_port = 9000
        self.closed = False
        digest = hashlib.sha1(self.run_id.encode()).hexdigest()
        try:
            with self._subnet_lock():
                self.prefix, self.octet = self._choose(digest)
                made.append((self.run_id, self.prefix))
                self.subnet = f"{SUPERNET}.{self.octet}.0/24"
                self.bridge = f"{self.prefix}br"
                self._make_bridge()
        except BaseException:
            self.close()
            raise
        _live.add(self)

    # --- the bridge -------------------------------------------------------------------
    @contextlib.contextmanager
    def _subnet_lock(self) -> Iterator[None]:
        lock = paths.ledger_dir() / ".netns.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            yield

    def _choose(self, digest: str) -> tuple[str, int]:
        used = _used_subnets()
        links = {json_link["ifname"] for json_link in json.loads(sh("ip", "-j", "link", "show").stdout or "[]")}
        start = int(digest[:4], 16)
        for i in range(254):
            octet = 1 + (start + i) % 254
            if octet in used:
                continue
            for j in range(64):
                prefix = "op" + hashlib.sha1(f"{digest}{j}".encode()).hexdigest()[:4]
                if f"{prefix}br" not in links and not Path(f"/run/netns/{prefix}-{HARNESS}").exists():
                    return prefix, octet
        raise NetnsError(f"no free /24 in {SUPERNET}.0.0/16 on this machine: run `onceproof cleanup`")

    def _make_bridge(self) -> None:
        address = f"{SUPERNET}.{self.octet}.1"
        br = self.bridge
        self.entry.links.append(br)
        rules = [
            ["FORWARD", "-i", br, "-o", br, "-s", self.subnet, "-d", self.subnet, "-m", "comment",
             "--comment", f"onceproof {self.run_id}", "-j", "ACCEPT"],
            ["INPUT", "-i", br, "-s", self.subnet, "-d", address, "-m", "comment",
             "--comment", f"onceproof {self.run_id}", "-j", "ACCEPT"],
            ["OUTPUT", "-o", br, "-s", address, "-d", self.subnet, "-m", "comment",
             "--comment", f"onceproof {self.run_id}", "-j", "ACCEPT"],
        ]
        self.entry.iptables.extend(rules)
        # The guard: nothing of this process may reach the /24 except through the bridge. It
        # outlives close() (a client the caller forgot would otherwise follow the default route
        # off the machine once the bridge is gone) and goes when this process exits; after a
        # SIGKILL, `onceproof cleanup` removes it (its own ledger entry, owned by this process).
        self.guard = RunEntry(run_id=self.run_id, scratch=str(self.scratch / "guard"), suffix=".guard")
        self.guard.iptables.append(["OUTPUT", "-d", self.subnet, "!", "-o", br, "-m", "comment", "--comment",
                                    f"onceproof {self.run_id} guard", "-j", "REJECT"])
        self.guard.save()
        _guards.append(self.guard)
        self.entry.save()  # registered before created: a SIGKILL from here on is cleaned up
        sh("ip", "link", "add", br, "type", "bridge")
        self._no_ipv6(br)
        sh("ip", "addr", "add", f"{address}/24", "dev", br)
        sh("ip", "link", "set", br, "up")
        for rule in [*self.guard.iptables, *rules]:
            sh("iptables", "-I", rule[0], "1", *rule[1:])
        self.hosts[HARNESS] = Host(HARNESS, 1, address, None, None, None)
        self._check_route(self.hosts[HARNESS])

    @staticmethod
    def _no_ipv6(link: str, netns: str | None = None) -> None:
        # no IPv6 link-local chatter: the run's hosts speak IPv4 on their /24 only
        pre = ["ip", "netns", "exec", netns] if netns else []
        sh(*pre, "sysctl", "-qw", f"net.ipv6.conf.{link}.disable_ipv6=1", check=False)

    # --- hosts --------------------------------------------------------------------------
    def host_for(self, node_name: str) -> str:
        """The address of a node's host, creating its namespace on first use."""
        return self.add_host(node_name).address

    def add_host(self, name: str) -> Host:
        with self._lock:
            if self.closed:
                raise NetnsError(f"runtime {self.run_id} is closed")
            if name in self.hosts:
                return self.hosts[name]
            index = len(self.hosts)  # the harness holds .1, hosts .2 onwards
            if index > 253:  # .2 to .254
                raise NetnsError("a netns run holds at most 253 hosts")
            host = Host(name, index, f"{SUPERNET}.{self.octet}.{index + 1}", f"{self.prefix}-{name}",
                        f"{self.prefix}v{index}", f"{self.prefix}p{index}")
            assert host.netns and host.veth and host.peer
            self.entry.netns.append(host.netns)
            self.entry.links.append(host.veth)
            self.entry.save()  # registered before created
            try:
                sh("ip", "netns", "add", host.netns)
                sh("ip", "link", "add", host.veth, "type", "veth", "peer", "name", host.peer)
                self._no_ipv6(host.veth)
                sh("ip", "link", "set", host.peer, "netns", host.netns)
                sh("ip", "link", "set", host.veth, "master", self.bridge, "up")
                batch = (f"link set lo up\naddr add {host.address}/24 dev {host.peer}\n"
                         f"link set {host.peer} up\n")
                sh("ip", "netns", "exec", host.netns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                   check=False)
                sh("ip", "-n", host.netns, "-batch", "-", input=batch)
                # connection tracking from the first packet on, so one-way cuts can tell who
                # opened a connection (a rule with no target only counts)
                sh("ip", "netns", "exec", host.netns, "iptables", "-A", "INPUT", "-m", "conntrack",
                   "--ctstate", "INVALID,NEW,ESTABLISHED,RELATED,UNTRACKED")
                self.hosts[name] = host
                self._check_route(host)
            except BaseException:
                self.hosts.pop(name, None)
                self._remove_host(host)
                raise
            return host

    def _check_route(self, host: Host) -> None:
        """Refuse to run unless the host's address is reached only through this run's bridge."""
        res = json.loads(sh("ip", "-j", "route", "get", host.address).stdout or "[{}]")[0]
        if host.name == HARNESS:
            ok = res.get("dev") in ("lo", self.bridge) and res.get("type", "local") == "local" \
                and self._bridge_has(host.address)
        else:
            ok = res.get("dev") == self.bridge and res.get("prefsrc") == self.hosts[HARNESS].address
        if not ok:
            raise NetnsError(f"refusing to run: `ip route get {host.address}` gives {res}, not via this run's "
                             f"bridge {self.bridge}; another route on this machine covers {self.subnet}")
        if host.netns:
            routes = json.loads(sh("ip", "-n", host.netns, "-j", "route", "show").stdout or "[]")
            if any(r.get("dst") == "default" for r in routes):
                raise NetnsError(f"refusing to run: namespace {host.netns} has a default route")
            back = json.loads(sh("ip", "-n", host.netns, "-j", "route", "get",
                                 self.hosts[HARNESS].address).stdout or "[{}]")[0]
            if back.get("dev") != host.peer:
                raise NetnsError(f"refusing to run: from {host.netns} the harness is reached via {back}")

    def _bridge_has(self, address: str) -> bool:
        info = json.loads(sh("ip", "-j", "addr", "show", "dev", self.bridge).stdout or "[]")
        return any(a.get("local") == address for link in info for a in link.get("addr_info", []))

    def host(self, name: str) -> Host:
        try:
            return self.hosts[name]
        except KeyError:
            raise KeyError(f"no host {name!r} in this run; hosts: {sorted(self.hosts)}") from None

    def address_of(self, name: str) -> str:
        return self.host(name).address

    def name_of(self, address: str) -> str:
        for h in self.hosts.values():
            if h.address == address:
                return h.name
        raise KeyError(address)

    def check_address(self, address: str) -> str:
        """The address, if it belongs to one of this run's own hosts; otherwise raise."""
        if not any(h.address == address for h in self.hosts.values()):
            raise NetnsError(f"refusing to send to {address}: not one of this run's hosts ({self.subnet})")
        return address

    def free_port(self) -> int:
        # every host has its own address, so ports never collide between hosts; one counter
        # keeps them unique in the run anyway (a node may listen on several ports)
        with self._lock:
            self._next_port += 1
            return self._next_port

    # --- running things inside a host ------------------------------------------------------
    @contextlib.contextmanager
    def spawning(self, name: str) -> Iterator[None]:
        """Processes started in this block start inside the node's namespace, and the pid the
        harness holds is the server's own (no wrapper process)."""
        host = self.add_host(name)
        if host.netns is None:  # the harness: where the runtime's caller already is
            yield
            return
        with inside(host.netns_path):
            yield

    def entered(self, name: str) -> contextlib.AbstractContextManager[None]:
        """This thread acts as host `name` (e.g. the load generator) for the block."""
        return self.spawning(name)

    def exec(self, name: str, *argv: str, check: bool = True,
             input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a tool (iptables, tc, ...) inside a host's namespace."""
        host = self.host(name)
        if host.netns is None:
            raise NetnsError("refusing to change the root namespace")
        return sh("ip", "netns", "exec", host.netns, *argv, check=check, input=input)

    # --- teardown -------------------------------------------------------------------------
    def _remove_host(self, host: Host) -> None:
        if host.netns and Path(f"/run/netns/{host.netns}").exists():
            pids = sh("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for p in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(p), signal.SIGKILL)
            for p in pids:
                with contextlib.suppress(ChildProcessError, ValueError):
                    os.waitpid(int(p), os.WNOHANG)
            sh("ip", "netns", "delete", host.netns, check=False)
        if host.veth:
            sh("ip", "link", "delete", host.veth, check=False)

    def close(self) -> None:
        """Kill whatever still runs in the namespaces, remove them, the veths, the bridge and
        the root-namespace rules, then the scratch space and the ledger entry."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            from onceproof.targets.ledger import kill_group

            for name, proc in list(self.entry.processes.items()):
                kill_group(proc["pid"], proc.get("start"))
            for host in list(self.hosts.values()):
                self._remove_host(host)
            for rule in self.entry.iptables:
                while sh("iptables", "-D", *rule, check=False).returncode == 0:
                    pass
            for link in self.entry.links:
                sh("ip", "link", "delete", link, check=False)
            for ns in self.entry.netns:  # any created but not yet recorded as a host
                if Path(f"/run/netns/{ns}").exists():
                    sh("ip", "netns", "delete", ns, check=False)
            self._wait_links_gone()
            self.entry.processes.clear()
            self.closed = False  # let LocalRuntime.close run
            super().close()
            _live.discard(self)

    def _wait_links_gone(self, timeout: float = 5.0) -> None:
        # a namespace's veth ends vanish asynchronously after `ip netns delete`
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            names = {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout or "[]")}
            if not self.prefix or not any(n.startswith(self.prefix) for n in names):
                return
            time.sleep(0.05)

    def leftovers(self) -> list[str]:
        """What of this run still exists on the machine (empty after close())."""
        out = []
        names = {link["ifname"] for link in json.loads(sh("ip", "-j", "link", "show").stdout or "[]")}
        out += [f"link {n}" for n in names if self.prefix and n.startswith(self.prefix)]
        out += [f"netns {n}" for n in sh("ip", "netns", "list").stdout.split() if n.startswith(f"{self.prefix}-")]
        out += [f"iptables {r}" for r in sh("iptables", "-S").stdout.splitlines()
                if self.run_id in r and "guard" not in r]
        return out

    def __enter__(self) -> "NetnsRuntime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
