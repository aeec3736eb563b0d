"""The pure-Python reader: the oracle of the C scanner, and the reader wherever the scanner is
not built. Sends of the writer's shape (shape.py) are split out of a whole chunk by one regex;
the other lines are parsed one by one (lines.py). A big file is cut in two at a line boundary
and the second half is read by a forked process (2 cores), each half in chunks of a few MiB
so that memory stays bounded."""
from __future__ import annotations

import gc
import itertools
import multiprocessing
import operator
import os
from typing import Any

import numpy as np

from onceproof.checkers.history.columns import Part, merge
from onceproof.checkers.history.lines import LineError, line_of, name_cut_lines, parse_line
from onceproof.checkers.history.model import SEND, TYPE_CODE, History, HistoryError, open_history
from onceproof.checkers.history.shape import SendShape, digits, id_prefix

_FAST_CHUNK = 32 << 20
_PARALLEL_MIN_BYTES = 64 << 20


def read_python(path: Any) -> History:
    """The history file at `path`, read without the compiled scanner. Raises HistoryError
    (cannot open it, or a bad line: with its line number)."""
    with open_history(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        spec = SendShape(id_prefix(fh.read(1 << 20)) or b"")
        try:
            mid = _middle(fh, size) if size >= _PARALLEL_MIN_BYTES and (os.cpu_count() or 1) > 1 else size
            if mid < size:
                parts = _parse_two(fh, path, spec, mid, size)
            else:
                parts = [parse_span(fh, 0, size, spec, True)]
        except LineError as e:
            raise HistoryError(path, line_of(fh, e.offset), e.reason) from None
        hist = merge(parts, spec.prefix.decode(), path, None)
        name_cut_lines(hist, path, fh)
    return hist


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


def _parse_two(fh: Any, path: Any, spec: SendShape, mid: int, size: int) -> list[Part]:
    """The second half in a forked process while this one reads the first."""
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child, args=(str(path), spec.prefix, mid, size, send), daemon=True)
    child.start()
    send.close()
    try:
        first = parse_span(fh, 0, mid, spec, False)
        try:
            kind, payload = recv.recv()
        except EOFError:
            kind, payload = "crash", f"the reader process died (exit code {child.exitcode})"
    finally:
        recv.close()
        child.join()
    if kind == "error":
        raise LineError(*payload)
    if kind != "ok":
        raise HistoryError(path, None, str(payload))
    return [first, payload]


def _child(path: str, prefix: bytes, start: int, end: int, conn: Any) -> None:
    gc.disable()
    try:
        with open(path, "rb") as fh:
            part = parse_span(fh, start, end, SendShape(prefix), True)
        conn.send(("ok", part))
    except LineError as e:
        conn.send(("error", (e.offset, e.reason)))
    except BaseException as e:  # noqa: BLE001 - reported by the parent
        conn.send(("crash", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()



_TYPE_LAST = np.full(256, -1, np.int8)
for _name, _code in TYPE_CODE.items():
    _TYPE_LAST[ord(_name[-1])] = _code
_NL = b"\n"


def _parse_chunk(part: Part, spec: SendShape, chunk: bytes, base: int, at_eof: bool) -> None:
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
        results.append(parse_line(part, spec, x, int(line_start[li]), rec0 + pos,
                                  last_cut and li == n_lines - 1))
    if n_m:
        times[m_pos] = digits(pieces[1::7])[0]
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
        num, width = digits(nums)
        if part.s_str and part.s_str[-1][0] >= part.n_sends:
            for s, _ in part.s_str:
                if s >= part.n_sends:
                    num[s - part.n_sends] = -1
        keys = pieces[5::7]
        kmap = {kb: part.key_code(kb.decode()) for kb in dict.fromkeys(keys)}
        m_key = np.array(list(map(kmap.__getitem__, keys)), np.int32)
        m_seq = digits(pieces[6::7])[0]
    # sends and observations of the other lines, in file order with the fast sends
    for k, ((li, x), pos) in enumerate(zip(slow, o_pos.tolist())):
        rec = results[k] if k < n_early else parse_line(part, spec, x, int(line_start[li]), rec0 + pos,
                                                        last_cut and li == n_lines - 1)
        if rec is None:  # an ignored cut last line
            n_rec -= 1
            continue
        t, typ, fc, pc, send = rec
        times[pos], types[pos], fs[pos], procs[pos] = t, typ, fc, pc
        offs[pos] = line_start[li]
        if send is not None:
            o_sends.append((pos, typ, *send))
    part.add_records(n_rec, times, types, fs, procs, offs)  # n_rec < n_m + n_o: the cut line dropped
    c = part.cols
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
        for k, o_send in enumerate(o_sends):
            part.s_str.append((part.n_sends + int(inv[n_m + k]), o_send[2]))
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


def parse_span(src: Any, start: int, end: int, spec: SendShape, at_eof: bool) -> Part:
    """Records of bytes [start, end) of `src` (an open file or bytes), chunk by chunk; `start`
    must begin a line. `at_eof`: `end` is the end of the history, so an unreadable last line
    without a newline is a cut line (ignored) rather than an error. Raises LineError."""
    part = Part()
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

