"""Network faults on the local runtime, through the Toxiproxy proxy in front of each server.

Each client group (`pipeline`, `load`) reaches a server through its own proxy named
`<group>-<node>`, so `from: pipeline | load | both` picks whose traffic suffers. `direction`
is Toxiproxy's stream: `downstream` (server -> client), `upstream` (client -> server) or both.

- `partition`: the server unreachable. `style: blackhole` (default) = a `timeout` toxic with
  timeout 0 on both streams: data is swallowed and nobody answers, clients time out;
  `style: refuse` = the proxy disabled: open connections are closed, new ones refused.
- `latency` (`ms`, `jitter`), `bandwidth` (`rate` in KB/s), `reset` (reset_peer after
  `timeout`), `slicer` (`size`, `variation`, `delay`), `limit-data` (`bytes`).

Pipeline replicas are clients, not servers: a network fault on them is rejected."""
from __future__ import annotations

from typing import Any

from onceproof.faults import params as p
from onceproof.faults.base import Fault, FaultError, kind

FROM = ("pipeline", "load", "both")
DIRECTIONS = ("downstream", "upstream", "both")
COMMON = {"from", "direction"}


def _common(params: dict[str, Any], default_direction: str) -> dict[str, Any]:
    return {"from": p.choice(params.get("from", "pipeline"), "from", FROM),
            "direction": p.choice(params.get("direction", default_direction), "direction", DIRECTIONS)}


class ToxicFault(Fault):
    """A fault made of one Toxiproxy toxic per proxy and stream."""

    toxic_type = ""

    def attributes(self) -> dict[str, Any]:
        return {}

    def proxies(self) -> list[str]:
        groups = ["pipeline", "load"] if self.params["from"] == "both" else [self.params["from"]]
        out = []
        for name in self.targets:
            for g in groups:
                proxy = f"{g}-{name}"
                if proxy not in self.context.proxies:
                    raise FaultError(f"{self.kind}: no proxy {proxy!r} (clients of group {g!r} do not reach "
                                     f"{name} through a proxy in this run)", certain=True)
                out.append(proxy)
        return out

    def streams(self) -> list[str]:
        d = self.params["direction"]
        return ["upstream", "downstream"] if d == "both" else [d]

    def _apply(self) -> None:
        api = self.context.require_toxiproxy()
        proxies = self.proxies()
        self.details["proxies"] = proxies
        for proxy in proxies:
            for stream in self.streams():
                api.add_toxic(proxy, f"{self.id}-{stream}", self.toxic_type, stream=stream, **self.attributes())

    def _heal(self) -> None:
        api = self.context.require_toxiproxy()
        for proxy in self.details.get("proxies") or self.proxies():
            for stream in self.streams():
                api.remove_toxic(proxy, f"{self.id}-{stream}")


def _parse_partition(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, COMMON | {"style"}, "partition")
    out = _common(params, "both")
    out["style"] = p.choice(params.get("style", "blackhole"), "style", ("blackhole", "refuse"))
    return out


@kind("partition", _parse_partition, targets="server",
      summary="the node unreachable from a client group (style blackhole: timeouts; refuse: connections closed)")
class Partition(ToxicFault):
    toxic_type = "timeout"

    def attributes(self) -> dict[str, Any]:
        return {"timeout": 0}

    def _apply(self) -> None:
        if self.params["style"] == "blackhole":
            return super()._apply()
        api = self.context.require_toxiproxy()
        proxies = self.proxies()
        self.details["proxies"] = proxies
        for proxy in proxies:
            if self.context.claim(("proxy-disabled", proxy), self.id):
                api.set_enabled(proxy, False)

    def _heal(self) -> None:
        if self.params["style"] == "blackhole":
            return super()._heal()
        api = self.context.require_toxiproxy()
        for proxy in self.details.get("proxies") or self.proxies():
            if self.context.release(("proxy-disabled", proxy), self.id):
                api.set_enabled(proxy, True)


def _parse_latency(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, COMMON | {"ms", "jitter"}, "latency")
    out = _common(params, "downstream")
    if "ms" not in params:
        raise p.ParamError("ms", "latency needs `ms`, the added delay in milliseconds, such as ms: 200")
    out["ms"] = p.number(params["ms"], "ms", "200")
    out["jitter"] = p.number(params.get("jitter", 0), "jitter", "50")
    return out


@kind("latency", _parse_latency, targets="server", summary="add ms (+- jitter) to every chunk of data")
class Latency(ToxicFault):
    toxic_type = "latency"

    def attributes(self) -> dict[str, Any]:
        return {"latency": int(self.params["ms"]), "jitter": int(self.params["jitter"])}


def _parse_bandwidth(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, COMMON | {"rate"}, "bandwidth")
    out = _common(params, "downstream")
    if "rate" not in params:
        raise p.ParamError("rate", "bandwidth needs `rate` in KB/s, such as rate: 64")
    out["rate"] = p.number(params["rate"], "rate", "64", integer=True)
    return out


@kind("bandwidth", _parse_bandwidth, targets="server", summary="cap throughput at rate KB/s")
class Bandwidth(ToxicFault):
    toxic_type = "bandwidth"

    def attributes(self) -> dict[str, Any]:
        return {"rate": int(self.params["rate"])}


def _parse_reset(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, COMMON | {"timeout"}, "reset")
    out = _common(params, "both")
    out["timeout"] = p.duration(params.get("timeout", 0), "timeout")
    return out


@kind("reset", _parse_reset, targets="server", summary="reset connections (TCP RST) after timeout")
class Reset(ToxicFault):
    toxic_type = "reset_peer"

    def attributes(self) -> dict[str, Any]:
        return {"timeout": int(self.params["timeout"] * 1000)}


def _parse_slicer(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, COMMON | {"size", "variation", "delay"}, "slicer")
    out = _common(params, "downstream")
    out["size"] = p.number(params.get("size", 16), "size", "16", minimum=1, integer=True)
    out["variation"] = p.number(params.get("variation", 0), "variation", "8", integer=True)
    out["delay"] = p.duration(params.get("delay", "1ms"), "delay")
    if out["variation"] >= out["size"]:
        raise p.ParamError("variation", f"expected less than size ({out['size']}), such as variation: 4")
    return out


@kind("slicer", _parse_slicer, targets="server", summary="slice data into small chunks with a delay between them")
class Slicer(ToxicFault):
    toxic_type = "slicer"

    def attributes(self) -> dict[str, Any]:
        return {"average_size": int(self.params["size"]), "size_variation": int(self.params["variation"]),
                "delay": int(self.params["delay"] * 1e6)}


def _parse_limit(params: dict[str, Any]) -> dict[str, Any]:
    p.no_extra(params, COMMON | {"bytes"}, "limit-data")
    out = _common(params, "downstream")
    if "bytes" not in params:
        raise p.ParamError("bytes", "limit-data needs `bytes`, such as bytes: 4096")
    out["bytes"] = p.number(params["bytes"], "bytes", "4096", integer=True)
    return out


@kind("limit-data", _parse_limit, targets="server", summary="close a connection once it has carried bytes")
class LimitData(ToxicFault):
    toxic_type = "limit_data"

    def attributes(self) -> dict[str, Any]:
        return {"bytes": int(self.params["bytes"])}
