"""Operation histories as `Op`s for the linearizability checker: Jepsen log lines, Jepsen
EDN op maps, and our own histories (checkers.history). Each reader returns a list of `Op`.

Conventions (the same as Porcupine's readers of the same files, so verdicts agree):
an op is its invoke paired with the next completion of the same process; `ok` gives the
output; a `cas` that ends `fail` returned false; a `read` that ends `fail` (timed out)
and any op that ends `info` or never completes has an UNKNOWN output and stays open
until the end of the history (ret = inf); any other `fail` certainly did not happen and
is dropped. Times are line numbers when the format has none.
"""
from __future__ import annotations

import math
import re
from typing import Any

from onceproof.checkers.history import History, HistoryError
from onceproof.checkers.linearizable import Op
from onceproof.checkers.models import UNKNOWN

_LOG_LINE = re.compile(r"^\S+\s+jepsen\.util\s+-\s+(\S+)\s+:(invoke|ok|fail|info)\s+:(\S+)\s*(.*?)\s*$")
_EDN_PAIR = re.compile(r':([\w\-?!]+)\s+("(?:[^"\\]|\\.)*"|\[[^\]]*\]|[^,\s}]+)')


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


class _Pairing:
    """Pairs invocations with completions per process."""

    def __init__(self, path: str) -> None:
        self.path = path
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
            raise HistoryError(self.path, line, f"a {typ} of process {process} with no invoke before it")
        _, _, f0, _ = self.open[process]
        if typ == "ok":
            out = True if f0 == "cas" else (value if f0 in ("read", "get", "dequeue") else None)
            self._close(process, t, out)
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
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().splitlines()
    except OSError as e:
        raise HistoryError(path, None, f"cannot open: {e.strerror or e}") from None


def read_jepsen_log(path: str) -> list[Op]:
    """Jepsen log lines: `INFO  jepsen.util - 3\t:invoke\t:cas\t[3 0]` (other lines are skipped)."""
    pairing = _Pairing(path)
    for n, line in enumerate(_read_lines(path), 1):
        m = _LOG_LINE.match(line)
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
    return pairing.finish()


def read_jepsen_edn(path: str) -> list[Op]:
    """Jepsen EDN op maps, one per line: `{:process 0, :type :invoke, :f :get, :key "7", :value nil}`."""
    pairing = _Pairing(path)
    for n, line in enumerate(_read_lines(path), 1):
        text = line.strip()
        if not text:
            continue
        if not (text.startswith("{") and text.endswith("}")):
            raise HistoryError(path, n, "expected an EDN map {:process .., :type .., :f .., :value ..}")
        fields = {k: v for k, v in _EDN_PAIR.findall(text)}
        missing = [k for k in ("process", "type", "f") if k not in fields]
        if missing:
            raise HistoryError(path, n, f"missing {', '.join(':' + k for k in missing)}")
        try:
            process: Any = int(fields["process"])
        except ValueError:
            continue  # :nemesis
        typ, f = fields["type"].lstrip(":"), fields["f"].lstrip(":")
        if typ not in ("invoke", "ok", "fail", "info"):
            raise HistoryError(path, n, f":type must be :invoke, :ok, :fail or :info, got {fields['type']}")
        value = _parse_value(fields.get("value", "nil"), path, n)
        key = _parse_value(fields["key"], path, n) if "key" in fields else None
        if typ == "invoke":
            inp = _input(f, value) if key is None else (f, key) + (() if f in ("get", "read") else (value,))
            pairing.invoke(process, n, f, inp)
        else:
            pairing.complete(process, n, typ, f, value, n)
    return pairing.finish()


def _input(f: str, value: Any) -> tuple[Any, ...]:
    if f in ("read", "get", "dequeue") and value is None:
        return (f,)
    if isinstance(value, list):
        return (f, *value)
    if isinstance(value, dict):
        return (f, *value.values())
    return (f, value)


def ops_from_history(h: History) -> list[Op]:
    """Client operations of one of our histories (not sends, sink reads, faults or phases)."""
    skip_f = {"send", "observe", "final-read", "state"}
    pairing = _Pairing(h.path or "<history>")
    for i, rec in enumerate(h):
        if rec["process"] in ("nemesis", "harness") or rec["f"] in skip_f:
            continue
        if rec["type"] == "invoke":
            pairing.invoke(rec["process"], rec["time"], rec["f"], _input(rec["f"], rec["value"]))
        else:
            pairing.complete(rec["process"], rec["time"], rec["type"], rec["f"], rec["value"], i + 1)
    return pairing.finish()
