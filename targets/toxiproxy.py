"""Toxiproxy: one server per run, one proxy in front of every client port.

We talk to Toxiproxy's HTTP API directly instead of through toxiproxy-python: that package's
last release is from 2019 and it keeps one global API host/port for the whole process,
which does not fit one server per run (tests run several runs in one process).

Who may use the API. Toxiproxy's API has no authentication, and anyone who can reach it can
change the run's faults or add a proxy that opens a server of the run to the network. So:
- When we are root, the API port is closed to every other local account by an iptables rule
  in the OUTPUT chain (`-m owner ! --uid-owner <our uid> -j REJECT`: locally made packets carry
  the uid of the socket's owner; replies of the server come from the port, not to it, and
  are not matched). The rule is added before the server starts, carries the comment
  `onceproof <run id> toxiproxy-api`, is listed in the run's ledger (so `onceproof cleanup`
  removes it after a SIGKILL) and is removed at teardown. Our own pipeline (same uid) can
  still reach the API: it is the owner's. Without iptables (or its owner match) the server
  still starts, with a line in its log saying the API is open.
- Not root: no firewall rule can be set, and the API is open to local users (toxiproxy
  listens on TCP only). What we do then, and always: our client refuses to make a proxy that
  listens anywhere but 127.0.0.1, and `Toxiproxy.check` (called when the proxies are made and
  at teardown) reports any proxy that is not ours or listens off loopback, and removes it."""
from __future__ import annotations

import ipaddress
import os
from typing import TYPE_CHECKING, Any

import requests

from onceproof.errors import OnceproofError
from onceproof.targets import iptables, paths
from onceproof.targets.process import Node, NodeError

if TYPE_CHECKING:
    from onceproof.targets.runtime import Runtime


class ToxiproxyError(OnceproofError, RuntimeError):
    """Toxiproxy's HTTP API refused a request or could not be reached."""


def on_loopback(listen: str) -> bool:
    """Whether `listen` (host:port) is an address on 127.0.0.0/8."""
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network("127.0.0.0/8")
    except ValueError:
        return False


class ToxiproxyNode(Node):
    kind = "toxiproxy"

    def __init__(self, runtime: "Runtime", name: str = "toxiproxy") -> None:
        super().__init__(runtime, name)
        self.api = Toxiproxy(f"http://{self.host}:{self.port}")
        self.guard: list[str] | None = None  # the iptables rule (without -I/-D) closing the API to others
        # the ports its proxies will listen on (Deployment.create fills it in before the start: a
        # runtime that publishes ports, docker, needs them when the server starts)
        self.proxy_ports: list[int] = []

    def prepare(self) -> None:
        if os.geteuid() != 0:
            return
        rule = ["OUTPUT", "-p", "tcp", "-d", self.host, "--dport", str(self.port), "-m", "owner", "!",
                "--uid-owner", str(os.geteuid()), "-m", "comment", "--comment",
                f"onceproof {self.runtime.run_id} toxiproxy-api", "-j", "REJECT", "--reject-with", "tcp-reset"]
        entry = getattr(self.runtime, "entry", None)  # the run's ledger: listed before it exists
        if entry is not None:
            entry.iptables.append(rule)
            entry.save()
        err = iptables.insert(rule)
        if err is None:
            self.guard = rule
            return
        if iptables.delete(rule) is None and entry is not None:  # a failed insert may have gone in
            entry.iptables.remove(rule)
            entry.save()
        with open(self.log_path, "a") as log:
            log.write(f"onceproof: WARNING: the Toxiproxy API is open to every local user: iptables refused "
                      f"the owner rule: {err}\n")

    def teardown(self) -> None:
        try:
            super().teardown()
        finally:
            if self.guard is not None:
                rule, self.guard = self.guard, None
                err = iptables.delete(rule)
                if err is not None:  # left in the ledger: `onceproof cleanup` tries again
                    raise NodeError(f"toxiproxy: iptables could not delete the API's owner rule "
                                    f"({' '.join(rule)}): {err}")
                entry = getattr(self.runtime, "entry", None)
                if entry is not None and rule in entry.iptables:
                    entry.iptables.remove(rule)
                    entry.save()

    def command(self) -> list[str]:
        binary = paths.toxiproxy_binary()
        if not binary.exists():
            raise NodeError(f"toxiproxy server not installed at {binary}: run `onceproof setup`")
        return [str(binary), "-host", self.host, "-port", str(self.port)]

    def extra_env(self) -> dict[str, str]:
        return {"LOG_LEVEL": "warn", "GOMAXPROCS": "2"}

    def env(self) -> dict[str, str]:
        env = super().env()
        env.pop("LD_PRELOAD", None)  # the proxy's clock is never skewed
        return env

    def ready(self) -> bool:
        return self.api.version() != ""


class Toxiproxy:
    """A thin client of one Toxiproxy server's HTTP API."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.http = requests.Session()

    def _call(self, method: str, path: str, json: Any = None) -> Any:
        try:
            r = self.http.request(method, self.url + path, json=json, timeout=self.timeout)
        except requests.RequestException as e:
            raise ToxiproxyError(f"toxiproxy {method} {path}: {e}") from e
        if r.status_code >= 400:
            raise ToxiproxyError(f"toxiproxy {method} {path}: HTTP {r.status_code} {r.text.strip()}")
        return r.json() if r.content and r.headers.get("content-type", "").startswith("application/json") else r.text

    def version(self) -> str:
        return str(self._call("GET", "/version")).strip()

    def proxies(self) -> dict[str, dict]:
        return self._call("GET", "/proxies")

    def create(self, name: str, listen: str, upstream: str) -> dict:
        """A proxy `name` listening at `listen` (host:port), which must be on loopback: a proxy
        on any other address would open the server behind it to the network. Raises
        ToxiproxyError."""
        if not on_loopback(listen):
            raise ToxiproxyError(f"toxiproxy proxy {name}: refusing to listen on {listen}: only 127.0.0.1 is allowed")
        return self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                               "enabled": True})

    def check(self, ours: set[str]) -> list[str]:
        """Remove every proxy that is not in `ours` or that listens off loopback (someone else
        made or changed it); returns one line per proxy removed. Raises ToxiproxyError."""
        removed = []
        for name, proxy in self.proxies().items():
            listen = str(proxy.get("listen", "")) if isinstance(proxy, dict) else ""
            if name in ours and on_loopback(listen):
                continue
            self._call("DELETE", f"/proxies/{name}")
            removed.append(f"toxiproxy proxy {name} listening on {listen or '?'} (not one of the run's)")
        return removed

    def set_enabled(self, name: str, enabled: bool) -> dict:
        return self._call("POST", f"/proxies/{name}", {"enabled": enabled})

    def add_toxic(self, proxy: str, name: str, type_: str, stream: str = "downstream",
                  toxicity: float = 1.0, **attributes: Any) -> dict:
        return self._call("POST", f"/proxies/{proxy}/toxics",
                          {"name": name, "type": type_, "stream": stream, "toxicity": toxicity,
                           "attributes": attributes})

    def remove_toxic(self, proxy: str, name: str) -> None:
        try:
            self._call("DELETE", f"/proxies/{proxy}/toxics/{name}")
        except ToxiproxyError as e:
            if "404" not in str(e):
                raise

    def toxics(self, proxy: str) -> list[dict]:
        return self._call("GET", f"/proxies/{proxy}/toxics")

    def reset(self) -> None:
        """Enable every proxy and remove every toxic."""
        self._call("POST", "/reset")
