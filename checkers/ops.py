"""Operation histories as `Op`s for the linearizability checker: Jepsen log lines, Jepsen
EDN op maps, and our own histories (checkers.history). Each reader returns a list of `Op`.

An op is its invoke paired with the next completion of the same process; `ok` gives the
output; `info`, or no completion, leaves it open to the end (ret = inf) with an UNKNOWN
output. What `fail` means depends on where the file comes from:

- Jepsen EDN (`read_edn_history`, default meaning "jepsen", as Knossos reads it): a `fail`
  certainly did not happen and is dropped;
- Jepsen log lines and Porcupine's files (meaning "porcupine", as Porcupine's readers in
  porcupine_test.go read test_data/, so verdicts agree): a `cas` that ends `fail` happened
  and returned false; a `read` that ends `fail :timed-out` is unknown; other `fail`s are
  dropped.

Times are line numbers (log lines) or op positions (EDN) when the format has none.
"""
from __future__ import annotations

import math
import re
from typing import Any

from dataclasses import dataclass, field

from onceproof.checkers import reads
from onceproof.checkers.edn import Keyword, iter_maps
from onceproof.checkers.edn import text as edn_text
from onceproof.checkers.history import History, HistoryError, open_history
from onceproof.checkers.linearizable import Op
from onceproof.checkers.models import UNKNOWN

_LOG_LINE = re.compile(r"^\S+\s+jepsen\.util\s+-\s+(\S+)\s+:(invoke|ok|fail|info)\s+:(\S+)\s*(.*?)\s*$")


def _parse_value(text: str, path: str, line: int) -> Any:
    text = text.strip()
    if text in ("nil", ""):
        return None
    if text.startswith('"'):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    if text.startswith("["):
        return [_parse_value(x, path, line) for x in re.findall(r'"(?:[^"\\]|\\.)*"|[^\s\[\],]+', text)]
    if text.startswith(":"):
        return text  # a keyword, e.g. :timed-out
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise HistoryError(path, line, f"cannot read the value {text!r} (expected nil, a number, "
                                           "a string, a keyword or a vector)") from None


MEANINGS = ("jepsen", "porcupine")


class _Pairing:
    """Pairs invocations with completions per process, under a source format's meaning of
    `fail`: "jepsen" (Knossos: a `fail` certainly did not happen and is dropped) or
    "porcupine" (Porcupine's etcd reader: a `cas` that ends `fail` happened and returned
    false; a `read` that ends `fail :timed-out` is unknown; other `fail`s are dropped).
    Either way `info`, or no completion at all, leaves the op open to the end (ret = inf)
    with an UNKNOWN output."""

    def __init__(self, path: str, meaning: str = "porcupine") -> None:
        self.path = path
        self.meaning = meaning
        self.open: dict[Any, tuple[int, float, str, Any]] = {}  # process -> (id, call, f, input)
        self.ops: dict[int, Op] = {}
        self.next_id = 0

    def invoke(self, process: Any, t: float, f: str, inp: tuple[Any, ...]) -> None:
        if process in self.open:  # the previous op of this process never completed
            self._close(process, math.inf, UNKNOWN)
        self.open[process] = (self.next_id, t, f, inp)
        self.next_id += 1

    def complete(self, process: Any, t: float, typ: str, f: str, value: Any, line: int) -> None:
        if process not in self.open:
            raise HistoryError(self.path, line, f"a :{typ} of process {process} with no :invoke before it")
        _, _, f0, _ = self.open[process]
        if typ == "ok":
            out = True if f0 == "cas" else (value if f0 in ("read", "get", "dequeue") else None)
            self._close(process, t, out)
        elif typ == "fail" and self.meaning == "jepsen":
            del self.open[process]  # certainly did not happen
        elif typ == "fail" and f0 == "cas":
            self._close(process, t, False)
        elif typ == "fail" and f0 in ("read", "get") and value == ":timed-out":
            self._close(process, t, UNKNOWN)
        elif typ == "fail":
            del self.open[process]  # certainly did not happen
        else:  # info: unknown, stays open to the end
            self._close(process, math.inf, UNKNOWN)

    def _close(self, process: Any, t: float, out: Any) -> None:
        op_id, call, _, inp = self.open.pop(process)
        self.ops[op_id] = Op(op_id, process, call, t, inp, out)

    def finish(self) -> list[Op]:
        for p in list(self.open):
            self._close(p, math.inf, UNKNOWN)
        return [self.ops[i] for i in sorted(self.ops)]


def _read_lines(path: str) -> list[str]:
    with open_history(path, "r", encoding="utf-8", errors="replace") as fh:
        return fh.read().splitlines()


def read_jepsen_log(path: str, meaning: str = "porcupine") -> list[Op]:
    """Jepsen log lines: `INFO  jepsen.util - 3\t:invoke\t:cas\t[3 0]` (other lines are skipped),
    as Porcupine's `parseJepsenLog` reads them (porcupine_test.go; its test_data/jepsen/etcd_*.log)
    unless `meaning="jepsen"`. Raises HistoryError (file, line, reason)."""
    pairing = _Pairing(path, meaning)
    lines = _read_lines(path)
    seen = False
    for n, line in enumerate(lines, 1):
        m = _LOG_LINE.match(line)
        seen = seen or m is not None
        if not m:
            if "jepsen.util" in line and re.search(r"\s:(invoke|ok|fail|info)\s", line):
                raise HistoryError(path, n, "looks like an operation but does not read as "
                                            "'<process> :<type> :<f> <value>'")
            continue
        proc_s, typ, f, val_s = m.groups()
        if not re.fullmatch(r"-?\d+", proc_s):
            continue  # :nemesis and the like
        process = int(proc_s)
        value = _parse_value(val_s, path, n)
        if typ == "invoke":
            pairing.invoke(process, n, f, _input(f, value))
        else:
            pairing.complete(process, n, typ, f, value, n)
    first = next((line.strip() for line in lines if line.strip()), "")
    if not seen and first:  # text with no operation line is no Jepsen log (it must never be found
        # valid); an empty file is Porcupine's empty history (its test_data/jepsen/etcd_095.log)
        raise HistoryError(path, 1, "not a Jepsen log: no operation line found (a line such as "
                                    "'INFO  jepsen.util - 3\t:invoke\t:read\tnil'); the first line is: "
                                    f"{first[:80]!r}")
    return pairing.finish()


@dataclass
class EdnHistory:
    """A Jepsen EDN history read as ops: `ops` (ids 0..n-1 in invoke order), `lines` (op id ->
    the line of its invoke), `fs` (op name -> line where it first appears), `keyed` (read as
    Jepsen `independent` ops: input (f, key, *args)), `read_values` (the values reads returned,
    for telling a counter from a set), `meaning`."""

    path: str
    ops: list[Op]
    lines: dict[int, int]
    fs: dict[str, int]
    keyed: bool
    meaning: str
    read_values: list[Any] = field(default_factory=list)


_TYPES = ("invoke", "ok", "fail", "info")
_NO_ARG = ("read", "get", "dequeue", "acquire", "release")


def _name(v: Any) -> Any:
    """`:invoke` -> "invoke" (keywords and strings); anything else as it is."""
    return v[1:] if isinstance(v, str) and v.startswith(":") else v


def read_edn_history(path: str, meaning: str = "jepsen", keyed: bool | None = None) -> EdnHistory:
    """Read a Jepsen EDN history (any layout `checkers.edn` reads: one map per line, a
    vector/list of maps across lines, tagged `#jepsen.history.Op{..}` maps) into ops.

    Each op map needs `:process`, `:type` (:invoke/:ok/:fail/:info) and `:f`; `:value`
    defaults to nil; Porcupine's kv files add `:key`; other keys (`:index`, `:time`,
    `:node`, `:error`, ...) are ignored. Ops of a keyword process (`:nemesis`) are skipped;
    any other non-integer process is refused (Jepsen's processes are integers or :nemesis). As
    Knossos and Elle require, a process invokes again only after its op completed, and a
    completion has its invoke's `:f` (its `:value` may differ: a read's invoke has nil). Time is the op map's position in the file (Jepsen writes histories in order).

    Meaning (`meaning="jepsen"`, Knossos's, knossos/src/knossos/history.clj): `:fail` = did
    not happen (dropped); `:info` or no completion = may have happened at any time after the
    invoke (open to the end, output unknown). `meaning="porcupine"`: Porcupine's reading
    (see `_Pairing`). Inputs: `(f,)` for read/get/dequeue/acquire/release, `("cas", old, new)`
    for `:value [old new]`, `("txn", ((f, k, v), ...))` for micro-ops, `(f, value)` otherwise,
    `(f, key, ...)` with `:key`. `keyed` (None: decided from the ops): every value is Jepsen's
    `independent` tuple `[k v]` (jepsen/src/jepsen/independent.clj), read as input
    `(f, k, *inner args)` and the output of `v`.

    Raises HistoryError (file, line, what was expected) on anything unreadable."""
    if meaning not in MEANINGS:
        raise ValueError(f"meaning must be one of {MEANINGS}, got {meaning!r}")
    # op: [line, process, call, ret, f, invoke value, key, outcome, completion value]
    raw: list[list[Any]] = []
    open_: dict[Any, int] = {}
    fs: dict[str, int] = {}
    for t, (line, m) in enumerate(iter_maps(path), 1):
        missing = [k for k in (":process", ":type", ":f") if k not in m]
        if missing:
            raise HistoryError(path, line, f"the op map has no {', '.join(missing)} (expected "
                                           "{:process 0, :type :invoke, :f :read, :value nil})")
        process = m[":process"]
        if isinstance(process, Keyword):
            continue  # :nemesis and the like: not a client
        if isinstance(process, bool) or not isinstance(process, int):
            raise HistoryError(path, line, f":process must be an integer (a client) or a keyword such as :nemesis, "
                                           f"got {edn_text(process)}")
        typ, f = _name(m[":type"]), _name(m[":f"])
        if typ not in _TYPES:
            raise HistoryError(path, line, f":type must be :invoke, :ok, :fail or :info, got {edn_text(m[':type'])}")
        if not isinstance(f, str):
            raise HistoryError(path, line, f":f must be a keyword such as :read, got {edn_text(m[':f'])}")
        value = m.get(":value")
        if typ == "invoke":
            if process in open_:  # Jepsen: a process is single-threaded (knossos.history, elle refuse this)
                raise HistoryError(path, line, f"process {process} invokes :{f} while its :{raw[open_[process]][4]} "
                                               f"invoked on line {raw[open_[process]][0]} has not completed (a Jepsen "
                                               "process does one op at a time: expected its :ok, :fail or :info first)")
            open_[process] = len(raw)
            fs.setdefault(f, line)
            raw.append([line, process, t, math.inf, f, value, m.get(":key", _NO_KEY), "info", None])
            continue
        i = open_.pop(process, None)
        if i is None:
            raise HistoryError(path, line, f"a :{typ} of process {process} with no :invoke before it")
        r = raw[i]
        if r[4] != f:  # the value may differ (a read's invoke has nil), never the op
            raise HistoryError(path, line, f"a :{typ} :{f} of process {process} completes the :invoke :{r[4]} on line "
                                           f"{r[0]} (expected :f :{r[4]}: a completion has its invoke's :f)")
        r[7], r[8] = typ, value
        if typ != "info":
            r[3] = t
    if keyed is None:
        keyed = _looks_independent(raw)
    ops: list[Op] = []
    lines: dict[int, int] = {}
    read_values: list[Any] = []
    for line, process, call, ret, f, inv, key, outcome, done in raw:
        if outcome == "fail" and (meaning == "jepsen" or not (
                f == "cas" or (f in ("read", "get") and done == ":timed-out"))):
            continue  # certainly did not happen
        if keyed:
            if not (isinstance(inv, tuple) and len(inv) == 2):
                raise HistoryError(path, line, f"expected an independent [key value] tuple as :value, got {edn_text(inv)}")
            k, inv = inv
            if not is_key(k):
                raise HistoryError(path, line, _key_expected("the key of an independent [key value] :value", k))
            if outcome == "ok" and isinstance(done, tuple) and len(done) == 2:
                done = done[1]
        inp = _edn_input(f, inv, path, line)
        if keyed:
            inp = (inp[0], k) + inp[1:]
        elif key is not _NO_KEY:
            if not is_key(key):
                raise HistoryError(path, line, _key_expected(":key", key))
            inp = (f, key) + (() if f in ("get", "read") else (inv,))
        if outcome == "ok":
            out = True if f == "cas" else (done if f in ("read", "get", "dequeue") else
                                           _edn_input(f, done, path, line)[1] if f == "txn" else None)
            if f in ("read", "get"):
                read_values.append(done)
        elif outcome == "fail":  # porcupine meaning: a cas that returned false, a timed-out read
            out = False if f == "cas" else UNKNOWN
        else:
            out = UNKNOWN
        lines[len(ops)] = line
        ops.append(Op(len(ops), process, call, ret if outcome != "info" else math.inf, inp, out))
    return EdnHistory(path, ops, lines, fs, keyed, meaning, read_values)


_NO_KEY: Any = object()


def is_key(k: Any) -> bool:
    """Whether `k` can be a key (of the kv model, a Porcupine `:key`, a Jepsen `independent`
    tuple): a string, keyword or number; never nil, a boolean, a vector, a set or a map."""
    return isinstance(k, (str, int, float)) and not isinstance(k, bool) or type(k).__name__ in ("Decimal", "Fraction")


def _key_expected(what: str, k: Any) -> str:
    return f"{what} must be a string, keyword or number such as \"x\" or :x, got {edn_text(k)}"


def _looks_independent(raw: list[list[Any]]) -> bool:
    """Jepsen `independent` ops: every value (invoke, and ok completion) is a [k v] tuple, with
    the same k, and a cas's v is itself [old new]. A plain history has nil reads or scalar
    writes, so it never looks like this; a history with a :key is Porcupine's kv, not this."""
    if not raw:
        return False
    for r in raw:
        inv, f, key, outcome, done = r[5], r[4], r[6], r[7], r[8]
        if key is not _NO_KEY or not (isinstance(inv, tuple) and len(inv) == 2):
            return False
        if f == "cas" and not (isinstance(inv[1], tuple) and len(inv[1]) == 2):
            return False
        if outcome == "ok" and done is not None and not (isinstance(done, tuple) and len(done) == 2
                                                          and done[0] == inv[0]):
            return False
    return True


def _edn_input(f: str, value: Any, path: str, line: int) -> tuple[Any, ...]:
    if f == "txn":
        if not isinstance(value, tuple):
            raise HistoryError(path, line, f"a :txn :value must be a vector of micro-ops such as "
                                           f"[[:r :x nil] [:w :y 2]], got {edn_text(value)}")
        mops = []
        for mop in value:
            if not (isinstance(mop, tuple) and len(mop) == 3 and _name(mop[0]) in ("r", "w")):
                raise HistoryError(path, line, f"a :txn micro-op must be [:r key value] or [:w key value], got {edn_text(mop)}")
            mops.append((_name(mop[0]), mop[1], mop[2]))
        return ("txn", tuple(mops))
    if f in _NO_ARG and value is None:
        return (f,)
    if f == "cas":
        if not (isinstance(value, tuple) and len(value) == 2):
            raise HistoryError(path, line, f"a :cas :value must be [old new], got {edn_text(value)}")
        return ("cas", *value)
    return (f, value)


def read_jepsen_edn(path: str, meaning: str = "jepsen") -> list[Op]:
    """The ops of a Jepsen EDN history (see `read_edn_history`; Porcupine's kv files,
    test_data/kv/*.txt, read the same under either meaning: they have no fail or info)."""
    return read_edn_history(path, meaning).ops


def guess_model(h: EdnHistory) -> str | None:
    """The model the ops of an EDN history call for, as Jepsen's tests pair them (None when
    the ops do not say): :txn multi-register, :acquire/:release mutex, :enqueue/:dequeue
    fifo-queue, :get/:put/:append kv, :cas/:read/:write cas-register (the same verdicts as
    register on read/write alone, and the compiled search), :add with collection reads set,
    :add counter."""
    fs = set(h.fs)
    if "txn" in fs:
        return "multi-register"
    if fs & {"acquire", "release"}:
        return "mutex"
    if fs & {"enqueue", "dequeue"}:
        return "fifo-queue"
    if fs & {"get", "put", "append"}:
        return "kv"
    if "add" in fs:
        if any(isinstance(v, (tuple, frozenset, list, set)) for v in h.read_values):
            return "set"
        return "counter"
    if fs & {"cas", "read", "write"}:
        return "cas-register"
    return None


def _input(f: str, value: Any) -> tuple[Any, ...]:
    if f in ("read", "get", "dequeue") and value is None:
        return (f,)
    if isinstance(value, list):
        return (f, *value)
    if isinstance(value, dict):
        return (f, *value.values())
    return (f, value)


ONCEPROOF_PROCESSES = ("load", "observer", "nemesis", "harness")  # onceproof's own (checkers/HISTORY.md)
_LOAD_N = re.compile(r"load-\d+")


def _own(process: Any) -> bool:
    """Whether `process` is one of onceproof's own processes (the load, observer, nemesis,
    harness), whose records (send, landed, progress, observe, faults, phases) are no client's
    operations of a model."""
    return isinstance(process, str) and (process in ONCEPROOF_PROCESSES or _LOAD_N.fullmatch(process) is not None)


def ops_from_history(h: History) -> list[Op]:
    """Client operations of one of our histories: the records of any process that is not one of
    onceproof's own (load, load-N, observer, nemesis, harness), as Jepsen's checkers keep only
    client ops (jepsen.history `client-ops`; Knossos skips :nemesis). Raises HistoryError on a
    completion with no invoke before it."""
    pairing = _Pairing(h.path or "<history>")
    for i, rec in enumerate(h):
        if _own(rec["process"]):
            continue
        if rec["type"] == "invoke":
            pairing.invoke(rec["process"], rec["time"], rec["f"], _input(rec["f"], rec["value"]))
        else:
            pairing.complete(rec["process"], rec["time"], rec["type"], rec["f"], rec["value"], i + 1)
    return pairing.finish()


@dataclass
class OnceproofOps:
    """The operations of one of our histories for the linearizability checker: `ops` (ids
    0..n-1), `lines` (op id -> the history line of its invoke; 0 for a write whose send was not
    recorded), `model` (a model name, or None: the caller's default) and `keyed` (inputs are
    (f, key, *args), each key its own register)."""

    ops: list[Op]
    lines: dict[int, int]
    model: str | None
    keyed: bool


def onceproof_ops(h: History) -> OnceproofOps:
    """The operations of a model in one of our histories. A run with a read workload
    (`workload.reads`: `read` records of `reader-N` processes) gives the ops the `reads` checker
    judges (checkers/reads.py): per key, the reads and the pipeline's writes (each event's state
    advance, from its send to its first sighting in the sink), in the max register model; the
    verdict is the same. Otherwise the client ops of `ops_from_history` (none in a run without
    reads: a run's other records are onceproof's own). Raises HistoryError (file, line, reason)."""
    readers = any(rec["f"] == reads.F_READ and str(rec["process"]).startswith("reader-") for rec in h)
    read_ops = reads._reads(h)[0] if readers else []
    if read_ops:
        writes = reads._writes(h, {op.input[1] for op in read_ops})
        found = [*(w for ws in writes.values() for w in ws), *read_ops]
        found.sort(key=lambda o: (o.call, o.id))
        ops, lines = [], {}
        for i, o in enumerate(found):
            ops.append(Op(i, o.process, o.call, o.ret, o.input, o.output))
            lines[i] = o.id + 1 if o.id >= 0 else 0
        return OnceproofOps(ops, {i: n for i, n in lines.items() if n}, "max-register", True)
    return OnceproofOps(ops_from_history(h), {}, None, False)
