"""The history record model and a fast, column-oriented reader (see checkers/HISTORY.md).

A history is JSON Lines, one operation per line:
`{"index", "time", "process", "type", "f", "value"}`. The reader loads it into numpy
columns in chunks (one `orjson.loads` per line, but mapped in C, never one Python
statement per line), interns event ids into small integers, and keeps the byte offset
of every line so that any record can be turned back into a dict on demand (for
examples in a report) without keeping ten million dicts alive.

A truncated last line (a harness killed with SIGKILL) is ignored and reported in
`History.warnings`; any other unreadable line raises `HistoryError(path, line, reason)`.
"""
from __future__ import annotations

import contextlib
import ctypes
import gc
import itertools
import mmap
import multiprocessing
import operator
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

INVOKE, OK, FAIL, INFO = 0, 1, 2, 3
TYPES = ("invoke", "ok", "fail", "info")
TYPE_CODE = {name: code for code, name in enumerate(TYPES)}
FIELDS = ("index", "time", "process", "type", "f", "value")

# f values with a meaning to the reader (the others are only kept as names)
SEND, OBSERVE, FINAL_READ, STATE = "send", "observe", "final-read", "state"

_CHUNK_BYTES = 16 << 20  # bytes read at a time
_BIG_LINE = 4 << 20  # an observation line this long is parsed slice by slice
_SLICE_BYTES = 2 << 20


class HistoryError(Exception):
    """An unreadable history: says which file, which line (1-based) and why."""

    def __init__(self, path: str | None, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = str(path or "<history>") + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Record:
    """One operation of a history."""

    index: int
    time: int
    process: str | int
    type: str
    f: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in FIELDS}


class History:
    """A history loaded into columns.

    Per record (n = len(history)): `time` (int64 ns), `type` (int8, see TYPES),
    `f` (int16 code into `f_names`), `process` (int32 code into `process_names`).
    Events (the ids found in sends and sink reads, interned as eid = 0, 1, ...):
    `event_ids[eid]`, `event_key[eid]` (code into `key_names`, -1 unknown), `event_seq[eid]`.
    Sends: `send_rec` (record number of each send record), `send_eid`.
    Sink reads (ok `observe` / `final-read` records): `obs_rec`, `obs_full`, `obs_final`;
    their effects in sink order: `eff_obs` (row in the obs columns), `eff_eid`.
    `state_recs`: record numbers of ok `state` records. `start`: value of the harness
    `start` record, if any.
    """

    def __init__(self) -> None:
        self.path: str | None = None
        self.truncated = False
        self.warnings: list[str] = []
        self.time = np.zeros(0, np.int64)
        self.type = np.zeros(0, np.int8)
        self.f = np.zeros(0, np.int16)
        self.process = np.zeros(0, np.int32)
        self.f_names: list[str] = []
        self.process_names: list[Any] = []
        self.event_ids: list[str] = []
        self.event_key = np.zeros(0, np.int32)
        self.event_seq = np.zeros(0, np.int64)
        self.key_names: list[str] = []
        self.send_rec = np.zeros(0, np.int64)
        self.send_eid = np.zeros(0, np.int64)
        self.obs_rec = np.zeros(0, np.int64)
        self.obs_full = np.zeros(0, bool)
        self.obs_final = np.zeros(0, bool)
        self.eff_obs = np.zeros(0, np.int32)
        self.eff_eid = np.zeros(0, np.int64)
        self.state_recs: list[int] = []
        self.start: dict[str, Any] | None = None
        self._offsets = np.zeros(1, np.int64)
        self._data: bytes | None = None  # in-memory source; else self.path is read on demand

    def __len__(self) -> int:
        return len(self.time)

    def f_code(self, name: str) -> int:
        """Code of an `f` name, or -1 if no record has it."""
        try:
            return self.f_names.index(name)
        except ValueError:
            return -1

    def raw(self, i: int) -> bytes:
        """The bytes of record `i` as they are in the file."""
        start, end = int(self._offsets[i]), int(self._offsets[i + 1])
        if self._data is not None:
            data = self._data[start:end]
        else:
            assert self.path is not None
            with open(self.path, "rb") as fh:
                fh.seek(start)
                data = fh.read(end - start)
        return data.split(b"\n", 1)[0]  # the last record may be followed by a dropped, cut line

    def record(self, i: int) -> dict[str, Any]:
        """Record number `i` (0-based, file order) as a dict."""
        rec = orjson.loads(self.raw(i))
        return {k: rec.get(k) for k in FIELDS} | {k: v for k, v in rec.items() if k not in FIELDS}

    def records(self, indices: Iterable[int]) -> list[dict[str, Any]]:
        return [self.record(int(i)) for i in indices]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record as a dict, in file order (slow: for small histories and reports)."""
        for i in range(len(self)):
            yield self.record(i)


# --------------------------------------------------------------------------- reading


def read_history(path: Any, native: bool | None = None) -> History:
    """Load a JSON Lines history file into columns. `native`: None (the compiled scanner when
    it is installed), False (pure Python), True (the compiled scanner, or an error)."""
    with _no_gc(), _no_hugepages():
        lib = _scan_lib(native)
        if lib is not None:
            hist = _read_native(path, lib)
            if hist is not None:
                return hist
            if native:
                raise HistoryError(path, None, "the compiled scanner could not read this file")
        return _read_history(path)


@contextlib.contextmanager
def _no_hugepages() -> Iterator[None]:
    # numpy asks for transparent huge pages for big arrays; with the kernel's defrag=madvise each
    # fault may then compact memory first, which made fresh arrays cost several times their copy
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:
        yield
        return
    was = _set_madvise_hugepage(False)
    try:
        yield
    finally:
        _set_madvise_hugepage(was)


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    # millions of short-lived containers: the cyclic GC would rescan them again and again
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_history(path: Any) -> History:
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise HistoryError(path, None, f"cannot open: {e.strerror or e}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        spec = _Spec(_id_prefix(fh.read(1 << 20)) or b"")
        try:
            mid = _middle(fh, size) if size >= _PARALLEL_MIN_BYTES and (os.cpu_count() or 1) > 1 else size
            if mid < size:
                parts = _parse_two(fh, path, spec, mid, size)
            else:
                parts = [_parse_span(fh, 0, size, spec, True)]
        except _LineError as e:
            raise HistoryError(path, _line_of(fh, e.offset), e.reason) from None
        hist = _merge(parts, spec.prefix.decode(), path, None)
        hist.warnings = [_cut_warning(path, _line_of(fh, int(w[1:]))) if w.startswith("\0") else w
                         for w in hist.warnings]
    return hist


def _cut_warning(path: Any, line: int) -> str:
    return (f"{path or '<history>'}:{line}: the last line is incomplete "
            "(the harness was probably killed while writing it); it was ignored")


def _middle(fh: Any, size: int) -> int:
    """The start of the first line at or after the middle of the file."""
    fh.seek(size // 2)
    pos = size // 2
    while True:
        buf = fh.read(1 << 16)
        if not buf:
            return size
        i = buf.find(b"\n")
        if i >= 0:
            return pos + i + 1
        pos += len(buf)


def _line_of(src: Any, offset: int) -> int:
    """1-based line number of the line that starts at byte `offset`."""
    if isinstance(src, bytes):
        return src.count(b"\n", 0, offset) + 1
    src.seek(0)
    n, pos = 0, 0
    while pos < offset:
        buf = src.read(min(16 << 20, offset - pos))
        if not buf:
            break
        n += buf.count(b"\n")
        pos += len(buf)
    return n + 1


def _parse_two(fh: Any, path: Any, spec: _Spec, mid: int, size: int) -> list[_Part]:
    """The second half in a forked process while this one reads the first."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(str(path), spec.prefix, mid, size, send), daemon=True)
    child.start()
    send.close()
    try:
        first = _parse_span(fh, 0, mid, spec, False)
        try:
            kind, payload = recv.recv()
        except EOFError:
            kind, payload = "crash", f"the reader process died (exit code {child.exitcode})"
    finally:
        recv.close()
        child.join()
    if kind == "error":
        raise _LineError(*payload)
    if kind != "ok":
        raise HistoryError(path, None, str(payload))
    return [first, payload]


def _child(path: str, prefix: bytes, start: int, end: int, conn: Any) -> None:
    gc.disable()
    try:
        with open(path, "rb") as fh:
            part = _parse_span(fh, start, end, _Spec(prefix), True)
        conn.send(("ok", part))
    except _LineError as e:
        conn.send(("error", (e.offset, e.reason)))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        conn.send(("crash", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def history_from_records(records: Iterable[dict[str, Any] | Record]) -> History:
    """A History from records in memory (tests, other tools): same code path as a file."""
    lines = [orjson.dumps(r.to_dict() if isinstance(r, Record) else r) for r in records]
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    return history_from_bytes(data)


def history_from_bytes(data: bytes, path: str | None = None, native: bool | None = None) -> History:
    with _no_gc():
        spec = _Spec(_id_prefix(data[:1 << 20]) or b"")
        lib = _scan_lib(native) if data else None
        try:
            parts = _native_parts(lib, data, spec) if lib is not None else None
            if parts is None and native:
                raise HistoryError(path, None, "the compiled scanner could not read this history")
            if parts is None:
                parts = [_parse_span(data, 0, len(data), spec, True)]
        except _LineError as e:
            raise HistoryError(path, _line_of(data, e.offset), e.reason) from None
        hist = _merge(parts, spec.prefix.decode(), path, data)
        hist.warnings = [_cut_warning(path, _line_of(data, int(w[1:]))) if w.startswith("\0") else w
                         for w in hist.warnings]
    return hist


_get_0 = operator.itemgetter(0)


def _checked(chunks: Iterator[list[Any]], path: str | None, line: int) -> Iterator[list[Any]]:
    try:
        yield from chunks
    except ValueError as e:
        raise HistoryError(path, line, str(e)) from None


def _short(v: Any) -> str:
    s = orjson.dumps(v, default=str).decode()
    return s if len(s) < 80 else s[:77] + "..."


def _send_problem(rec: Any) -> str | None:
    if rec.get("f") in (OBSERVE, FINAL_READ):
        return ('an ok "observe"/"final-read" needs a value {"full": bool, "events": '
                f'[[id, key, seq, replica], ...]}}; got {_short(rec.get("value"))}')
    return 'a "send" record needs a value {"id", "key", "seq"}; got ' + _short(rec.get("value"))


def _problem(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, got {_short(rec)}"
    missing = [k for k in ("time", "process", "type", "f") if k not in rec]
    if missing:
        return (f"missing field(s) {', '.join(missing)}; every record has "
                '{"index", "time", "process", "type", "f", "value"}')
    if rec["type"] not in TYPE_CODE:
        return f"type must be one of invoke, ok, fail, info; got {_short(rec['type'])}"
    if not isinstance(rec["time"], int) or isinstance(rec["time"], bool):
        return f"time must be an integer (ns since the run started); got {_short(rec['time'])}"
    if not isinstance(rec["f"], str):
        return f"f must be a string; got {_short(rec['f'])}"
    if not isinstance(rec["process"], (str, int)):
        return f"process must be a string or an integer; got {_short(rec['process'])}"
    return None


class _BigObservation(dict):  # type: ignore[type-arg]
    """A very long observe/final-read line, parsed slice by slice so that millions of
    effects never exist as Python lists all at once."""

    def __init__(self, line: bytes) -> None:
        key = line.find(b'"events":')
        start = line.find(b"[", key) if key >= 0 else -1
        end = line.rfind(b"]]")
        if key < 0 or start < 0 or end < start:
            super().__init__(orjson.loads(line))
            self.body = b""
        else:
            skeleton = orjson.loads(line[:start] + b"[]" + line[end + 2:])
            super().__init__(skeleton)
            self.body = line[start + 1:end + 1]  # "[...],[...],...,[...]"
        value = self.get("value")
        self.full = bool(value.get("full")) if isinstance(value, dict) else False
        if not self.body and isinstance(value, dict) and value.get("events"):
            self.body = orjson.dumps(value["events"])[1:-1]

    def chunks(self) -> Iterator[list[Any]]:
        body, pos, n = self.body, 0, len(self.body)
        while pos < n:
            cut = body.find(b"],[", pos + _SLICE_BYTES)
            end = n if cut < 0 else cut + 1
            try:
                yield orjson.loads(b"[" + body[pos:end] + b"]")
            except orjson.JSONDecodeError as e:
                raise ValueError(f"sink effects are not valid JSON: {e}") from None
            pos = end + 1


# --------------------------------------------------------------------------- bulk reading
#
# The writer (harness/history.py) emits every send in one fixed shape. Those lines are
# parsed in bulk: one compiled regex split over a whole chunk (captures of ~10 bytes, no
# dict per line), numpy for the columns, and event ids "<prefix><digits>" turned into
# integers (a table, not a dict). Any other line (observations, faults, phases, a send in
# another shape) goes through orjson one by one with the checks of `_Builder`; the effects
# of an observation are split by a second regex when they have the writer's shape.
# A big file is cut in two at a line boundary and the second half is read by a forked
# process (2 cores), each half in chunks of a few MiB so that memory stays bounded.

_FAST_CHUNK = 32 << 20
_PARALLEL_MIN_BYTES = 64 << 20
_STR = rb'[ !#-\[\]-~]*'  # printable ASCII without " and \: a JSON string read as is
_INT = rb'(?:0|[1-9]\d{0,17})'


def _id_prefix(sample: bytes) -> bytes | None:
    m = re.search(rb'"f":"send","value":\{"id":"([ !#-/:-\[\]-~]*)\d{1,18}"', sample)
    return m.group(1) if m else None


class _Spec:
    """How ids are turned into numbers: `prefix` + digits (one width, or without leading zeros)."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        p = re.escape(prefix)
        self.send_re = re.compile(
            rb'^\{"index":-?' + _INT + rb',"time":(' + _INT + rb'),"process":"load","type":"'
            rb'(?:invok(?=e)|o(?=k)|fai(?=l)|inf(?=o))(.)","f":"send","value":\{"id":"(?:' + p
            + rb'(\d{1,18})|(' + _STR + rb'))","key":"(' + _STR + rb')","seq":(' + _INT + rb')\}\}$', re.M)
        self.eff_re = re.compile(rb'\["' + p + rb'(\d{1,18})","' + _STR + rb'",-?' + _INT + rb',-?' + _INT
                                 + rb'\]')


def _digits(values: list[bytes], width: int = 19) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative decimal numbers (at most 18 digits) -> (int64 values, digit counts)."""
    n = len(values)
    if not n:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    m = np.array(values, dtype=f"S{width}").view(np.uint8).reshape(n, width)
    v = np.zeros(n, np.int64)
    lens = np.zeros(n, np.int64)
    for c in range(width):
        col = m[:, c]
        nz = col != 0
        if not nz.any():
            break
        d = col.astype(np.int64) - 48
        v = np.where(nz, v * 10 + d, v)
        lens += nz
    return v, lens


class _LineError(Exception):
    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset, self.reason = offset, reason


_TYPE_LAST = np.full(256, -1, np.int8)
for _name, _code in TYPE_CODE.items():
    _TYPE_LAST[ord(_name[-1])] = _code
_NL = b"\n"


class _Part:
    """What one stretch of a history file holds, with local codes (merged by `_merge`)."""

    def __init__(self) -> None:
        self.n = 0
        self.cols: dict[str, list[np.ndarray]] = {k: [] for k in (
            "time", "type", "f", "process", "off", "s_rec", "s_num", "s_width", "s_key", "s_seq")}
        self.f_names: list[str] = []
        self.f_index: dict[str, int] = {}
        self.proc_names: list[Any] = []
        self.proc_index: dict[Any, int] = {}
        self.key_names: list[str] = []
        self.key_index: dict[str, int] = {}
        self.s_str: list[tuple[int, str]] = []  # (send number in the part, id) for ids not numeric
        self.n_sends = 0
        self.obs_rec: list[int] = []
        self.obs_full: list[bool] = []
        self.obs_final: list[bool] = []
        self.eff_num: list[np.ndarray] = []  # per observation: numeric ids (-1: in eff_str)
        self.eff_width: list[np.ndarray] = []
        self.eff_str: list[list[tuple[int, str]]] = []
        self.state_recs: list[int] = []
        self.start: Any = None
        self.truncated_at: int | None = None  # offset of an ignored cut last line
        self.end = 0  # offset after the last byte consumed

    def f_code(self, f: Any) -> int:
        c = self.f_index.get(f)
        if c is None:
            if not isinstance(f, str):
                raise TypeError
            c = self.f_index[f] = len(self.f_names)
            self.f_names.append(f)
        return c

    def proc_code(self, p: Any) -> int:
        c = self.proc_index.get(p)
        if c is None:
            if not isinstance(p, (str, int)):
                raise TypeError
            c = self.proc_index[p] = len(self.proc_names)
            self.proc_names.append(p)
        return c

    def key_code(self, key: Any) -> int:
        if key is None:
            return -1
        key = str(key)
        c = self.key_index.get(key)
        if c is None:
            c = self.key_index[key] = len(self.key_names)
            self.key_names.append(key)
        return c


def _parse_chunk(part: _Part, spec: _Spec, chunk: bytes, base: int, at_eof: bool) -> None:
    """Lines of `chunk` (which starts a line at file offset `base` and ends one, or the file)."""
    pieces = spec.send_re.split(chunk)
    gaps = pieces[0::7]
    n_m = len(gaps) - 1
    # lines that are not fast sends sit in the gaps between matches (a gap of one "\n" holds none)
    odd = list(itertools.compress(range(n_m + 1), map(_NL.__ne__, gaps)))
    n_lines_in = np.zeros(n_m + 1, np.int64)
    other: list[tuple[int, int, bytes]] = []  # (gap, line in gap, text)
    last_cut = False
    for i in odd:
        g = gaps[i]
        body = g if i == 0 else g[1:]
        if not body:
            continue
        lines = body.split(_NL)
        if lines[-1] == b"":
            lines.pop()
        elif i == n_m:
            last_cut = at_eof  # the file ends without a newline: the line may have been cut
        n_lines_in[i] = len(lines)
        other.extend((i, j, x) for j, x in enumerate(lines))
    cum = np.cumsum(n_lines_in)
    match_line = np.arange(n_m, dtype=np.int64) + cum[:n_m]
    n_lines = n_m + int(cum[-1])
    a = np.frombuffer(chunk, np.uint8)
    nl = np.flatnonzero(a == 10)
    line_start = np.empty(n_lines + 1, np.int64)
    line_start[0] = 0
    k = min(len(nl), n_lines)
    line_start[1:k + 1] = nl[:k] + 1
    line_start += base
    # the other lines, one by one
    o_line: list[int] = []
    o_sends: list[tuple[int, int, str, int, int]] = []  # (record in chunk order slot, type, id, key, seq)
    slow: list[tuple[int, bytes]] = []
    for gi, j, x in other:
        if not x.strip():
            continue
        li = gi + int(cum[gi]) - int(n_lines_in[gi]) + j
        o_line.append(li)
        slow.append((li, x))
    n_o = len(o_line)
    o_line_arr = np.array(o_line, np.int64)
    # record number in the part of each match and each other line
    m_pos = np.arange(n_m, dtype=np.int64) + np.searchsorted(o_line_arr, match_line)
    o_pos = np.searchsorted(match_line, o_line_arr) + np.arange(n_o, dtype=np.int64)
    n_rec = n_m + n_o
    rec0 = part.n
    times = np.empty(n_rec, np.int64)
    types = np.empty(n_rec, np.int8)
    fs = np.empty(n_rec, np.int16)
    procs = np.empty(n_rec, np.int32)
    offs = np.empty(n_rec, np.int64)
    offs[m_pos] = line_start[match_line]
    # the other lines, parsed one by one (first those before the first fast send: codes of f and
    # process are numbered in file order)
    results: list[Any] = []
    n_early = int(np.searchsorted(o_line_arr, match_line[0])) if n_m else n_o
    for (li, x), pos in zip(slow, o_pos.tolist()):
        if len(results) == n_early:
            break
        results.append(_slow_line(part, spec, x, int(line_start[li]), rec0 + pos,
                                  last_cut and li == n_lines - 1))
    if n_m:
        times[m_pos] = _digits(pieces[1::7])[0]
        m_type = _TYPE_LAST[np.array(pieces[2::7], dtype="S1").view(np.uint8)]
        types[m_pos] = m_type
        fs[m_pos] = part.f_code(SEND)
        procs[m_pos] = part.proc_code("load")
        nums = pieces[3::7]
        if None in nums:
            strs = pieces[4::7]
            for i in itertools.compress(range(n_m), map(operator.is_, nums, itertools.repeat(None))):
                part.s_str.append((part.n_sends + i, strs[i].decode()))
                nums[i] = b"0"
        num, width = _digits(nums)
        if part.s_str and part.s_str[-1][0] >= part.n_sends:
            for s, _ in part.s_str:
                if s >= part.n_sends:
                    num[s - part.n_sends] = -1
        keys = pieces[5::7]
        kmap = {kb: part.key_code(kb.decode()) for kb in dict.fromkeys(keys)}
        m_key = np.array(list(map(kmap.__getitem__, keys)), np.int32)
        m_seq = _digits(pieces[6::7])[0]
    # sends and observations of the other lines, in file order with the fast sends
    for k, ((li, x), pos) in enumerate(zip(slow, o_pos.tolist())):
        rec = results[k] if k < n_early else _slow_line(part, spec, x, int(line_start[li]), rec0 + pos,
                                                        last_cut and li == n_lines - 1)
        if rec is None:  # an ignored cut last line
            n_rec -= 1
            continue
        t, typ, fc, pc, send = rec
        times[pos], types[pos], fs[pos], procs[pos] = t, typ, fc, pc
        offs[pos] = line_start[li]
        if send is not None:
            o_sends.append((pos, typ) + send)
    if n_rec < n_m + n_o:  # drop the slot of the cut line (always the last)
        times, types, fs, procs, offs = times[:n_rec], types[:n_rec], fs[:n_rec], procs[:n_rec], offs[:n_rec]
    c = part.cols
    c["time"].append(times)
    c["type"].append(types)
    c["f"].append(fs)
    c["process"].append(procs)
    c["off"].append(offs)
    # sends: fast and slow merged in record order
    if o_sends:
        s_pos = np.concatenate([m_pos, np.array([s[0] for s in o_sends], np.int64)]) if n_m else \
            np.array([s[0] for s in o_sends], np.int64)
        order = np.argsort(s_pos, kind="stable")
        o_num = np.full(len(o_sends), -1, np.int64)
        o_width = np.zeros(len(o_sends), np.int64)
        o_key = np.array([s[3] for s in o_sends], np.int32)
        o_seq = np.array([s[4] for s in o_sends], np.int64)
        if n_m:
            all_num = np.concatenate([num, o_num])[order]
            all_width = np.concatenate([width, o_width])[order]
            all_key = np.concatenate([m_key, o_key])[order]
            all_seq = np.concatenate([m_seq, o_seq])[order]
        else:
            all_num, all_width, all_key, all_seq = o_num, o_width, o_key, o_seq
        inv = np.empty(len(order), np.int64)
        inv[order] = np.arange(len(order))  # where each input row went
        # the string ids of fast sends moved too
        moved = [(part.n_sends + int(inv[s - part.n_sends]), v) for s, v in part.s_str if s >= part.n_sends]
        part.s_str = [sv for sv in part.s_str if sv[0] < part.n_sends] + moved
        for k, s in enumerate(o_sends):
            part.s_str.append((part.n_sends + int(inv[n_m + k]), s[2]))
        s_rec = s_pos[order] + rec0
    elif n_m:
        all_num, all_width, all_key, all_seq, s_rec = num, width, m_key, m_seq, m_pos + rec0
    else:
        all_num = None
    if all_num is not None:
        c["s_rec"].append(s_rec)
        c["s_num"].append(all_num)
        c["s_width"].append(all_width)
        c["s_key"].append(all_key)
        c["s_seq"].append(all_seq)
        part.n_sends += len(all_num)
    part.n += n_rec
    part.end = base + len(chunk)


def _slow_line(part: _Part, spec: _Spec, x: bytes, off: int, rec: int, may_be_cut: bool, d: Any = None,
               effects: Any = None) -> Any:
    if d is None:
        try:
            d = _BigObservation(x) if len(x) > _BIG_LINE else orjson.loads(x)
        except (orjson.JSONDecodeError, ValueError) as e:
            if may_be_cut:
                part.truncated_at = off
                return None
            raise _LineError(off, f"not valid JSON: {e}") from None
    try:
        f = d["f"]
        typ = TYPE_CODE[d["type"]]
        t = d["time"]
        fc = part.f_code(f)
        pc = part.proc_code(d["process"])
        if t.__class__ is not int or not -(1 << 63) <= t < (1 << 63):
            raise TypeError
        send = None
        if f == SEND:
            v = d["value"]
            event_id = v["id"]
            hash(event_id)
            if not isinstance(event_id, str):
                event_id = str(event_id)
            sq = v.get("seq")
            send = (event_id, part.key_code(v.get("key")), sq if sq.__class__ is int else -1)
        elif typ == OK and (f == OBSERVE or f == FINAL_READ):
            _observation(part, spec, d, x, off, rec, f == FINAL_READ, effects)
        elif typ == OK and f == STATE:
            part.state_recs.append(rec)
        elif f == "start" and part.start is None and isinstance(d.get("value"), dict):
            part.start = d["value"]
    except _LineError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError):
        raise _LineError(off, _problem(d) or _send_problem(d) or "malformed record") from None
    return t, typ, fc, pc, send


def _observation(part: _Part, spec: _Spec, d: Any, x: bytes, off: int, rec: int, final: bool,
                 effects: Any = None) -> None:
    if effects is not None:  # read by the C scanner (checked: value is a dict, events in the writer's shape)
        part.obs_rec.append(rec)
        part.obs_full.append(bool(d["value"].get("full", final) or final))
        part.obs_final.append(final)
        part.eff_num.append(effects[0])
        part.eff_width.append(effects[1])
        part.eff_str.append([])
        return
    if isinstance(d, _BigObservation):
        full, body, chunks = d.full, d.body, None
    else:
        value = d.get("value")
        if not isinstance(value, dict) or not isinstance(value.get("events", []), list):
            raise _LineError(off, 'an ok "observe"/"final-read" needs a value {"full": bool, '
                                  '"events": [[id, key, seq, replica], ...]}; got ' + _short(value))
        full = bool(value.get("full", final))
        events = value.get("events") or []
        body, chunks = None, [events]
        if len(events) > 64:  # the writer's shape: split the raw text instead of walking lists
            s = x.find(b'"events":[')
            e = x.rfind(b"]]")
            if s >= 0 and e > s:
                body = x[s + 10:e + 1]
    nums: list[np.ndarray] = []
    widths: list[np.ndarray] = []
    strs: list[tuple[int, str]] = []
    count = 0
    fast_ok = body is not None and spec.prefix is not None
    if fast_ok:
        assert body is not None
        pos, n = 0, len(body)
        got: list[tuple[np.ndarray, np.ndarray]] = []
        while pos < n and fast_ok:
            cut = body.find(b"],[", pos + _SLICE_BYTES)
            end = n if cut < 0 else cut + 1
            pieces = spec.eff_re.split(body[pos:end])
            k = (len(pieces) - 1) // 2
            if k == 0 or pieces[0] or pieces[-1] or pieces[2:-1:2].count(b",") != k - 1:
                fast_ok = False
                break
            got.append(_digits(pieces[1::2]))
            pos = end + 1
        if fast_ok:
            for v, w in got:
                nums.append(v)
                widths.append(w)
                count += len(v)
    if not fast_ok:
        nums, widths, strs, count = [], [], [], 0
        if chunks is None:
            assert isinstance(d, _BigObservation)
            chunks = d.chunks()
        try:
            all_events = list(chunks)
        except ValueError as e:
            raise _LineError(off, str(e)) from None
        for events in all_events:
            try:
                ids = list(map(_get_0, events))
            except (IndexError, TypeError, KeyError):
                raise _LineError(off, "each sink effect must be [id, key, seq, replica]") from None
            for j, i in enumerate(ids):
                hash(i)
                strs.append((count + j, i if isinstance(i, str) else str(i)))
            count += len(ids)
        nums = [np.full(count, -1, np.int64)]
        widths = [np.zeros(count, np.int64)]
    part.obs_rec.append(rec)
    part.obs_full.append(bool(full or final))
    part.obs_final.append(final)
    part.eff_num.append(np.concatenate(nums) if len(nums) != 1 else nums[0])
    part.eff_width.append(np.concatenate(widths) if len(widths) != 1 else widths[0])
    part.eff_str.append(strs)


def _parse_span(src: Any, start: int, end: int, spec: _Spec, at_eof: bool) -> _Part:
    """Records of bytes [start, end) of `src` (an open file or bytes), chunk by chunk."""
    part = _Part()
    pos = start
    while pos < end:
        want = min(_FAST_CHUNK, end - pos)
        while True:
            if isinstance(src, bytes):
                buf = src[pos:pos + want]
            else:
                src.seek(pos)
                buf = src.read(want)
            if pos + len(buf) >= end:
                cut = len(buf)
                break
            cut = buf.rfind(b"\n") + 1
            if cut > 0:
                break
            want *= 2  # a line longer than a chunk
        last = pos + cut >= end
        _parse_chunk(part, spec, buf[:cut] if cut < len(buf) else buf, pos, at_eof and last)
        pos += cut
    part.end = end
    return part


class _EventIds(Sequence):  # type: ignore[type-arg]
    """`History.event_ids` without ten million str objects: ids "<prefix><digits>" are kept as
    numbers and formatted on access; any other id is kept as it is."""

    def __init__(self, prefix: str, width: int, nums: np.ndarray, strs: dict[int, str]) -> None:
        self.prefix, self.width, self.nums, self.strs = prefix, width, nums, strs
        self._rev: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.nums)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = int(self.nums[i])
        if n < 0:
            return self.strs[i if i >= 0 else i + len(self)]
        return f"{self.prefix}{n:0{self.width}d}"

    def index(self, value: Any, start: int = 0, stop: Any = None) -> int:
        if isinstance(value, str):
            rest = value[len(self.prefix):] if value.startswith(self.prefix) else ""
            if rest.isdigit() and rest.isascii() and len(rest) <= 18 and (
                    len(rest) == self.width or (self.width == 0 and str(int(rest)) == rest)):
                hits = np.flatnonzero(self.nums == int(rest))
                hits = hits[hits >= start] if stop is None else hits[(hits >= start) & (hits < stop)]
                if len(hits):
                    return int(hits[0])
            if self._rev is None:
                self._rev = {}
                for k, v in sorted(self.strs.items(), reverse=True):
                    self._rev[v] = k
            k = self._rev.get(value)
            if k is not None and k >= start and (stop is None or k < stop):
                return k
        raise ValueError(f"{value!r} is not in list")

    def __contains__(self, value: Any) -> bool:
        try:
            self.index(value)
            return True
        except ValueError:
            return False

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, (list, tuple, _EventIds)):
            return len(self) == len(other) and list(self) == list(other)
        return NotImplemented

    def __repr__(self) -> str:
        return repr(list(self)) if len(self) < 20 else f"<{len(self)} event ids>"


def _remap(names: list[Any], index: dict[Any, int], out: list[Any], dtype: Any) -> np.ndarray:
    codes = []
    for name in names:
        c = index.get(name)
        if c is None:
            c = index[name] = len(out)
            out.append(name)
        codes.append(c)
    return np.array(codes + [0], dtype=dtype)


def _merge(parts: list[_Part], prefix: str, path: str | None, data: bytes | None) -> History:
    h = History()
    h.path, h._data = path, data
    f_index: dict[Any, int] = {}
    p_index: dict[Any, int] = {}
    k_index: dict[Any, int] = {}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in (
        "time", "type", "f", "process", "off", "s_rec", "s_num", "s_width", "s_key", "s_seq",
        "obs_rec", "eff_num", "eff_width", "eff_obs", "eff_base")}
    s_str: list[tuple[int, str]] = []
    e_str: list[tuple[int, str]] = []
    rec_base = send_base = obs_base = eff_base = 0
    for part in parts:
        fmap = _remap(part.f_names, f_index, h.f_names, np.int16)
        pmap = _remap(part.proc_names, p_index, h.process_names, np.int32)
        kmap = _remap(part.key_names, k_index, h.key_names, np.int32)

        def cat(k: str, dt: Any, c: dict[str, list[np.ndarray]] = part.cols) -> np.ndarray:
            got, c[k] = c[k], []  # the part's arrays go as soon as they are joined
            return (got[0] if len(got) == 1 else np.concatenate(got)) if got else np.zeros(0, dt)

        def mapped(k: str, dt: Any, table: np.ndarray) -> np.ndarray:
            codes = cat(k, dt)
            if np.array_equal(table[:-1], np.arange(len(table) - 1)):
                return codes  # the same numbering (always for the first part)
            return table[codes]

        cols["time"].append(cat("time", np.int64))
        cols["type"].append(cat("type", np.int8))
        cols["f"].append(mapped("f", np.int16, fmap))
        cols["process"].append(mapped("process", np.int32, pmap))
        cols["off"].append(cat("off", np.int64))
        cols["s_rec"].append(cat("s_rec", np.int64) + rec_base)
        cols["s_num"].append(cat("s_num", np.int64))
        cols["s_width"].append(cat("s_width", np.int64))
        keys = cat("s_key", np.int32)
        if not np.array_equal(kmap[:-1], np.arange(len(kmap) - 1)):
            keys = np.where(keys >= 0, kmap[keys], -1)
        cols["s_key"].append(keys)
        cols["s_seq"].append(cat("s_seq", np.int64))
        s_str.extend((s + send_base, v) for s, v in part.s_str)
        cols["obs_rec"].append(np.array(part.obs_rec, np.int64) + rec_base)
        h_full = part.obs_full
        h.obs_full = np.append(h.obs_full, np.array(h_full, bool))
        h.obs_final = np.append(h.obs_final, np.array(part.obs_final, bool))
        for j, (nums, widths, strs) in enumerate(zip(part.eff_num, part.eff_width, part.eff_str)):
            cols["eff_num"].append(nums)
            cols["eff_width"].append(widths)
            cols["eff_obs"].append(np.full(len(nums), obs_base + j, np.int32))
            cols["eff_base"].append(np.arange(len(nums), dtype=np.int64))
            e_str.extend((s + eff_base, v) for s, v in strs)
            eff_base += len(nums)
        h.state_recs.extend(r + rec_base for r in part.state_recs)
        if h.start is None and part.start is not None:
            h.start = part.start
        if part.truncated_at is not None:
            h.truncated = True
            h.warnings.append(f"\0{part.truncated_at}")  # line number filled in by the caller
        rec_base += part.n
        send_base += part.n_sends
        obs_base += len(part.obs_rec)

    def join(k: str, dt: Any) -> np.ndarray:
        got, cols[k] = cols[k], []
        if not got:
            return np.zeros(0, dt)
        return (got[0] if len(got) == 1 else np.concatenate(got)).astype(dt, copy=False)

    h.time, h.type, h.f, h.process = join("time", np.int64), join("type", np.int8), join("f", np.int16), join(
        "process", np.int32)
    h._offsets = np.append(join("off", np.int64), parts[-1].end if parts else 0)
    h.send_rec = join("s_rec", np.int64)
    h.obs_rec = join("obs_rec", np.int64)
    h.eff_obs = join("eff_obs", np.int32)
    s_num, s_width, s_key, s_seq = join("s_num", np.int64), join("s_width", np.int8), join(
        "s_key", np.int32), join("s_seq", np.int64)
    e_num, e_width, e_pos = join("eff_num", np.int64), join("eff_width", np.int8), join("eff_base", np.int64)
    _intern(h, prefix, s_num, s_width, s_str, e_num, e_width, e_str, e_pos,
            s_key, s_seq, h.raw)
    return h


def _intern(h: History, prefix: str, s_num: np.ndarray, s_width: np.ndarray, s_str: list[tuple[int, str]],
            e_num: np.ndarray, e_width: np.ndarray, e_str: list[tuple[int, str]], e_pos: np.ndarray,
            s_key: np.ndarray, s_seq: np.ndarray, raw: Any) -> None:
    """Event numbers (eid) in order of first appearance, as the one-line-at-a-time reader gives them."""
    # ids given as text that have the numeric shape become numbers too
    for lst, num, width in ((s_str, s_num, s_width), (e_str, e_num, e_width)):
        keep = []
        for i, v in lst:
            rest = v[len(prefix):] if v.startswith(prefix) else ""
            if 0 < len(rest) <= 18 and rest.isdigit() and rest.isascii():
                num[i], width[i] = int(rest), len(rest)
            else:
                keep.append((i, v))
        lst[:] = keep
    numeric = np.concatenate([s_num, e_num])
    widths = np.concatenate([s_width, e_width])
    is_num = numeric >= 0
    w_count = np.bincount(widths[is_num], minlength=1) if is_num.any() else np.zeros(0, np.int64)
    w_used = np.flatnonzero(w_count)
    width = int(w_used[0]) if len(w_used) else 0
    if len(w_used) > 1:
        canonical = (numeric >= np.power(10, np.maximum(widths.astype(np.int64) - 1, 0))) | (widths == 1)
        if bool(np.all(canonical[is_num])):
            width = 0
        else:  # one width is numeric, ids of other widths are kept as text
            vals, counts = np.unique(widths[is_num], return_counts=True)
            width = int(vals[np.argmax(counts)])
            odd = np.flatnonzero(is_num & (widths != width))
            ns = len(s_num)
            for i in odd.tolist():
                text = prefix + str(int(numeric[i])).zfill(int(widths[i]))
                (s_str if i < ns else e_str).append((i if i < ns else i - ns, text))
                numeric[i] = -1
            s_str.sort()
            e_str.sort()
            is_num = numeric >= 0
    # tokens: numbers (made dense when sparse), then text ids after them
    n_tok = len(numeric)
    top = int(numeric.max()) + 1 if n_tok and is_num.any() else 0
    uniq = None
    if top > 4 * n_tok + (1 << 20):
        uniq, inv = np.unique(numeric[is_num], return_inverse=True)
        numeric = numeric.copy()
        numeric[is_num] = inv
        top = len(uniq)
    text_code: dict[str, int] = {}
    ns = len(s_num)
    for i, v in s_str:
        numeric[i] = top + text_code.setdefault(v, len(text_code))
    for i, v in e_str:
        numeric[ns + i] = top + text_code.setdefault(v, len(text_code))
    size = top + len(text_code)
    s_tok, e_tok = numeric[:ns], numeric[ns:]
    # first appearance: sends by record, effects by (record of their read, position in it)
    big = int(e_pos.max()) + 2 if len(e_pos) else 1
    s_at = h.send_rec * big
    e_at = h.obs_rec[h.eff_obs] * big + e_pos + 1 if len(e_pos) else np.zeros(0, np.int64)
    never = np.iinfo(np.int64).max
    first = np.full(size, never, np.int64)
    first[s_tok[::-1]] = s_at[::-1]
    if len(e_tok):
        e_first = np.full(size, never, np.int64)
        e_first[e_tok[::-1]] = e_at[::-1]
        np.minimum(first, e_first, out=first)
        del e_first
    fs = np.flatnonzero(first[s_tok] == s_at)
    fe = np.flatnonzero(first[e_tok] == e_at) if len(e_tok) else np.zeros(0, np.int64)
    del first
    toks = s_tok[fs]
    if len(fe):
        toks = np.insert(toks, np.searchsorted(s_at[fs], e_at[fe]), e_tok[fe])
    n_ev = len(toks)
    eid_of = np.full(size, -1, np.int64)
    eid_of[toks] = np.arange(n_ev)
    h.send_eid = eid_of[s_tok]
    h.eff_eid = eid_of[e_tok]
    del eid_of
    # ids back: numbers per eid, text for the others
    nums = toks.copy()
    text_ids = {}
    is_text = toks >= top
    if is_text.any():
        names = list(text_code)
        for e in np.flatnonzero(is_text).tolist():
            text_ids[e] = names[int(toks[e]) - top]
        nums[is_text] = -1
    if uniq is not None:
        nums[~is_text] = uniq[nums[~is_text]]
    if len(text_ids) == n_ev:
        h.event_ids = [text_ids[e] for e in range(n_ev)]
    else:
        h.event_ids = _EventIds(prefix, width, nums, text_ids)  # type: ignore[assignment]
    # key and seq: the first appearance sets them, every later invoke overwrites them
    ek = np.full(n_ev, -1, np.int32)
    es = np.full(n_ev, -1, np.int64)
    ek[h.send_eid[fs]] = s_key[fs]
    es[h.send_eid[fs]] = s_seq[fs]
    s_type = h.type[h.send_rec]
    inv = np.flatnonzero(s_type == INVOKE)
    ek[h.send_eid[inv]] = s_key[inv]
    es[h.send_eid[inv]] = s_seq[inv]
    # the rare rest, one by one as the original rules say: events first seen in the sink, and
    # sends without a key (a later completion may then set it)
    odd_eids = set(h.eff_eid[fe].tolist()) | set(h.send_eid[s_key < 0].tolist())
    if odd_eids:
        _replay(h, sorted(odd_eids), fe, e_pos, s_key, s_seq, s_type, ek, es, raw)
    h.event_key, h.event_seq = ek, es


def _replay(h: History, eids: list[int], fe: np.ndarray, e_pos: np.ndarray, s_key: np.ndarray,
            s_seq: np.ndarray, s_type: np.ndarray, ek: np.ndarray, es: np.ndarray, raw: Any) -> None:
    want = np.array(eids, np.int64)
    first_effect: dict[int, tuple[int, int]] = {}  # eid -> (record, position in the read)
    for i in fe.tolist():
        e = int(h.eff_eid[i])
        first_effect[e] = (int(h.obs_rec[h.eff_obs[i]]), int(e_pos[i]))
    described: dict[int, tuple[int, int]] = {}
    by_rec: dict[int, list[tuple[int, int]]] = {}
    for e, (rec, j) in first_effect.items():
        if e in set(eids):
            by_rec.setdefault(rec, []).append((j, e))
    for rec, wanted in by_rec.items():
        d = _BigObservation(raw(rec))
        events: list[Any] = []
        for chunk in d.chunks():
            events.extend(chunk)
        for j, e in wanted:
            ev = events[j]
            key = ev[1] if len(ev) > 1 else None
            seq = ev[2] if len(ev) > 2 else None
            kc = -1
            if key is not None:
                key = str(key)
                if key not in h.key_names:
                    h.key_names.append(key)
                kc = h.key_names.index(key)
            described[e] = (kc, seq if isinstance(seq, int) else -1)
    rows = np.flatnonzero(np.isin(h.send_eid, want))
    items: dict[int, list[tuple[int, int, int, int]]] = {e: [] for e in eids}  # (at, type, key, seq)
    for r in rows.tolist():
        items[int(h.send_eid[r])].append((int(h.send_rec[r]) * 2, int(s_type[r]), int(s_key[r]), int(s_seq[r])))
    for e in eids:
        seq_items = items[e]
        if e in first_effect:
            rec, _ = first_effect[e]
            kc, sq = described[e]
            seq_items.append((rec * 2 - 1, -1, kc, sq))
        seq_items.sort()
        k, s = -1, -1
        for n, (_, typ, kc, sq) in enumerate(seq_items):
            if n == 0 or typ == INVOKE or (typ >= 0 and k < 0):
                k, s = kc, sq
        ek[e], es[e] = k, s


# --------------------------------------------------------------------------- compiled scanner
#
# checkers/history_scan.c does the line loop in C over an mmap of the file (built by `onceproof
# setup` into $ONCEPROOF_HOME/lib): sends of the writer's shape land in numpy columns, the other
# lines are handed back as byte ranges and parsed here as above; the events of an observation in
# the writer's shape are read by C too (the rest of its line, without them, by orjson). A big
# file is scanned in two halves by two threads (ctypes releases the GIL). Without the library,
# or if it gives up, the pure-Python reader above runs: same History.

_SCAN_MIN_LINE = 16  # capacity of the columns: no record line is shorter (pages never used cost nothing)
_SEND_MIN_LINE = 80  # nor any send of the writer's shape
_SKELETON_MIN = 2048  # an other line longer than this may be an observation whose events C reads
_THREADS_MIN_BYTES = 8 << 20
_scan: Any = None
_scan_tried = False


class _HsOut(ctypes.Structure):
    _fields_ = [(name, ctypes.c_int64) for name in ("cap_rec", "cap_send", "cap_other")] + [
        (name, ctypes.c_void_p) for name in ("r_time", "r_off", "r_type", "s_rec", "s_num", "s_width", "s_seq",
                                             "s_key", "sid_send", "sid_start", "sid_end", "o_rec", "o_start",
                                             "o_end", "k_start", "k_end")] + [
        (name, ctypes.c_int64) for name in ("n_rec", "n_send", "n_other", "n_sid", "n_key", "cut_start")]


_HS_ARRAYS = {"r_time": np.int64, "r_off": np.int64, "r_type": np.int8, "s_rec": np.int64, "s_num": np.int64,
              "s_width": np.int64, "s_seq": np.int64, "s_key": np.int32, "sid_send": np.int64,
              "sid_start": np.int64, "sid_end": np.int64, "o_rec": np.int64, "o_start": np.int64,
              "o_end": np.int64, "k_start": np.int64, "k_end": np.int64}


def scan_library_path() -> Path:
    home = os.environ.get("ONCEPROOF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "onceproof")
    return Path(home) / "lib" / "libonceproof_scan.so"


def _scan_lib(native: bool | None) -> Any:
    global _scan, _scan_tried
    if native is False:
        return None
    if not _scan_tried:
        _scan_tried = True
        try:
            lib = ctypes.CDLL(str(scan_library_path()))
        except OSError:
            lib = None
        if lib is not None:
            p, i64 = ctypes.c_void_p, ctypes.c_int64
            lib.hs_scan.restype = ctypes.c_int
            lib.hs_scan.argtypes = [p, i64, i64, ctypes.c_char_p, ctypes.c_int, p, ctypes.c_int]
            lib.hs_effects.restype = i64
            lib.hs_effects.argtypes = [p, i64, i64, ctypes.c_char_p, ctypes.c_int, p, p, i64, ctypes.c_int]
        _scan = lib
    if _scan is None and native:
        raise HistoryError(None, None, f"the compiled history scanner is not installed ({scan_library_path()}); "
                                       "run `onceproof setup`")
    return _scan


def _read_native(path: Any, lib: Any) -> History | None:
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise HistoryError(path, None, f"cannot open: {e.strerror or e}") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return None
        spec = _Spec(_id_prefix(fh.read(1 << 20)) or b"")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            with contextlib.suppress(AttributeError, OSError):
                mm.madvise(mmap.MADV_SEQUENTIAL)
            try:
                parts = _native_parts(lib, mm, spec)
            except _LineError as e:
                raise HistoryError(path, _line_of(fh, e.offset), e.reason) from None
            if parts is None:
                return None
            hist = _merge(parts, spec.prefix.decode(), path, None)
            del parts
        finally:
            mm.close()
        hist.warnings = [_cut_warning(path, _line_of(fh, int(w[1:]))) if w.startswith("\0") else w
                         for w in hist.warnings]
    return hist


def _native_parts(lib: Any, src: Any, spec: _Spec) -> list[_Part] | None:
    """The records of `src` (bytes or an mmap), scanned in C: one part, or two (halves, threads)."""
    size = len(src)
    drop = isinstance(src, mmap.mmap)  # a file mapping: pages read can be given back
    arr = np.frombuffer(src, np.uint8)
    try:
        addr = arr.ctypes.data
        spans = [(0, size)]
        if size >= _THREADS_MIN_BYTES and (os.cpu_count() or 1) > 1:
            mid = src.find(b"\n", size // 2)
            if 0 <= mid < size - 1:
                spans = [(0, mid + 1), (mid + 1, size)]
        outs: list[Any] = [None] * len(spans)

        def scan(i: int) -> None:
            outs[i] = _scan_span(lib, addr, spans[i][0], spans[i][1], spec, drop)

        if len(spans) > 1:
            t = threading.Thread(target=scan, args=(1,))
            t.start()
            try:
                scan(0)
            finally:
                t.join()
        else:
            scan(0)
        if any(o is None for o in outs):
            return None
        parts = []
        for k, ((start, end), out) in enumerate(zip(spans, outs)):
            parts.append(_native_part(lib, addr, src, spec, start, end, out, k == len(spans) - 1, drop))
            outs[k] = None
        return parts
    finally:
        del arr


def _scan_span(lib: Any, addr: int, start: int, end: int, spec: _Spec, drop: bool) -> Any:
    n = end - start
    caps = {"rec": n // _SCAN_MIN_LINE + 2, "send": n // _SEND_MIN_LINE + 2, "other": n // _SCAN_MIN_LINE + 2}
    cap_of = {"r": "rec", "s": "send", "o": "other", "k": "send"}
    arrays = {name: np.empty(caps[cap_of[name[0]]], dt) for name, dt in _HS_ARRAYS.items()}
    out = _HsOut(cap_rec=caps["rec"], cap_send=caps["send"], cap_other=caps["other"],
                 **{name: a.ctypes.data for name, a in arrays.items()})
    rc = lib.hs_scan(addr, start, end, spec.prefix, len(spec.prefix), ctypes.byref(out), drop)
    if rc != 0:
        return None
    n_of = {"r": out.n_rec, "s": out.n_send, "o": out.n_other, "k": out.n_key}
    got = {name: a[:out.n_sid if name.startswith("sid") else n_of[name[0]]] for name, a in arrays.items()}
    got["cut_start"] = out.cut_start
    return got


def _native_part(lib: Any, addr: int, src: Any, spec: _Spec, start: int, end: int, out: dict[str, Any],
                 at_eof: bool, drop: bool) -> _Part:
    part = _Part()
    times, types, offs = out["r_time"], out["r_type"], out["r_off"]
    n_rec = len(times)
    s_rec = out["s_rec"]
    n_m = len(s_rec)
    part.key_names = [src[a:b].decode() for a, b in zip(out["k_start"].tolist(), out["k_end"].tolist())]
    part.key_index = {k: i for i, k in enumerate(part.key_names)}
    first_send = int(s_rec[0]) if n_m else n_rec
    codes: tuple[int, int] | None = None
    o_f: list[int] = []
    o_p: list[int] = []
    o_sends: list[tuple[Any, ...]] = []
    cut = int(out["cut_start"]) if at_eof else -1
    dropped = False
    for rec, ls, le in zip(out["o_rec"].tolist(), out["o_start"].tolist(), out["o_end"].tolist()):
        if codes is None and n_m and rec > first_send:  # codes are numbered in file order
            codes = part.f_code(SEND), part.proc_code("load")
        r = _native_other(part, spec, lib, addr, src, ls, le, rec, ls == cut, drop)
        if r is None:  # an ignored cut last line (always the last record)
            dropped = True
            continue
        t, typ, fc, pc, send = r
        times[rec], types[rec] = t, typ
        o_f.append(fc)
        o_p.append(pc)
        if send is not None:
            o_sends.append((rec, typ) + send)
    if codes is None and n_m:
        codes = part.f_code(SEND), part.proc_code("load")
    fs = np.full(n_rec, codes[0] if codes else 0, np.int16)
    procs = np.full(n_rec, codes[1] if codes else 0, np.int32)
    o_recs = out["o_rec"][:len(o_f)]
    fs[o_recs] = o_f
    procs[o_recs] = o_p
    if dropped:
        n_rec -= 1
        times, types, fs, procs, offs = times[:n_rec], types[:n_rec], fs[:n_rec], procs[:n_rec], offs[:n_rec]
    c = part.cols
    c["time"].append(times)
    c["type"].append(types)
    c["f"].append(fs)
    c["process"].append(procs)
    c["off"].append(offs)
    num, width, key, seq = out["s_num"], out["s_width"], out["s_key"], out["s_seq"]
    s_str = [(s, src[a:b].decode()) for s, a, b in zip(out["sid_send"].tolist(), out["sid_start"].tolist(),
                                                      out["sid_end"].tolist())]
    if o_sends:
        o_rec = np.array([s[0] for s in o_sends], np.int64)
        all_rec = np.concatenate([s_rec, o_rec])
        order = np.argsort(all_rec, kind="stable")
        inv = np.empty(len(order), np.int64)
        inv[order] = np.arange(len(order))
        s_str = [(int(inv[s]), v) for s, v in s_str] + [(int(inv[n_m + k]), s[2]) for k, s in enumerate(o_sends)]
        s_str.sort()
        s_rec = all_rec[order]
        num = np.concatenate([num, np.full(len(o_sends), -1, np.int64)])[order]
        width = np.concatenate([width, np.zeros(len(o_sends), np.int64)])[order]
        key = np.concatenate([key, np.array([s[3] for s in o_sends], np.int32)])[order]
        seq = np.concatenate([seq, np.array([s[4] for s in o_sends], np.int64)])[order]
    if len(s_rec):
        c["s_rec"].append(s_rec)
        c["s_num"].append(num)
        c["s_width"].append(width)
        c["s_key"].append(key)
        c["s_seq"].append(seq)
    part.s_str = s_str
    part.n_sends = len(s_rec)
    part.n = n_rec
    part.end = end
    return part


def _native_other(part: _Part, spec: _Spec, lib: Any, addr: int, src: Any, ls: int, le: int, rec: int,
                  may_be_cut: bool, drop: bool) -> Any:
    """An other line: an observation in the writer's shape without copying its events, else `_slow_line`."""
    if le - ls > _SKELETON_MIN:
        s = src.find(b'"events":[', ls, le)
        e = src.rfind(b"]]", s, le) if s >= 0 else -1
        if s >= 0 and e > s + 10:
            try:
                d = orjson.loads(src[ls:s + 9] + b"[]" + src[e + 2:le])
            except orjson.JSONDecodeError:
                d = None
            if (isinstance(d, dict) and d.get("type") == "ok" and d.get("f") in (OBSERVE, FINAL_READ)
                    and isinstance(d.get("value"), dict) and d["value"].get("events") == []):
                cap = (e + 1 - s - 10) // 12 + 1
                num, width = np.empty(cap, np.int64), np.empty(cap, np.int64)
                k = lib.hs_effects(addr, s + 10, e + 1, spec.prefix, len(spec.prefix), num.ctypes.data,
                                   width.ctypes.data, cap, drop)
                if k > 0:
                    return _slow_line(part, spec, b"", ls, rec, False, d=d, effects=(num[:k], width[:k]))
    return _slow_line(part, spec, src[ls:le], ls, rec, may_be_cut)
