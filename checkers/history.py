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
import gc
import itertools
from array import array
import operator
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
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


def read_history(path: str) -> History:
    """Load a JSON Lines history file into columns."""
    with _no_gc():
        return _read_history(path)


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


def _read_history(path: str) -> History:
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise HistoryError(path, None, f"cannot open: {e.strerror or e}") from None
    with fh:
        builder = _Builder(path)
        builder.feed_stream(fh)
    hist = builder.finish()
    hist.path = path
    return hist


def history_from_records(records: Iterable[dict[str, Any] | Record]) -> History:
    """A History from records in memory (tests, other tools): same code path as a file."""
    lines = [orjson.dumps(r.to_dict() if isinstance(r, Record) else r) for r in records]
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    return history_from_bytes(data)


def history_from_bytes(data: bytes, path: str | None = None) -> History:
    builder = _Builder(path)
    with _no_gc():
        builder.feed_lines(data.split(b"\n"), 0, final=True)
        hist = builder.finish()
    hist._data = data
    hist.path = path
    return hist


_get_fields = operator.itemgetter("time", "process", "type", "f", "value")
_get_id = operator.itemgetter("id")
_get_0 = operator.itemgetter(0)


class _Builder:
    def __init__(self, path: str | None) -> None:
        self.path = path
        self.h = History()
        self.line_no = 0  # lines consumed so far (blank ones included)
        self.offset = 0
        self.f_index: dict[str, int] = {}
        self.proc_index: dict[Any, int] = {}
        self.key_index: dict[str, int] = {}
        self.id_index: dict[str, int] = {}
        self.event_key: Any = array("i")
        self.event_seq: Any = array("q")
        # compact typed arrays (8 bytes or less per record, not a Python int object each)
        self.lists: dict[str, Any] = {
            k: array(code) for k, code in (("time", "q"), ("type", "b"), ("f", "h"), ("process", "i"),
                                           ("off", "q"), ("send_rec", "q"), ("send_eid", "q"))}
        self.lists.update({k: [] for k in ("obs_rec", "obs_full", "obs_final")})
        self.cols: dict[str, list[np.ndarray]] = {k: [] for k in ("eff_obs", "eff_eid")}
        self.n_records = 0
        self.n_obs = 0

    # -- input

    def feed_stream(self, fh: Any) -> None:
        rest = b""
        while True:
            chunk = fh.read(_CHUNK_BYTES)
            if not chunk:
                break
            buf = rest + chunk if rest else chunk
            cut = buf.rfind(b"\n")
            if cut < 0:  # a line longer than a chunk: keep reading
                rest = buf
                continue
            rest = buf[cut + 1:]
            self.feed_lines(buf[:cut].split(b"\n"), 1, final=False)
        self.feed_lines([rest], 0, final=True)

    def feed_lines(self, lines: list[bytes], newline: int, final: bool) -> None:
        """`lines` each followed by `newline` bytes of "\n" (the last one of the file: maybe not)."""
        if final and lines and lines[-1] == b"":
            lines.pop()
            trailing_nl = 1
        else:
            trailing_nl = newline
        if not lines:
            return
        lengths = [len(x) + 1 for x in lines]
        if not final or trailing_nl == 0:
            lengths[-1] -= 1 - trailing_nl
        starts = list(itertools.accumulate(lengths, initial=self.offset))
        self.offset = starts.pop()
        first_line = self.line_no
        self.line_no += len(lines)
        keep = [i for i, x in enumerate(lines) if x.strip()]
        if len(keep) != len(lines):
            lines = [lines[i] for i in keep]
            starts = [starts[i] for i in keep]
            line_nos = [first_line + i for i in keep]
        else:
            line_nos = range(first_line, first_line + len(lines))
        if not lines:
            return
        self._scan(lines, starts, line_nos, final and trailing_nl == 0)

    def _scan(self, lines: list[bytes], starts: list[int], line_nos: Any, last_may_be_cut: bool) -> None:
        # The hot loop: one orjson.loads per line, fields straight into lists; measured faster
        # than building all dicts of a chunk first and transposing them (allocation dominates).
        loads = orjson.loads
        c = self.lists
        times, types, fcodes, procs, offs = c["time"], c["type"], c["f"], c["process"], c["off"]
        send_rec, send_eid = c["send_rec"], c["send_eid"]
        f_index, proc_index, id_index = self.f_index, self.proc_index, self.id_index
        type_code = TYPE_CODE
        event_key, event_seq, key_index = self.event_key, self.event_seq, self.key_index
        n = self.n_records
        last = len(lines) - 1
        for j, x in enumerate(lines):
            try:
                d = _BigObservation(x) if len(x) > _BIG_LINE else loads(x)
            except (orjson.JSONDecodeError, ValueError) as e:
                if last_may_be_cut and j == last:
                    self.h.truncated = True
                    self.h.warnings.append(
                        f"{self.path or '<history>'}:{line_nos[j] + 1}: the last line is incomplete "
                        f"(the harness was probably killed while writing it); it was ignored")
                    break
                raise HistoryError(self.path, line_nos[j] + 1, f"not valid JSON: {e}") from None
            try:
                f = d["f"]
                typ = type_code[d["type"]]
                t = d["time"]
                fc = f_index.get(f)
                if fc is None:
                    fc = self._new_f(f)
                p = d["process"]
                pc = proc_index.get(p)
                if pc is None:
                    pc = self._new_process(p)
                if t.__class__ is not int:
                    raise TypeError
                if f == "send":
                    v = d["value"]
                    eid = id_index.get(v["id"])
                    if eid is None:
                        eid = self._new_event(v["id"])
                        typ_known = True
                    else:
                        typ_known = event_key[eid] >= 0
                    if typ == INVOKE or not typ_known:
                        k = v.get("key")
                        kc = key_index.get(k)
                        event_key[eid] = kc if kc is not None else self._key_code(k)
                        sq = v.get("seq")
                        event_seq[eid] = sq if sq.__class__ is int else -1
                    send_rec.append(n)
                    send_eid.append(eid)
                elif typ == OK and (f == OBSERVE or f == FINAL_READ):
                    self._observation(d, d.get("value"), n, f == FINAL_READ, line_nos[j])
                elif typ == OK and f == STATE:
                    self.h.state_recs.append(n)
                elif f == "start" and self.h.start is None and isinstance(d.get("value"), dict):
                    self.h.start = d["value"]
                times.append(t)
            except HistoryError:
                raise
            except (KeyError, TypeError, AttributeError, ValueError, OverflowError):
                raise HistoryError(self.path, line_nos[j] + 1,
                                   _problem(d) or _send_problem(d) or "malformed record") from None
            types.append(typ)
            fcodes.append(fc)
            procs.append(pc)
            offs.append(starts[j])
            n += 1
        self.n_records = n

    def _new_f(self, f: Any) -> int:
        if not isinstance(f, str):
            raise TypeError
        self.f_index[f] = code = len(self.f_index)
        self.h.f_names.append(f)
        return code

    def _new_process(self, p: Any) -> int:
        if not isinstance(p, (str, int)):
            raise TypeError
        self.proc_index[p] = code = len(self.proc_index)
        self.h.process_names.append(p)
        return code

    def _new_event(self, event_id: Any) -> int:
        if not isinstance(event_id, str):
            event_id = str(event_id)
            if event_id in self.id_index:
                return self.id_index[event_id]
        eid = len(self.id_index)
        self.id_index[event_id] = eid
        self.h.event_ids.append(event_id)
        self.event_key.append(-1)
        self.event_seq.append(-1)
        return eid

    def _key_code(self, key: Any) -> int:
        if key is None:
            return -1
        key = str(key)
        code = self.key_index.get(key)
        if code is None:
            code = self.key_index[key] = len(self.key_index)
            self.h.key_names.append(key)
        return code

    def _describe(self, eid: int, key: Any, seq: Any) -> None:
        if key is not None:
            self.event_key[eid] = self._key_code(key)
        if isinstance(seq, int):
            self.event_seq[eid] = seq

    def _observation(self, rec: Any, value: Any, rec_no: int, final: bool, line_no: int) -> None:
        if isinstance(rec, _BigObservation):
            full, chunks = rec.full, rec.chunks()
        else:
            if not isinstance(value, dict) or not isinstance(value.get("events", []), list):
                raise HistoryError(self.path, line_no + 1,
                                   'an ok "observe"/"final-read" needs a value {"full": bool, '
                                   '"events": [[id, key, seq, replica], ...]}; got ' + _short(value))
            full, chunks = bool(value.get("full", final)), iter([value.get("events") or []])
        obs = self.n_obs
        self.n_obs += 1
        c = self.cols
        self.lists["obs_rec"].append(rec_no)
        self.lists["obs_full"].append(full or final)
        self.lists["obs_final"].append(final)
        id_index = self.id_index
        for events in _checked(chunks, self.path, line_no + 1):
            try:
                ids = list(map(_get_0, events))
            except (IndexError, TypeError, KeyError):
                raise HistoryError(self.path, line_no + 1,
                                   "each sink effect must be [id, key, seq, replica]") from None
            eids = list(map(id_index.get, ids))
            if None in eids:
                for j, e in enumerate(eids):
                    if e is None:
                        ev = events[j]
                        eids[j] = e = self._new_event(ids[j])
                        self._describe(e, ev[1] if len(ev) > 1 else None, ev[2] if len(ev) > 2 else None)
            c["eff_obs"].append(np.full(len(eids), obs, dtype=np.int32))
            c["eff_eid"].append(np.array(eids, dtype=np.int64))

    def finish(self) -> History:
        h = self.h
        c = self.cols

        def cat(name: str, dtype: Any) -> np.ndarray:
            if name in self.lists:
                col = self.lists.pop(name)
                if isinstance(col, array):
                    return np.frombuffer(col, dtype=col.typecode).astype(dtype) if len(col) else np.zeros(0, dtype)
                return np.array(col, dtype=dtype)
            return np.concatenate(c[name]).astype(dtype, copy=False) if c[name] else np.zeros(0, dtype)

        h.time, h.type, h.f = cat("time", np.int64), cat("type", np.int8), cat("f", np.int16)
        h.process = cat("process", np.int32)
        h._offsets = np.append(cat("off", np.int64), self.offset)
        h.send_rec, h.send_eid = cat("send_rec", np.int64), cat("send_eid", np.int64)
        h.obs_rec, h.obs_full, h.obs_final = cat("obs_rec", np.int64), cat("obs_full", bool), cat(
            "obs_final", bool)
        h.eff_obs, h.eff_eid = cat("eff_obs", np.int32), cat("eff_eid", np.int64)
        h.event_key = np.array(self.event_key, dtype=np.int32)
        h.event_seq = np.array(self.event_seq, dtype=np.int64)
        self.event_key = self.event_seq = None
        return h


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
