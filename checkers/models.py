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

import copy
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
_NOT_SET: Any = object()


class Model(Protocol):
    name: str

    def init(self) -> Any: ...

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]: ...

    def partition(self, ops: Sequence[Any]) -> list[list[Any]] | None: ...

    def describe(self, input: Any, output: Any) -> str: ...


class _Base:
    """What every model shares: `fs` (the op names it knows), `initial` (its first state,
    `--initial`), `nil_read_any` (Knossos's rule for registers: a read that returned nil
    says nothing and matches any state) and `configured` (a copy with those set)."""

    name = "model"
    fs: frozenset[str] = frozenset()
    initial: Any = None
    nil_read_any = False

    def init(self) -> Any:
        return self.initial

    def configured(self, *, initial: Any = _NOT_SET, nil_read_any: bool | None = None) -> Any:
        """A copy of the model with another initial state and/or nil-read rule. Raises
        ValueError for a model whose initial state cannot be set."""
        m = copy.copy(self)
        if initial is not _NOT_SET:
            if not self.takes_initial:
                raise ValueError(f"the {self.name} model has a fixed initial state; --initial is for "
                                 "register, cas-register, counter and multi-register")
            m.initial = initial
        if nil_read_any is not None:
            m.nil_read_any = nil_read_any
        return m

    takes_initial = False

    def partition(self, ops: Sequence[Any]) -> list[list[Any]] | None:
        return None

    def describe(self, input: Any, output: Any) -> str:
        args = ", ".join(map(repr, input[1:]))
        return f"{input[0]}({args}) -> {output!r}"


class Register(_Base):
    """A read/write register: ("write", v) -> None, ("read",) -> v (None before any write)."""

    name = "register"
    fs = frozenset({"read", "write"})
    takes_initial = True

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "write":
            return True, input[1]
        return (output is UNKNOWN or output == state or (output is None and self.nil_read_any)), state


class CasRegister(_Base):
    """etcd style: ("read",) -> v or None (absent), ("write", v), ("cas", old, new) -> True/False.
    An UNKNOWN outcome (info) may or may not have taken effect; a cas whose old matches moves
    the state (as in Porcupine's etcd model)."""

    name = "cas-register"
    fs = frozenset({"read", "write", "cas"})
    takes_initial = True

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        f = input[0]
        if f == "read":
            return (output is UNKNOWN or output == state or (output is None and self.nil_read_any)), state
        if f == "write":
            return True, input[1]
        hit = input[1] == state
        return (output is UNKNOWN or output == hit), (input[2] if hit else state)


class KV(_Base):
    """Strings per key: ("get", k) -> v ("" if absent), ("put", k, v), ("append", k, v).
    The state is a sorted tuple of (key, value) pairs; partitioned by key it is one pair."""

    name = "kv"
    fs = frozenset({"get", "put", "append"})
    initial = ()

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
    fs = frozenset({"add", "read"})
    initial = 0
    takes_initial = True

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "add":
            return True, state + input[1]
        return (output is UNKNOWN or output == state), state


class MaxRegister(_Base):
    """A register that only grows: ("write", v) -> None makes the state max(state, v); ("read",)
    -> the state. Initial state -1 ("nothing written"; values are >= 0). It is the per-key state
    a pipeline keeps as the highest sequence number applied (`GREATEST(last, seq)`), so a read is
    linearizable only if it returns at least every value written before it began and every value
    an earlier read returned (Herlihy & Wing 1990 applied to Aspnes et al.'s max register, "Max
    registers, counters, and monotone circuits", PODC 2009); checkers/reads.py uses it per key."""

    name = "max-register"
    fs = frozenset({"read", "write"})
    initial = -1
    takes_initial = True

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "write":
            return True, max(state, input[1])
        return (output is UNKNOWN or output == state), state


class Set(_Base):
    """("add", x) -> None, ("read",) -> the set's elements (any order)."""

    name = "set"
    fs = frozenset({"add", "read"})
    initial = frozenset()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "add":
            return True, state | {input[1]}
        if output is UNKNOWN:
            return True, state
        return isinstance(output, (list, tuple, set, frozenset)) and frozenset(output) == state, state


class Queue(_Base):
    """FIFO: ("enqueue", x) -> None, ("dequeue",) -> x, or None when empty."""

    name = "queue"
    fs = frozenset({"enqueue", "dequeue"})
    initial = ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "enqueue":
            return True, state + (input[1],)
        if output is UNKNOWN:
            return True, state[1:]
        if not state:
            return output is None, state
        return output == state[0], state[1:]


class FifoQueue(_Base):
    """Knossos's `fifo-queue`: ("enqueue", x) -> None, ("dequeue",) -> x, the oldest element;
    a dequeue from an empty queue is inconsistent (in Jepsen such a dequeue ends `:fail` and
    is dropped). Source: knossos/src/knossos/model.clj, FIFOQueue."""

    name = "fifo-queue"
    fs = frozenset({"enqueue", "dequeue"})
    initial = ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "enqueue":
            return True, state + (input[1],)
        if not state:
            return False, state
        return (output is UNKNOWN or output == state[0]), state[1:]


class UnorderedQueue(_Base):
    """Knossos's `unordered-queue`: ("enqueue", x) -> None, ("dequeue",) -> any element
    enqueued and not yet dequeued. The state is a multiset: a sorted tuple of (x, count).
    An UNKNOWN dequeue takes some element; it is not known which, so it is not modelled
    (it may or may not have happened, so it is left out: always true, state unchanged).
    Source: knossos/src/knossos/model.clj, UnorderedQueue."""

    name = "unordered-queue"
    fs = frozenset({"enqueue", "dequeue"})
    initial = ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        bag = dict(state)
        if input[0] == "enqueue":
            bag[input[1]] = bag.get(input[1], 0) + 1
        elif output is UNKNOWN:
            return True, state
        elif bag.get(output, 0) == 0:
            return False, state
        else:
            bag[output] -= 1
            if not bag[output]:
                del bag[output]
        return True, tuple(sorted(bag.items(), key=lambda kv: repr(kv[0])))


class Mutex(_Base):
    """Knossos's `mutex`: ("acquire",) when free -> held, ("release",) when held -> free;
    acquiring a held lock or releasing a free one is inconsistent. The state is a bool
    (held). Source: knossos/src/knossos/model.clj, Mutex."""

    name = "mutex"
    fs = frozenset({"acquire", "release"})
    initial = False

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        if input[0] == "acquire":
            return (not state), True
        return bool(state), False


class MultiRegister(_Base):
    """Knossos's `multi-register`: ("txn", ((f, k, v), ...)) with micro-ops f "r" (read k,
    v = the value read, nil: unknown) and "w" (write v to k); the output is the completed
    txn's micro-ops (reads filled in) or UNKNOWN. Every key starts at `initial` (nil).
    The state is a sorted tuple of (k, v). Source: knossos/src/knossos/model.clj,
    MultiRegister; Jepsen's `[[:r :x nil] [:w :y 2]]`."""

    name = "multi-register"
    fs = frozenset({"txn"})
    initial = None
    takes_initial = True

    def init(self) -> Any:
        return ()

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        regs = dict(state)
        done = input[1] if output is UNKNOWN else output
        for f, k, v in done:
            if f == "w":
                regs[k] = v
            elif v is not None and output is not UNKNOWN and v != regs.get(k, self.initial):
                return False, state
        return True, tuple(sorted(regs.items(), key=lambda kv: repr(kv[0])))

    def describe(self, input: Any, output: Any) -> str:
        return f"txn {list(input[1])} -> {output if output is UNKNOWN else list(output)}"


class Keyed(_Base):
    """Jepsen's `independent` ops over any model: the input is (f, key, *inner args), the
    output the inner model's; each key is its own copy of `inner`, checked separately
    (partitioned by key). The state is a sorted tuple of (key, inner state). Source:
    jepsen/src/jepsen/independent.clj (`:value [k v]` tuples)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"{inner.name} per key"
        self.fs = inner.fs

    def init(self) -> Any:
        return ()

    def configured(self, *, initial: Any = _NOT_SET, nil_read_any: bool | None = None) -> Any:
        return Keyed(self.inner.configured(initial=initial, nil_read_any=nil_read_any))

    def step(self, state: Any, input: Any, output: Any) -> tuple[bool, Any]:
        key = input[1]
        inner_input = (input[0],) + tuple(input[2:])
        if len(state) == 1 and state[0][0] == key:
            cur = state[0][1]
        else:
            cur = next((s for k, s in state if k == key), _NOT_SET)
            if cur is _NOT_SET:
                cur = self.inner.init()
        ok, new = self.inner.step(cur, inner_input, output)
        if not ok:
            return False, state
        rest = tuple(ks for ks in state if ks[0] != key)
        return True, tuple(sorted(rest + ((key, new),), key=lambda ks: repr(ks[0]))) if rest else ((key, new),)

    def partition(self, ops: Sequence[Any]) -> list[list[Any]] | None:
        return _by_key(ops)

    def describe(self, input: Any, output: Any) -> str:
        return f"[{input[1]!r}] " + self.inner.describe((input[0],) + tuple(input[2:]), output)


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
fifo_queue = FifoQueue()
unordered_queue = UnorderedQueue()
mutex = Mutex()
multi_register = MultiRegister()
max_register = MaxRegister()

MODELS: dict[str, Any] = {m.name: m for m in (register, cas_register, kv, counter, set_, queue, fifo_queue,
                                              unordered_queue, mutex, multi_register, max_register)}


def __getattr__(name: str) -> Any:  # `checkers.models.set`, without shadowing the builtin here
    if name == "set":
        return set_
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def accepting(f: str) -> list[str]:
    """The names of the models that know the op name `f` (e.g. "cas" -> ["cas-register"])."""
    return [name for name, m in MODELS.items() if f in m.fs]


def by_name(name: str) -> Any:
    """The model called `name` (`cas_register` = `cas-register`); ValueError naming the
    models there are when there is none."""
    try:
        return MODELS[name.replace("_", "-")]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}") from None
