"""Small helpers for observing faults from the outside."""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable

import orjson

from onceproof.targets import redis as redis_target


def within(seconds: float, fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """Run fn in a thread; ("ok", value), ("error", exception) or ("timeout", None) after
    `seconds`, whatever the client library does (a stopped server never answers)."""
    out: list[tuple[str, Any]] = []

    def call() -> None:
        try:
            out.append(("ok", fn(*args)))
        except BaseException as e:  # noqa: BLE001
            out.append(("error", e))

    t = threading.Thread(target=call, daemon=True)
    t.start()
    t.join(seconds)
    return out[0] if out else ("timeout", None)


def redis_via(deployment, group: str | None, timeout: float = 0.5):  # type: ignore[no-untyped-def]
    """A Redis client (no retries) through a client group's proxy, or direct (None)."""
    if group is None:
        return redis_target.client(deployment.redis.host, deployment.redis.port, timeout,
                                   password=deployment.redis.password)
    proxy = deployment.proxies[f"{group}-redis"]
    return redis_target.client("127.0.0.1", proxy.listen, timeout, password=deployment.redis.password)


def round_trips(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2]


def nemesis_records(history) -> list[dict]:  # type: ignore[no-untyped-def]
    """The nemesis's records as written to the history file."""
    history.flush()
    out = []
    for line in Path(history.path).read_bytes().splitlines():
        r = orjson.loads(line)
        if r["process"] == "nemesis":
            out.append(r)
    return out


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
