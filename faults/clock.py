"""Clock faults: a node's wall clock moved while it runs.

Every node is started with the project's clock shim (targets/clock/onceproof_clock.c,
LD_PRELOAD): it adds the int64 nanoseconds stored in the node's clock file to
CLOCK_REALTIME (clock_gettime, gettimeofday, time), and leaves CLOCK_MONOTONIC alone, as
real clock skew does. `Node.set_clock_offset` writes that file; the process sees the new
time on its next clock read. Measured to work on redis-server (TIME), PostgreSQL (now(),
clock_timestamp()), the Kafka JVM (System.currentTimeMillis: LogAppendTime record
timestamps) and Python (time.time()): see tests/integration/faults/test_clock.py.
The JVM needs no special setting: HotSpot reads System.currentTimeMillis / Instant.now with
libc's clock_gettime(CLOCK_REALTIME), a dynamic symbol the preloaded shim interposes, while
System.nanoTime (CLOCK_MONOTONIC: Kafka's timeouts, sessions, delayed operations) stays true.
libfaketime is not used (see the shim's header for what it broke on these machines).

- `clock-skew`: the clock moved by `offset` (`+30s`, `-2m`) until healed.
- `clock-strobe`: the clock flips between `offset` and true time every `period`.

Offsets of overlapping clock faults on one node add up; each heal removes its own share."""
from __future__ import annotations

import threading
import time
from typing import Annotated, Any

from pydantic import Field

from onceproof.faults.base import Context, Fault, FaultError, Params, is_realtime, kind, raise_priority
from onceproof.faults.params import Seconds


def _effective(context: Context, node: str) -> float:
    return sum(context.holders(("clock", node)).values())


def _check(context: Context, names: list[str]) -> None:
    """Before changing anything: every target runs with the clock shim, and a running target's
    process has it loaded (a pipeline image whose C library cannot preload it would otherwise
    take a skew that changes nothing, counted as applied: found on docker)."""
    for name in names:
        node = context.node(name)
        if node.runtime.clock_shim is None:
            raise FaultError(f"{name} runs without the clock shim (run `onceproof setup`)", certain=True)
        if node.clock_shim_loaded() is False:
            raise FaultError(f"{name}'s process does not load the clock shim (LD_PRELOAD of "
                             f"{node.runtime.clock_shim.name}: its image's C library cannot preload it, e.g. "
                             "not glibc), so its clock cannot be moved", certain=True)


def _write(context: Context, node: str) -> float:
    n = context.node(node)
    offset = _effective(context, node)
    n.set_clock_offset(offset)
    return offset


class SkewParams(Params):
    offset: Annotated[float, Seconds(signed=True)] = Field(
        description="how far the clock moves, ahead (+) or back (-)", examples=["-30s", "2m"])


@kind("clock-skew", params=SkewParams, targets="clock", random={"offset": ["-30s", "30s"]}, colour="#17becf",
      summary="move the node's wall clock by offset")
class ClockSkew(Fault):
    def _apply(self) -> None:
        _check(self.context, self.targets)
        offsets = {}
        for name in self.targets:
            self.context.claim(("clock", name), self.id, self.params["offset"])
            offsets[name] = _write(self.context, name)
        self.details["offsets"] = offsets

    def _heal(self) -> None:
        offsets = {}
        for name in self.targets:
            self.context.release(("clock", name), self.id)
            offsets[name] = _write(self.context, name)
        self.details["offsets"] = offsets


class StrobeParams(Params):
    offset: Annotated[float, Seconds(signed=True)] = Field(
        description="how far the clock moves while it is off true time", examples=["5s"])
    period: Annotated[float, Seconds(allow_zero=False)] = Field(0.1, description="time between two flips",
                                                                  examples=["100ms"])


@kind("clock-strobe", params=StrobeParams, targets="clock", random={"offset": "5s", "period": "200ms"},
      colour="#9edae5",
      summary="flip the node's wall clock between offset and true time every period")
class ClockStrobe(Fault):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.flips = 0

    def _set(self, on: bool) -> None:
        for name in self.targets:
            self.context.claim(("clock", name), self.id, self.params["offset"] if on else 0.0)
            _write(self.context, name)

    def _strobe(self, realtime: bool) -> None:
        if realtime:  # as punctual as the nemesis thread that applied it
            raise_priority()
        period = self.params["period"]
        start = time.monotonic()
        on, beat = True, 0
        while True:
            beat += 1
            deadline = start + beat * period  # on the beat, not drifting by the time a flip takes
            if self._stop.wait(max(0.0, deadline - time.monotonic())):
                return
            on = not on
            try:
                self._set(on)
                self.flips += 1
            except Exception:  # noqa: BLE001 - a node that went away: keep the beat for the others
                pass

    def _apply(self) -> None:
        _check(self.context, self.targets)
        self._set(True)
        self._stop.clear()
        self.flips = 0
        self._thread = threading.Thread(target=self._strobe, args=(is_realtime(),), name=f"clock-strobe-{self.id}",
                                        daemon=True)
        self._thread.start()
        self.details["offsets"] = {n: _effective(self.context, n) for n in self.targets}

    def _heal(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for name in self.targets:
            self.context.release(("clock", name), self.id)
            _write(self.context, name)
        self.details["flips"] = self.flips
