"""Sequential models for the linearizability checker: small pure objects.

A model has `name`, `init() -> state`, `step(state, input, output) -> (ok, state')`,
optionally `partition(ops) -> list[list[op]]` (P-compositionality: split a history
into parts that are linearizable independently) and `describe(input, output) -> str`.
States are hashable Python values (the checker memoises (linearized set, state)), so
`hash` is Python's own; a step never mutates its state.

An operation's input is a tuple `(f, *args)`; its output is the observed result, or
`UNKNOWN` when nobody knows (a Jepsen `info`, a timeout, a call that never returned).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol


class _Unknown:
    __slots__ = ()

    def __repr__(self) -> str:
        return "unknown"

    def __reduce__(self) -> str:  # a singleton, also across processes
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


class Model(Protocol):
    name: str

    def init(self) -> Any: ...

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]: ...

    def partition(self, ops: Sequence[Any]) -> list[list[Any]] | None: ...

    def describe(self, input: Any, output: Any) -> str: ...


class _Base:
    name = "model"

    def partition(self, ops: Sequence[Any]) -> list[list[Any]] | None:
        return None

    def describe(self, input: Any, output: Any) -> str:
        args = ", ".join(map(repr, input[1:]))
        return f"{input[0]}({args}) -> {output!r}"


class Register(_Base):
    """A read/write register: ("write", v) -> None, ("read",) -> v (None before any write)."""

    name = "register"

    def init(self) -> Any:
        return None

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "write":
            return True, input[1]
        return (output is UNKNOWN or output == state), state


class CasRegister(_Base):
    """etcd style: ("read",) -> v or None (absent), ("write", v), ("cas", old, new) -> True/False.
    An UNKNOWN outcome (info) may or may not have taken effect; a cas whose old matches moves
    the state (as in Porcupine's etcd model)."""

    name = "cas-register"

    def init(self) -> Any:
        return None

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        f = input[0]
        if f == "read":
            return (output is UNKNOWN or output == state), state
        if f == "write":
            return True, input[1]
        hit = input[1] == state
        return (output is UNKNOWN or output == hit), (input[2] if hit else state)


class KV(_Base):
    """Strings per key: ("get", k) -> v ("" if absent), ("put", k, v), ("append", k, v).
    The state is a sorted tuple of (key, value) pairs; partitioned by key it is one pair."""

    name = "kv"

    def init(self) -> Any:
        return ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        f, key = input[0], input[1]
        if len(state) == 1 and state[0][0] == key:  # the partitioned case, fast
            cur = state[0][1]
        else:
            cur = next((v for k, v in state if k == key), "")
        if f == "get":
            return (output is UNKNOWN or output == cur), state
        new = input[2] if f == "put" else cur + input[2]
        rest = tuple(kv for kv in state if kv[0] != key)
        return True, tuple(sorted(rest + ((key, new),))) if rest else ((key, new),)

    def partition(self, ops: Sequence[Any]) -> list[list[Any]] | None:
        return _by_key(ops)


class Counter(_Base):
    """("add", n) -> None, ("read",) -> total."""

    name = "counter"

    def init(self) -> Any:
        return 0

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "add":
            return True, state + input[1]
        return (output is UNKNOWN or output == state), state


class Set(_Base):
    """("add", x) -> None, ("read",) -> the set's elements (any order)."""

    name = "set"

    def init(self) -> Any:
        return frozenset()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "add":
            return True, state | {input[1]}
        if output is UNKNOWN:
            return True, state
        return isinstance(output, (list, tuple, set, frozenset)) and frozenset(output) == state, state


class Queue(_Base):
    """FIFO: ("enqueue", x) -> None, ("dequeue",) -> x, or None when empty."""

    name = "queue"

    def init(self) -> Any:
        return ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "enqueue":
            return True, state + (input[1],)
        if output is UNKNOWN:
            return True, state[1:]
        if not state:
            return output is None, state
        return output == state[0], state[1:]


def _by_key(ops: Sequence[Any]) -> list[list[Any]]:
    parts: dict[Any, list[Any]] = defaultdict(list)
    for op in ops:
        parts[op.input[1]].append(op)
    return [parts[k] for k in sorted(parts, key=str)]


register = Register()
cas_register = CasRegister()
kv = KV()
counter = Counter()
set_ = Set()
queue = Queue()

MODELS: dict[str, Any] = {m.name: m for m in (register, cas_register, kv, counter, set_, queue)}


def __getattr__(name: str) -> Any:  # `checkers.models.set`, without shadowing the builtin here
    if name == "set":
        return set_
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def by_name(name: str) -> Any:
    try:
        return MODELS[name.replace("_", "-")]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
