"""Toxiproxy: one server per run, one proxy in front of every client port.

We talk to Toxiproxy's HTTP API directly instead of through toxiproxy-python: that package's
last release is from 2019 and it keeps one global API host/port for the whole process,
which does not fit one server per run (tests run several runs in one process)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import requests

from onceproof.errors import OnceproofError
from onceproof.targets import paths
from onceproof.targets.process import Node, NodeError

if TYPE_CHECKING:
    from onceproof.targets.runtime import Runtime


class ToxiproxyError(OnceproofError, RuntimeError):
    """Toxiproxy's HTTP API refused a request or could not be reached."""


class ToxiproxyNode(Node):
    kind = "toxiproxy"

    def __init__(self, runtime: "Runtime", name: str = "toxiproxy") -> None:
        super().__init__(runtime, name)
        self.api = Toxiproxy(f"http://{self.host}:{self.port}")

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
        return self._call("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream,
                                               "enabled": True})

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
