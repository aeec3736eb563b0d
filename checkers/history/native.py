"""The ctypes binding of the compiled scanner, checkers/history_scan.c.

The C code does the line loop over an mmap of the file (built by `onceproof setup` into
`$ONCEPROOF_HOME/lib`, see `onceproof.home`): sends of the writer's shape (shape.py) land in
numpy columns, the other lines are handed back as byte ranges and parsed by lines.py; the
events of an observation in the writer's shape are read by C too (the rest of its line,
without them, by orjson). A big file is scanned in two halves by two threads (ctypes releases
the GIL). Without the library, or if it gives up (None from `read_native`/`native_parts`), the
pure-Python reader runs: same History.
"""
from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from onceproof.checkers.history.columns import Part, merge
from onceproof.checkers.history.lines import LineError, line_of, name_cut_lines, parse_line
from onceproof.checkers.history.model import FINAL_READ, OBSERVE, SEND, History, HistoryError, open_history
from onceproof.checkers.history.shape import SendShape, id_prefix
from onceproof.home import library

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
    """Where `onceproof setup` puts the compiled scanner: `$ONCEPROOF_HOME/lib/libonceproof_scan.so`."""
    return library("libonceproof_scan.so")


def scan_lib(native: bool | None) -> Any:
    """The loaded scanner (a ctypes CDLL, loaded once per process), or None: when `native` is
    False, or the library is not built and `native` is None. Raises HistoryError if `native`
    is True and the library is not built."""
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
            if hasattr(lib, "hs_pack"):  # a library built before it lacks it: partitioned.py packs with numpy
                lib.hs_pack.restype = None
                lib.hs_pack.argtypes = [i64, ctypes.c_int, p, p, p, ctypes.c_int32, p, p, p]
        _scan = lib
    if _scan is None and native:
        raise HistoryError(None, None, f"the compiled history scanner is not installed ({scan_library_path()}); "
                                       "run `onceproof setup`")
    return _scan


def read_native(path: Any, lib: Any) -> History | None:
    """The history file at `path`, scanned by `lib` (from `scan_lib`); None if the scanner
    gives up (an empty file, a line it does not take): then read it in Python. Raises
    HistoryError (cannot open it, or a bad line: with its line number)."""
    with open_history(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            return None
        spec = SendShape(id_prefix(fh.read(1 << 20)) or b"")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            with contextlib.suppress(AttributeError, OSError):
                mm.madvise(mmap.MADV_SEQUENTIAL)
            try:
                parts = native_parts(lib, mm, spec)
            except LineError as e:
                raise HistoryError(path, line_of(fh, e.offset), e.reason) from None
            if parts is None:
                return None
            hist = merge(parts, spec.prefix.decode(), path, None)
            del parts
        finally:
            mm.close()
        name_cut_lines(hist, path, fh)
    return hist


def native_parts(lib: Any, src: Any, spec: SendShape) -> list[Part] | None:
    """The records of `src` (bytes or an mmap), scanned in C: one part, or two (halves, threads);
    None if the scanner gives up. Raises LineError for a bad line."""
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


def _scan_span(lib: Any, addr: int, start: int, end: int, spec: SendShape, drop: bool) -> Any:
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


def _native_part(lib: Any, addr: int, src: Any, spec: SendShape, start: int, end: int, out: dict[str, Any],
                 at_eof: bool, drop: bool) -> Part:
    part = Part()
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
    part.add_records(n_rec, times, types, fs, procs, offs)
    c = part.cols
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


def _native_other(part: Part, spec: SendShape, lib: Any, addr: int, src: Any, ls: int, le: int, rec: int,
                  may_be_cut: bool, drop: bool) -> Any:
    """An other line: an observation in the writer's shape without copying its events, else `parse_line`."""
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
                    return parse_line(part, spec, b"", ls, rec, False, d=d, effects=(num[:k], width[:k]))
    return parse_line(part, spec, src[ls:le], ls, rec, may_be_cut)
