"""Network faults on the local runtime, through the Toxiproxy proxy in front of each server.

Each client group (`pipeline`, `load`) reaches a server through its own proxy named
`<group>-<node>`, so `from: pipeline | load | both` picks whose traffic suffers; a node that
streams from a primary through a proxy (the PostgreSQL standby, targets/standby.py) also has
`replication-<node>`: `from: replication` slows or cuts its replication link. `direction`
is Toxiproxy's stream: `downstream` (server -> client), `upstream` (client -> server) or both.

- `partition`: the server unreachable. `style: blackhole` (default) = a `timeout` toxic with
  timeout 0 on both streams: data is swallowed and nobody answers, clients time out;
  `style: refuse` = the proxy disabled: open connections are closed, new ones refused.
- `latency` (`ms`, `jitter`), `bandwidth` (`rate` in KB/s), `reset` (reset_peer after
  `timeout`), `slicer` (`size`, `variation`, `delay`), `limit-data` (`bytes`).

Pipeline replicas are clients, not servers: a network fault on them is rejected."""
from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from onceproof.faults.base import Fault, FaultError, ParamError, Params, kind
from onceproof.faults.params import Choice, Number, Seconds

Group = Annotated[Literal["pipeline", "load", "both", "replication"], Choice()]
Direction = Annotated[Literal["downstream", "upstream", "both"], Choice()]


class ToxicParams(Params):
    """What every Toxiproxy fault takes: whose traffic (`from`) and which stream (`direction`)."""

    from_: Group = Field("pipeline", alias="from", description="whose traffic suffers: the pipeline's, the "
                         "load generator's, both, or (a standby) its replication link from its primary")
    direction: Direction = Field("downstream", description="Toxiproxy's stream: downstream (server -> client), "
                                 "upstream (client -> server) or both")


class PartitionParams(ToxicParams):
    direction: Direction = Field("both", description="Toxiproxy's stream: downstream, upstream or both")
    style: Annotated[Literal["blackhole", "refuse"], Choice()] = Field(
        "blackhole", description="blackhole: data swallowed, clients time out; refuse: connections closed")


class LatencyParams(ToxicParams):
    ms: Annotated[float, Number("200")] = Field(description="the added delay in milliseconds", examples=[200])
    jitter: Annotated[float, Number("50")] = Field(0.0, description="+- this many milliseconds", examples=[50])


class BandwidthParams(ToxicParams):
    rate: Annotated[int, Number("64", integer=True)] = Field(description="the cap in KB/s", examples=[64])


class ResetParams(ToxicParams):
    direction: Direction = Field("both", description="Toxiproxy's stream: downstream, upstream or both")
    timeout: Annotated[float, Seconds()] = Field(0.0, description="reset a connection this long after it opened",
                                                 examples=["1s"])


class SlicerParams(ToxicParams):
    size: Annotated[int, Number("16", minimum=1, integer=True)] = Field(16, description="average chunk size, bytes")
    variation: Annotated[int, Number("8", integer=True)] = Field(0, description="chunk sizes vary by this many bytes")
    delay: Annotated[float, Seconds()] = Field(0.001, description="between two chunks", examples=["1ms"])

    @model_validator(mode="after")
    def _variation_below_size(self) -> "SlicerParams":
        if self.variation >= self.size:
            raise ParamError("variation", f"expected less than size ({self.size}), such as variation: 4")
        return self


class LimitDataParams(ToxicParams):
    bytes: Annotated[int, Number("4096", integer=True)] = Field(
        description="what a connection carries before it is closed, in bytes", examples=[4096])



class ToxicFault(Fault):
    """A fault made of one Toxiproxy toxic per proxy and stream."""

    runtimes = ("local", "docker")  # docker: the Toxiproxy container's proxies

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


@kind("partition", params=PartitionParams, targets="server", random={}, colour="#9467bd",
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


@kind("latency", params=LatencyParams, targets="server", random={"ms": 100, "jitter": 20}, colour="#ff7f0e",
      summary="add ms (+- jitter) to every chunk of data")
class Latency(ToxicFault):
    toxic_type = "latency"

    def attributes(self) -> dict[str, Any]:
        return {"latency": int(self.params["ms"]), "jitter": int(self.params["jitter"])}


@kind("bandwidth", params=BandwidthParams, targets="server", random={"rate": 16}, colour="#e377c2",
      summary="cap throughput at rate KB/s")
class Bandwidth(ToxicFault):
    toxic_type = "bandwidth"

    def attributes(self) -> dict[str, Any]:
        return {"rate": int(self.params["rate"])}


@kind("reset", params=ResetParams, targets="server", random={}, colour="#bcbd22",
      summary="reset connections (TCP RST) after timeout")
class Reset(ToxicFault):
    toxic_type = "reset_peer"

    def attributes(self) -> dict[str, Any]:
        return {"timeout": int(self.params["timeout"] * 1000)}


@kind("slicer", params=SlicerParams, targets="server", random={"size": 8, "delay": "2ms"}, colour="#ffbb78",
      summary="slice data into small chunks with a delay between them")
class Slicer(ToxicFault):
    toxic_type = "slicer"

    def attributes(self) -> dict[str, Any]:
        return {"average_size": int(self.params["size"]), "size_variation": int(self.params["variation"]),
                "delay": int(self.params["delay"] * 1e6)}


@kind("limit-data", params=LimitDataParams, targets="server", random={"bytes": 4096}, colour="#c49c94",
      summary="close a connection once it has carried bytes")
class LimitData(ToxicFault):
    toxic_type = "limit_data"

    def attributes(self) -> dict[str, Any]:
        return {"bytes": int(self.params["bytes"])}
