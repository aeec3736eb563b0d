"""Linearizability: the Wing & Gong / Lowe search with P-compositionality.

`check(ops, model)` splits the history with `model.partition` (e.g. by key), searches
each part for a linearization (Lowe's just-in-time linearization over a doubly linked
list of call/return entries, memoising (linearized set, state) pairs), in parallel
processes when the parts are big enough to pay for it, and stops at a time budget with
"unknown" rather than running forever. On an invalid history it returns the longest
linearizable prefix it found and the operations that could not be placed, so that a
report can draw Porcupine-like lanes.

An operation is `Op(id, process, call, ret, input, output)`: `call`/`ret` are times
(any comparable numbers; [call, ret] is a closed interval, so ops touching at one
instant are concurrent); a call that never returned has `ret = math.inf`.
"""
from __future__ import annotations

import ctypes
import math
import multiprocessing
import os
import threading
import time
from pathlib import Path
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from onceproof.checkers import models as _models
from onceproof.checkers.compose import merge_valid
from onceproof.home import library

_PARALLEL_MIN_OPS = 4000  # below this, forking workers costs more than it saves
_THREADS_MIN_OPS = 1000  # native models: parts searched by threads (the C loop runs without the GIL)


@dataclass(frozen=True, slots=True)
class Op:
    id: int
    process: Any
    call: float
    ret: float
    input: Any
    output: Any

    def to_dict(self) -> dict[str, Any]:
        out = "unknown" if self.output is _models.UNKNOWN else self.output
        return {"id": self.id, "process": self.process, "call": _num(self.call), "return": _num(self.ret),
                "input": list(self.input) if isinstance(self.input, tuple) else self.input, "output": out}


def _num(x: float) -> Any:
    return None if x == math.inf else x


def as_ops(items: Iterable[Any]) -> list[Op]:
    """Ops from Op objects or dicts {id, process, call, return, input, output}."""
    out = []
    for i, x in enumerate(items):
        if isinstance(x, Op):
            out.append(x)
            continue
        ret = x.get("return", x.get("ret"))
        inp = x["input"]
        out.append(Op(x.get("id", i), x.get("process"), x["call"], math.inf if ret is None else ret,
                      tuple(inp) if isinstance(inp, list) else inp,
                      _models.UNKNOWN if x.get("output") == "unknown" else x.get("output")))
    return out


def check(history_ops: Iterable[Any], model: Any, *, budget_s: float = 10.0, partition: bool = True,
          parallel: bool | None = None, native: Any = True, minimise_s: float = 0.0) -> dict[str, Any]:
    """Is the history linearizable with respect to `model`? `valid` is True, False, or
    "unknown" when the budget ran out first. `native`: True (the compiled search when it is
    installed), False (pure Python), or a library from `load_native`. `minimise_s` > 0: when
    invalid, also look (for at most that long) for the smallest set of ops of the first failed
    partition that cannot be linearized (`smallest_invalid`), returned as `minimal_invalid`
    (op ids) and `minimal_complete` (False: the budget ran out, the set may not be minimal)."""
    t0 = time.perf_counter()
    if isinstance(model, str):
        model = _models.by_name(model)
    ops = as_ops(history_ops)
    parts = (model.partition(ops) if partition else None) or [ops]
    parts = [p for p in parts if p]
    deadline = t0 + budget_s
    use_pool = parallel if parallel is not None else (
        len(parts) > 1 and len(ops) >= _PARALLEL_MIN_OPS and (os.cpu_count() or 1) > 1)
    lib = load_native() if native is True else (native or None)
    threads = (parallel is not False and not use_pool and lib is not None and len(parts) > 1
               and len(ops) >= _THREADS_MIN_OPS and type(model) in (_models.KV, _models.CasRegister)
               and (os.cpu_count() or 1) > 1)
    if use_pool:
        results = _run_pool(parts, model, deadline, native)
    elif threads:
        results = _run_threads(parts, model, deadline, lib)
    else:
        results = _interleave([_searcher(p, model, native) for p in parts], deadline)
    verdicts = [r[0] if r else "skipped" for r in results]
    valid = merge_valid({"valid": True, "invalid": False}.get(v, "unknown") for v in verdicts)
    longest: list[int] = []
    unplaced: list[Any] = []
    failed = []
    for i, (p, r) in enumerate(zip(parts, results)):
        if r is None:
            continue
        verdict, seq = r
        ids = [p[j].id for j in seq]
        if verdict == "invalid":
            failed.append(i)
            longest.extend(ids)
            placed = set(seq)
            unplaced.extend(p[j].id for j in range(len(p)) if j not in placed)
        elif valid is True:
            longest.extend(ids)
    extra: dict[str, Any] = {}
    if valid is False and minimise_s > 0 and failed:
        small, complete = smallest_invalid(parts[failed[0]], model, budget_s=minimise_s, native=native)
        extra = {"minimal_invalid": [op.id for op in small], "minimal_complete": complete}
    return {
        **extra,
        "valid": valid,
        "model": model.name,
        "partitions": len(parts),
        "failed_partitions": failed,
        "longest_prefix": longest,
        "unplaced": unplaced,
        "operations": [op.to_dict() for op in ops],
        "elapsed_s": round(time.perf_counter() - t0, 6),
        "timed_out": "unknown" in verdicts,
    }


def smallest_invalid(ops: Sequence[Op], model: Any, *, budget_s: float = 5.0,
                     native: Any = True) -> tuple[list[Op], bool]:
    """A smallest set of ops that cannot be linearized, taken from the non-linearizable history
    `ops`, as Knossos reports the op that cannot be linearized (`:op`) with what came before
    it, and Porcupine its partial linearizations. The anchor is the last op of the shortest
    non-linearizable prefix in call order; then ops are dropped (halves, quarters, ...,
    single ops) while the set stays non-linearizable AND stays linearizable without the
    anchor, so that every op left is needed to make the anchor impossible (not a set that is
    impossible for another reason); when the anchor is impossible alone (a read of a value
    never written), the set keeps an op with which it is possible (the write it read).
    Returns (ops in call order, True) when done within `budget_s`, or (the smallest set
    found so far, False)."""
    deadline = time.perf_counter() + budget_s

    def invalid(sub: list[Op]) -> bool | None:
        if not sub:
            return False
        if time.perf_counter() > deadline:
            return None
        r = _interleave([_searcher(sub, model, native)], deadline)[0]
        return None if r is None or r[0] == "unknown" else r[0] == "invalid"

    cand = sorted(ops, key=lambda op: (op.call, op.id))
    lo, hi = 1, len(cand)
    while lo < hi:
        mid = (lo + hi) // 2
        v = invalid(cand[:mid])
        if v is None:
            return cand[:hi], False
        if v:
            hi = mid
        else:
            lo = mid + 1
    anchor = cand[hi - 1]
    cand = cand[:hi]
    alone = invalid([anchor])  # e.g. a read of a value never written: keep an op that explains it
    chunk = max(len(cand) // 2, 1)
    while True:
        i = 0
        while i < len(cand):
            trial = cand[:i] + [op for op in cand[i:i + chunk] if op is anchor] + cand[i + chunk:]
            if len(trial) == len(cand):
                i += chunk
                continue
            v = invalid(trial)
            w = invalid([op for op in trial if op is not anchor]) if v else None
            if v is None or (v and w is None):
                return cand, False
            if v and not w and (not alone or any(invalid([op, anchor]) is False for op in trial if op is not anchor)):
                cand = trial
                i += 1 if cand[i:i + 1] == [anchor] else 0
            else:
                i += chunk
        if chunk == 1:
            return cand, True
        chunk //= 2


def _run_pool(parts: list[list[Op]], model: Any, deadline: float, native: Any = True) -> list[tuple[str, list[int]] | None]:
    """Parts dealt to one process per core (largest first, to the least loaded), each process
    interleaving its parts; the first invalid part stops every process."""
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
    groups = _groups(parts, min(len(parts), os.cpu_count() or 1))
    stop = ctx.Event()
    queue = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker, args=(g, [parts[i] for i in g], model, deadline, stop, queue, native),
                         daemon=True) for g in groups]
    for p in procs:
        p.start()
    results: list[tuple[str, list[int]] | None] = [None] * len(parts)
    for _ in procs:
        for i, r in queue.get():
            results[i] = r
            if r is not None and r[0] == "invalid":
                stop.set()
    for p in procs:
        p.join()
    return results


def _groups(parts: list[list[Op]], workers: int) -> list[list[int]]:
    groups: list[list[int]] = [[] for _ in range(workers)]
    load = [0] * workers
    for i in sorted(range(len(parts)), key=lambda i: -len(parts[i])):
        w = load.index(min(load))
        groups[w].append(i)
        load[w] += len(parts[i])
    return groups


def _run_threads(parts: list[list[Op]], model: Any, deadline: float, lib: Any) -> list[tuple[str, list[int]] | None]:
    """As `_run_pool`, with threads: for models the C core steps itself, so that no Python runs
    while it searches and the threads do not wait for each other (no process to start)."""
    stop = threading.Event()
    results: list[tuple[str, list[int]] | None] = [None] * len(parts)

    def run(group: list[int]) -> None:
        got = _interleave([_searcher(parts[i], model, lib) for i in group], deadline, stop)
        for i, r in zip(group, got):
            results[i] = r
            if r is not None and r[0] == "invalid":
                stop.set()

    groups = [g for g in _groups(parts, min(len(parts), os.cpu_count() or 1)) if g]
    workers = [threading.Thread(target=run, args=(g,)) for g in groups[1:]]
    for t in workers:
        t.start()
    try:
        run(groups[0])
    finally:
        for t in workers:
            t.join()
    return results


def _worker(indices: list[int], parts: list[list[Op]], model: Any, deadline: float, stop: Any,
            queue: Any, native: Any = True) -> None:
    results = _interleave([_searcher(p, model, native) for p in parts], deadline, stop)
    queue.put(list(zip(indices, results)))


def _search(ops: Sequence[Op], model: Any, deadline: float) -> tuple[str, list[int]]:
    """One part: ("valid", a linearization) | ("invalid", longest prefix) | ("unknown", longest
    prefix so far). Indices are into `ops`."""
    return _interleave([_searcher(ops, model)], deadline)[0]  # type: ignore[return-value]


def _interleave(searches: list[Any], deadline: float, stop: Any = None) -> list[tuple[str, list[int]] | None]:
    """Run searches round-robin, a slice each, until all are decided, one is invalid (that
    decides the whole history, as in Porcupine's parallel check), or the budget is spent."""
    results: list[tuple[str, list[int]] | None] = [None] * len(searches)
    live = list(range(len(searches)))
    while live:
        for i in list(live):
            try:
                next(searches[i])
            except StopIteration as done:
                results[i] = done.value
                live.remove(i)
                if done.value[0] == "invalid":
                    return results
        if time.perf_counter() > deadline or (stop is not None and stop.is_set()):
            for i in live:
                results[i] = searches[i].send("stop")
            return results
    return results


# --------------------------------------------------------------------------- compiled core
#
# checkers/wgl_core.c is the same search in C (built by `onceproof setup` into
# $ONCEPROOF_HOME/lib); model steps stay in Python, asked once per (state, op) and cached
# there. Without the library, the pure-Python search below runs (same results, slower).

_VALID, _INVALID, _NEED, _YIELD, _NOMEM = 0, 1, 2, 3, 4
_native: Any = None
_native_tried = False


def native_library_path() -> Path:
    """Where `onceproof setup` puts the compiled search: `$ONCEPROOF_HOME/lib/libonceproof_wgl.so`."""
    return library("libonceproof_wgl.so")


def load_native(path: str | os.PathLike[str] | None = None) -> Any:
    """Load the compiled search (None if it is not there); `path=None`: the installed one."""
    global _native, _native_tried
    if path is None and _native_tried:
        return _native
    _native_tried = path is None or _native_tried
    try:
        lib = ctypes.CDLL(str(path or native_library_path()))
    except OSError:
        if path is None:
            _native = None
        return None
    p, i, ll = ctypes.c_void_p, ctypes.c_int, ctypes.c_longlong
    for name, res, args in (("wgl_new", p, [i, p, i]), ("wgl_free", None, [p]), ("wgl_put", i, [p, i, i, i]),
                            ("wgl_run", i, [p, ll]), ("wgl_req_state", i, [p]), ("wgl_req_op", i, [p]),
                            ("wgl_depth", i, [p]), ("wgl_best_len", i, [p]), ("wgl_stack", None, [p, p]),
                            ("wgl_best", None, [p, p]), ("wgl_steps", ll, [p]),
                            ("wgl_set_cas", i, [p, p, p, p, p]),
                            ("wgl_set_kv", i, [p, i, p, p, p, p, p, p, p, ll])):
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    _native = lib if path is None else _native
    return lib


def _entry_order(ops: Sequence[Op]) -> list[int]:
    n = len(ops)
    keyed = sorted([(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, n + i) for i, op in enumerate(ops)])
    return [e for _, _, e in keyed]


def _native_searcher(ops: Sequence[Op], model: Any, lib: Any) -> Any:
    """`_searcher` with the loop in C: the same generator protocol and the same results."""
    n = len(ops)
    if n == 0:
        return "valid", []
    order = (ctypes.c_int * (2 * n))(*_entry_order(ops))
    states = [model.init()]
    index: dict[Any, int] = {states[0]: 0}
    inputs = [op.input for op in ops]
    outputs = [op.output for op in ops]
    step = model.step
    c = lib.wgl_new(n, order, 0)
    if not c:
        raise MemoryError("linearizability search")
    try:
        if _native_model(lib, c, ops, model):
            raise MemoryError("linearizability search")
    except BaseException:
        lib.wgl_free(c)
        raise

    def seq(best: bool) -> list[int]:
        k = lib.wgl_best_len(c) if best else lib.wgl_depth(c)
        buf = (ctypes.c_int * max(k, 1))()
        (lib.wgl_best if best else lib.wgl_stack)(c, buf)
        return list(buf[:k])

    try:
        while True:
            rc = lib.wgl_run(c, 1 << 16)
            if rc == _NEED:
                s, op = lib.wgl_req_state(c), lib.wgl_req_op(c)
                ok, new = step(states[s], inputs[op], outputs[op])
                if ok:
                    sid = index.get(new)
                    if sid is None:
                        sid = index[new] = len(states)
                        states.append(new)
                else:
                    sid = -1
                if lib.wgl_put(c, s, op, sid):
                    raise MemoryError("linearizability search")
            elif rc == _YIELD:
                if (yield None) == "stop":
                    best = lib.wgl_best_len(c) > lib.wgl_depth(c)
                    yield "unknown", seq(best)
                    return "unknown", []
            elif rc == _VALID:
                return "valid", seq(False)
            elif rc == _INVALID:
                return "invalid", seq(True)
            else:
                raise MemoryError("linearizability search")
    finally:
        lib.wgl_free(c)


def _native_model(lib: Any, c: Any, ops: Sequence[Op], model: Any) -> int:
    """Give the C search the model itself when it is one it knows (cas-register, kv) and every op
    is encoded exactly (same equalities as the Python step): no Python call per transition.
    Returns the library's status (0 = done, or nothing to do: the Python steps are then asked)."""
    n = len(ops)
    arr = ctypes.c_int * n
    unknown = _models.UNKNOWN
    try:
        if type(model) is _models.CasRegister:
            ids: dict[Any, int] = {model.init(): 0}  # the C state 0 is the initial value
            any_nil = model.nil_read_any
            f, a, b, out = arr(), arr(), arr(), arr()
            for i, op in enumerate(ops):
                inp, o = op.input, op.output
                name = inp[0]
                if name == "read":
                    f[i], out[i] = 0, -1 if o is unknown or (o is None and any_nil) else ids.setdefault(o, len(ids))
                elif name == "write":
                    f[i], a[i] = 1, ids.setdefault(inp[1], len(ids))
                else:
                    f[i], a[i], b[i] = 2, ids.setdefault(inp[1], len(ids)), ids.setdefault(inp[2], len(ids))
                    out[i] = -1 if o is unknown else 1 if o == True else 0 if o == False else 2  # noqa: E712
            return int(lib.wgl_set_cas(c, f, a, b, out))
        if type(model) is _models.KV:
            keys: dict[Any, int] = {}
            text = bytearray()
            f, key, arg_len, out_len = arr(), arr(), arr(), arr()
            arg_off, out_off = (ctypes.c_int64 * n)(), (ctypes.c_int64 * n)()
            for i, op in enumerate(ops):
                inp, o = op.input, op.output
                key[i] = keys.setdefault(inp[1], len(keys))
                name = inp[0]
                if name == "get":
                    f[i] = 0
                    if o is unknown:
                        out_len[i] = -1
                    elif type(o) is str:
                        bs = o.encode()
                        out_off[i], out_len[i] = len(text), len(bs)
                        text += bs
                    else:
                        out_len[i] = -2
                elif name in ("put", "append") and type(inp[2]) is str:
                    f[i] = 1 if name == "put" else 2
                    bs = inp[2].encode()
                    arg_off[i], arg_len[i] = len(text), len(bs)
                    text += bs
                else:
                    return 0  # not a shape the C model knows: Python steps
            buf = bytes(text)
            return int(lib.wgl_set_kv(c, len(keys), f, key, arg_off, arg_len, out_off, out_len, buf, len(buf)))
    except (TypeError, IndexError, ValueError, UnicodeError):
        return 0  # unhashable values, odd inputs: Python steps
    return 0


def _searcher(ops: Sequence[Op], model: Any, native: Any = True) -> Any:
    """The search of one part: compiled when the library is there (native=True: the installed
    one; False: pure Python; or a library from `load_native`)."""
    lib = load_native() if native is True else (native or None)
    if lib is not None:
        return _native_searcher(ops, model, lib)
    return _py_searcher(ops, model)


def _py_searcher(ops: Sequence[Op], model: Any) -> Any:
    """A generator: yields every few thousand steps (send it "stop" to get the longest prefix so
    far as ("unknown", prefix)); returns the verdict of `_search`."""
    n = len(ops)
    if n == 0:
        return "valid", []
    # entries: 0..n-1 are calls, n..2n-1 returns; sorted by time, calls before returns at a tie
    keyed = sorted([(op.call, 0, i) for i, op in enumerate(ops)] + [(op.ret, 1, n + i) for i, op in enumerate(ops)])
    order = [e for _, _, e in keyed]
    head = 2 * n
    nxt = [-1] * (2 * n + 1)
    prv = [-1] * (2 * n + 1)
    prev = head
    for e in order:
        nxt[prev] = e
        prv[e] = prev
        prev = e
    inputs = [op.input for op in ops]
    outputs = [op.output for op in ops]
    step = model.step
    state = model.init()
    linearized = 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []  # (call entry, state before it)
    best: list[int] = []
    entry = nxt[head]
    steps = 0
    while True:
        if entry < n:  # a call: try to linearize it here
            steps += 1
            if steps & 0xFFF == 0:
                if (yield None) == "stop":
                    yield "unknown", best if len(best) > len(stack) else [c for c, _ in stack]
                    return "unknown", []
            ok, new_state = step(state, inputs[entry], outputs[entry])
            if ok:
                lin = linearized | (1 << entry)
                key = (lin, new_state)
                if key not in seen:
                    seen.add(key)
                    stack.append((entry, state))
                    state, linearized = new_state, lin
                    # lift the call and its return out of the list
                    a, b = prv[entry], nxt[entry]
                    nxt[a] = b
                    prv[b] = a
                    r = entry + n
                    a, b = prv[r], nxt[r]
                    nxt[a] = b
                    if b >= 0:
                        prv[b] = a
                    entry = nxt[head]
                    if entry < 0:
                        return "valid", [c for c, _ in stack]
                    continue
            entry = nxt[entry]
        else:  # a return before its call was linearized: backtrack
            if len(stack) > len(best):
                best = [c for c, _ in stack]
            if not stack:
                return "invalid", best
            entry, state = stack.pop()
            linearized &= ~(1 << entry)
            r = entry + n
            a, b = prv[r], nxt[r]
            nxt[a] = r
            if b >= 0:
                prv[b] = r
            a, b = prv[entry], nxt[entry]
            nxt[a] = entry
            prv[b] = entry
            entry = nxt[entry]
