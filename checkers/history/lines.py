"""One history line at a time: the checks and messages for a line that is not a send of the
writer's shape (observations, faults, phases, sends in another shape), and the errors that
point at a line. Both readers (`python_reader.py`, `native.py`) hand such lines to
`parse_line`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from onceproof.checkers.history.model import FINAL_READ, OBSERVE, OK, SEND, STATE, TYPE_CODE, History
from onceproof.checkers.history.shape import SendShape, digits

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from onceproof.checkers.history.columns import Part

_BIG_LINE = 4 << 20  # an observation line this long is parsed slice by slice
_SLICE_BYTES = 2 << 20


def cut_warning(path: Any, line: int) -> str:
    """The warning about an ignored, incomplete last line (`line` 1-based)."""
    return (f"{path or '<history>'}:{line}: the last line is incomplete "
            "(the harness was probably killed while writing it); it was ignored")


def name_cut_lines(hist: History, path: Any, src: Any) -> None:
    """Turn the readers' placeholder warnings ("\\0<byte offset>" of an ignored cut line) into
    `cut_warning`s with line numbers; `src` is the history's bytes or its open file."""
    hist.warnings = [cut_warning(path, line_of(src, int(w[1:]))) if w.startswith("\0") else w
                     for w in hist.warnings]


def line_of(src: Any, offset: int) -> int:
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


def _short(v: Any) -> str:
    s = orjson.dumps(v, default=str).decode()
    return s if len(s) < 80 else s[:77] + "..."


def _send_problem(rec: Any) -> str | None:
    if rec.get("f") in (OBSERVE, FINAL_READ):
        return ('an ok "observe"/"final-read" needs a value {"full": bool, "events": '
                f'[[id, key, seq, replica], ...]}}; got {_short(rec.get("value"))}')
    return ('a "send" record needs a value {"id": string, "key": string, "seq": integer >= 0 below 2^63}; '
            "got " + _short(rec.get("value")))


def _problem(rec: Any) -> str | None:
    if not isinstance(rec, dict):
        return f"a record must be a JSON object, got {_short(rec)}"
    missing = [k for k in ("time", "process", "type", "f") if k not in rec]
    if missing:
        return (f"missing field(s) {', '.join(missing)}; every record has "
                '{"index", "time", "process", "type", "f", "value"}')
    if not isinstance(rec["type"], str) or rec["type"] not in TYPE_CODE:
        return f"type must be one of invoke, ok, fail, info; got {_short(rec['type'])}"
    if not isinstance(rec["time"], int) or isinstance(rec["time"], bool):
        return f"time must be an integer (ns since the run started); got {_short(rec['time'])}"
    if not isinstance(rec["f"], str):
        return f"f must be a string; got {_short(rec['f'])}"
    if not isinstance(rec["process"], (str, int)):
        return f"process must be a string or an integer; got {_short(rec['process'])}"
    if "index" in rec and not _is_int(rec["index"]):
        return f"index must be an integer; got {_short(rec['index'])}"
    return None


_I64 = 1 << 63


def _is_int(v: Any) -> bool:
    return v.__class__ is int and -_I64 <= v < _I64


def _seq_of(v: Any) -> int:
    """A send's or an effect's `seq`: a non-negative integer below 2^63, or null/absent (-1)."""
    if v is None:
        return -1
    if v.__class__ is not int or not 0 <= v < _I64:
        raise ValueError
    return int(v)


def _id_of(v: Any) -> str:
    """An event id: a string, or an integer (kept as its text)."""
    if isinstance(v, str):
        return v
    if v.__class__ is int:
        return str(v)
    raise ValueError


def _full_of(value: dict[str, Any], final: bool, off: int) -> bool:
    full = value.get("full", final)
    if not isinstance(full, bool):
        raise LineError(off, f'"full" must be true or false; got {_short(full)}')
    return full or final


def _check_state(value: Any, off: int) -> None:
    """A derived state: {key: {"count": int, "sum": int}}, or null (not declared)."""
    if value is None:
        return
    ok = isinstance(value, dict) and all(
        isinstance(v, dict) and all(k in ("count", "sum") and _is_int(n) for k, n in v.items())
        for v in value.values())
    if not ok:
        raise LineError(off, 'an ok "state" record needs a value {key: {"count": int, "sum": int}, ...}; '
                             f"got {_short(value)}")


class BigObservation(dict):  # type: ignore[type-arg]
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


class LineError(Exception):
    """A line the readers cannot take: the byte `offset` where it starts and the `reason`
    (turned into a HistoryError with a line number by whoever knows the file)."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset, self.reason = offset, reason


Parsed = tuple[int, int, int, int, "tuple[str, int, int] | None"]


def parse_line(part: Part, spec: SendShape, x: bytes, off: int, rec: int, may_be_cut: bool, d: Any = None,
               effects: Any = None) -> Parsed | None:
    """One line `x` (starting at byte `off`, record number `rec` in the part): (time ns, type
    code, f code, process code, send) where send is (event id, key code, seq or -1) for a send
    and None otherwise; an observation, a state record or the start record is added to `part`
    on the way. `d`: the line already decoded; `effects`: an observation's events already read
    by the C scanner, as (id numbers, digit counts). None: an unreadable line that may be the
    cut last line (`may_be_cut`), which is ignored. Raises LineError for any other bad line."""
    if d is None:
        try:
            d = BigObservation(x) if len(x) > _BIG_LINE else orjson.loads(x)
        except (orjson.JSONDecodeError, ValueError) as e:
            if may_be_cut:
                part.truncated_at = off
                return None
            raise LineError(off, f"not valid JSON: {e}") from None
    try:
        f = d["f"]
        typ = TYPE_CODE[d["type"]]
        t = d["time"]
        fc = part.f_code(f)
        pc = part.proc_code(d["process"])
        if t.__class__ is not int or not -(1 << 63) <= t < (1 << 63):
            raise TypeError
        if "index" in d and not _is_int(d["index"]):
            raise TypeError
        send = None
        if f == SEND:
            v = d["value"]
            event_id = _id_of(v["id"])
            key = v.get("key")
            if key is not None and not isinstance(key, (str, int)):
                raise ValueError
            send = (event_id, part.key_code(key), _seq_of(v.get("seq")))
        elif typ == OK and (f == OBSERVE or f == FINAL_READ):
            _observation(part, spec, d, x, off, rec, f == FINAL_READ, effects)
        elif typ == OK and f == STATE:
            _check_state(d.get("value"), off)
            part.state_recs.append(rec)
        elif f == "start" and part.start is None and isinstance(d.get("value"), dict):
            part.start = d["value"]
    except LineError:
        raise
    except (KeyError, TypeError, AttributeError, ValueError, OverflowError):
        raise LineError(off, _problem(d) or _send_problem(d) or "malformed record") from None
    return t, typ, fc, pc, send


def _effect_id(ev: Any, off: int) -> str:
    """The event id of one sink effect [id, key, seq, replica] (each field checked)."""
    try:
        if not isinstance(ev, list) or len(ev) != 4:
            raise ValueError
        event_id, key, seq, replica = ev
        if key is not None and not isinstance(key, (str, int)):
            raise ValueError
        _seq_of(seq)
        if replica is not None and not _is_int(replica):
            raise ValueError
        return _id_of(event_id)
    except ValueError:
        raise LineError(off, "each sink effect must be [id, key, seq, replica] (id a string, key a string, "
                             f"seq an integer >= 0, replica an integer); got {_short(ev)}") from None


def _visible_of(value: Any, off: int) -> np.ndarray | None:
    """An observation's `visible` runs [[n, t], ...] as an int64 (k, 2) array (n > 0 effects
    in sink order became visible at t ns since the run started), or None when it has none."""
    runs = value.get("visible") if isinstance(value, dict) else None
    if runs is None:
        return None
    if not (isinstance(runs, list) and all(isinstance(r, list) and len(r) == 2 and _is_int(r[0]) and r[0] > 0
                                           and _is_int(r[1]) for r in runs)):
        raise LineError(off, '"visible" must be [[n, time], ...]: n > 0 effects (in sink order) that became '
                             f"visible at time ns since the run started; got {_short(runs)}")
    return np.array(runs, np.int64).reshape(-1, 2)


def _check_visible(runs: np.ndarray | None, count: int, off: int) -> None:
    if runs is not None and count and int(runs[:, 0].sum()) != count:  # count 0: a skeleton without its events
        raise LineError(off, f'"visible" covers {int(runs[:, 0].sum())} effects but "events" has {count}; '
                             "its runs [[n, time], ...] must add up to the number of events")


def _observation(part: Part, spec: SendShape, d: Any, x: bytes, off: int, rec: int, final: bool,
                 effects: Any = None) -> None:
    runs = _visible_of(d.get("value"), off)
    if effects is not None:  # read by the C scanner (checked: value is a dict, events in the writer's shape)
        _check_visible(runs, len(effects[0]), off)
        part.obs_vis.append(runs)
        part.obs_rec.append(rec)
        part.obs_full.append(_full_of(d["value"], final, off))
        part.obs_final.append(final)
        part.eff_num.append(effects[0])
        part.eff_width.append(effects[1])
        part.eff_str.append([])
        return
    chunks: Iterable[list[Any]] | None
    if isinstance(d, BigObservation):
        value = d.get("value")
        if not isinstance(value, dict):
            raise LineError(off, 'an ok "observe"/"final-read" needs a value {"full": bool, '
                                  '"events": [[id, key, seq, replica], ...]}; got ' + _short(value))
        full, body, chunks = _full_of(value, final, off), d.body, None
    else:
        value = d.get("value")
        if not isinstance(value, dict) or not isinstance(value.get("events", []), list):
            raise LineError(off, 'an ok "observe"/"final-read" needs a value {"full": bool, '
                                  '"events": [[id, key, seq, replica], ...]}; got ' + _short(value))
        full = _full_of(value, final, off)
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
            got.append(digits(pieces[1::2]))
            pos = end + 1
        if fast_ok:
            for v, w in got:
                nums.append(v)
                widths.append(w)
                count += len(v)
    if not fast_ok:
        nums, widths, strs, count = [], [], [], 0
        if chunks is None:
            assert isinstance(d, BigObservation)
            chunks = d.chunks()
        try:
            all_events = list(chunks)
        except ValueError as e:
            raise LineError(off, str(e)) from None
        for events in all_events:
            for j, ev in enumerate(events):
                strs.append((count + j, _effect_id(ev, off)))
            count += len(events)
        nums = [np.full(count, -1, np.int64)]
        widths = [np.zeros(count, np.int64)]
    _check_visible(runs, count, off)
    part.obs_vis.append(runs)
    part.obs_rec.append(rec)
    part.obs_full.append(bool(full or final))
    part.obs_final.append(final)
    part.eff_num.append(np.concatenate(nums) if len(nums) != 1 else nums[0])
    part.eff_width.append(np.concatenate(widths) if len(widths) != 1 else widths[0])
    part.eff_str.append(strs)
