"""The exactly-once check of a history bigger than memory: spilled by partitions of events.

The check is an aggregation per event (its sends, its sightings, its count in the final read)
plus per key (order, derived state), so it runs by partitions: one pass over the file reads it
chunk by chunk with the same readers as the in-memory path (the C scanner, else pure Python),
keeps the records that are not sends (observations without their effects, progress, faults:
few) in memory, and appends each send and each sink effect to the binary files of its
partition on disk (a chunk's rows are packed into fixed-size records, grouped by partition, in
one pass of the scanner library's `hs_pack`; by numpy when the library was built before it).
Then each partition is loaded as a `History` of its own (its sends, every
other record, the effects of its events) and checked by `exactly_once.partial`;
`exactly_once.finish` merges the partials. The result is the in-memory one exactly:
counts and totals add up, examples are the first in the whole history (ordered by where each
event first appears), latency percentiles are exact order statistics over the partitions'
sorted runs, the state fold is added up by key.

Routing: an event goes where its first record seen by the split goes: a send by the hash of its
key (so that a key's events share a partition and per-key order is checked whole), an effect
by the hash of its id; every later record of that id follows (a map from id number to
partition, 1 byte per id number; ids whose number is past `_MAP_LIMIT` go by id hash alone).
Per-key order is then exact for every event first seen in a send; an event seen in the sink
before any send of it (a phantom, a premature one) sits where its id hashes, and its place in
its key's order is judged within that partition only. checkers/ranges.py runs this Split on
byte ranges of the file (`run(span=...)`), for Spark (checkers/spark.py).

Memory: the chunk being read (`_CHUNK` bytes; its pages of the file mapping are given back
after it), the id map, the non-send records, then the partitions, `workers` at a time in
forked processes (`default_workers()`); the number of partitions is chosen so that the
workers' partitions together fit in about 30% of the budget (a partition's in-memory check is
estimated from its share of the file, `BYTES_FACTOR`). A line longer than a chunk (a final read of
millions of effects) is streamed slice by slice. The spill folder is removed whatever happens
(an exception, Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import contextlib
import math
import mmap
import multiprocessing
import os
import re
import shutil
import signal
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from onceproof.checkers import exactly_once
from onceproof.checkers.history import read_history
from onceproof.checkers.history.columns import Part, _intern, remap_names, visible_times
from onceproof.checkers.history.lines import LineError, _effect_id, cut_warning, line_of
from onceproof.checkers.history.model import FINAL_READ, OBSERVE, History, HistoryError
from onceproof.checkers.history.native import _native_part, _scan_span, scan_lib
from onceproof.checkers.history.python_reader import parse_span
from onceproof.checkers.history.shape import SendShape, digits, id_prefix

DEFAULT_MEMORY = 2 << 30
BYTES_FACTOR = 1.4  # peak RSS of the in-memory check per byte of history (benchmarks/check_exactly_once.py)
_CHUNK = 64 << 20
_SLICE = 16 << 20
_MIN_CHUNK = 1 << 20  # tests lower these two to split tiny histories into many chunks and slices
_MIN_SLICE = 1 << 16
_MAP_LIMIT = 1 << 30  # id numbers below this are routed through the map (1 byte each, grown on demand)
_UNSET = 255
DEFERRED = 254  # in a range's id map: first seen in a sink read, its key not read yet (checkers/ranges.py)
DEFER_OVER = 4096  # a range's pass defers the keys of a sink read's new ids when it has more (a final read)
_MAX_PARTS = 250
_PACK_IN_C = True  # the spill's rows packed by the scanner's hs_pack when it has it (tests turn it off)

SEND_DT = np.dtype([("rec", "<i8"), ("time", "<i8"), ("num", "<i8"), ("seq", "<i8"), ("off", "<i8"),
                    ("end", "<i8"), ("key", "<i4"), ("proc", "<i4"), ("f", "<i2"), ("type", "i1"),
                    ("width", "i1")])
EFF_DT = np.dtype([("num", "<i8"), ("pos", "<i8"), ("obs", "<i4"), ("width", "i1")])

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?)B?\s*$", re.IGNORECASE)


MIN_MEMORY = 128 << 20  # the smallest budget the check keeps to (see parse_size)


def parse_size(text: str) -> int:
    """A memory size as bytes: "2GiB", "512MiB", "1.5G", "800M", "1000000" (K/M/G/T: powers of
    1024 with or without the "i"; a bare number is bytes). Raises ValueError with what is
    expected, for anything else or a size below MIN_MEMORY: the checking process itself
    (Python, numpy) holds ~41 MiB before it reads a byte, and the partitioned check adds its
    chunk, id map, visibility times and workers; measured (benchmarks/check_exactly_once.py's
    peak RSS): a 59 MB history at 64 MiB peaked at 93 MiB, a 230 MiB one at 100 MiB at 102-103
    MiB, and at 128 MiB both stayed under it (tests/unit/checkers/test_partitioned.py)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a memory size: {text!r}; expected a number with a unit such as 512MiB or 2GiB")
    n = float(m.group(1)) * (1 << (10 * "_KMGT".index(m.group(2).upper() or "_"))) if m.group(2) else float(
        m.group(1))
    if n < MIN_MEMORY:
        raise ValueError(f"memory size {text!r} is below the minimum of 128MiB, the smallest budget the check keeps "
                         "to: its own process (Python, numpy) takes about 41 MiB before it reads the history, and "
                         "checking by partitions needs room for a chunk, the id map and its workers")
    return int(n)


def estimate(path: Any) -> int:
    """Estimated peak RSS in bytes of the in-memory check of the history at `path` (from its
    size; an int: the size itself, for a history that is not a local file)."""
    size = path if isinstance(path, int) else os.path.getsize(path)
    return int(size * BYTES_FACTOR) + (64 << 20)


def default_workers() -> int:
    """How many partitions are checked at once: $ONCEPROOF_CHECK_WORKERS, else the CPUs this
    process may use, at most 4 (each worker holds one partition: the budget is shared)."""
    env = os.environ.get("ONCEPROOF_CHECK_WORKERS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def check_path(path: Any, *, memory: int = DEFAULT_MEMORY, order: str | None = None, examples: int = 10,
               spill_dir: Any = None, partitions: int | None = None, workers: int | None = None,
               fs: set[str] | None = None) -> dict[str, Any]:
    """The exactly-once check of the history file at `path` within about `memory` bytes of RSS
    (this process and its workers together): in memory when `estimate(path)` fits, else
    partitioned (`partitions` forces the partitioned path with that many partitions: tests),
    `workers` partitions at a time in forked processes (default `default_workers()`; 1: in this
    process), each partition sized to fit in its share of the budget. `spill_dir`: where the
    spill folder is made (default $ONCEPROOF_SCRATCH, else the system's temp folder). `fs`: a set
    filled with the history's operation names (the f of its records, as read: so that a caller
    needs no second pass to learn whether other checkers apply). Result as
    `exactly_once.check`; raises HistoryError as `read_history` does."""
    workers = workers or default_workers()
    env = os.environ.get("ONCEPROOF_CHECK_PARTITIONS")
    if partitions is None and env and env.isdigit() and int(env) > 0:
        partitions = int(env)  # forced, as `partitions`: tests of `onceproof check` by partitions
    if partitions is None:
        need = estimate(path)
        if need <= memory:
            h = read_history(path)
            if fs is not None:
                fs.update(h.f_names)
            return exactly_once.check(h, order=order, examples=examples)
        partitions = min(_MAX_PARTS, max(2, math.ceil(need / (memory * 0.3 / workers))))
    with _spill_folder(spill_dir) as folder:
        split = Split(path, folder, partitions, chunk=max(_MIN_CHUNK, min(_CHUNK, memory // 32)))
        with phase("spill"):
            split.run()
        if fs is not None:
            fs.update(split.f_names)
        return split.check(order=order, examples=examples, workers=workers)


PHASES: dict[str, tuple[float, float]] = {}  # phase -> (wall s, CPU s of this process and its reaped workers)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a phase of the check into PHASES[name] (added up when it runs again): the spill, the
    partitions' checks, the merge; printed by benchmarks/check_exactly_once.py."""
    def cpu() -> float:
        t = os.times()  # the workers count once reaped (the pool is shut down inside the phase)
        return t.user + t.system + t.children_user + t.children_system

    w0, c0 = time.perf_counter(), cpu()
    try:
        yield
    finally:
        w, c = PHASES.get(name, (0.0, 0.0))
        PHASES[name] = (w + time.perf_counter() - w0, c + cpu() - c0)


@contextlib.contextmanager
def _spill_folder(where: Any) -> Iterator[Path]:
    base = where or os.environ.get("ONCEPROOF_SCRATCH") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="onceproof-spill-", dir=base))
    old = None
    if threading.current_thread() is threading.main_thread():
        def _term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt  # unwinds through the finally below

        old = signal.signal(signal.SIGTERM, _term)
    try:
        yield folder
    finally:
        # a second Ctrl-C or SIGTERM while the folder is removed (tens of seconds for the GBs of
        # a big history) would stop the removal half-way: both wait until it is done
        held = None
        if old is not None:
            held = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            if held is not None:
                signal.signal(signal.SIGINT, held[signal.SIGINT])
                signal.signal(signal.SIGTERM, old)


def pack_rows(cols: dict[str, np.ndarray], dt: np.dtype, dest: np.ndarray, bounds: list[int],
              pack: Any = None) -> np.ndarray:
    """Rows of the packed record type `dt` from `cols` (a column per field, each as long as
    `dest`), grouped by partition: those of partition p (`dest[i] == p`, uint8) at
    [bounds[p], bounds[p+1]), in their order. `pack`: the scanner's hs_pack (one C pass), else
    numpy (field by field, then a stable sort by partition): the same bytes."""
    n = len(dest)
    names = dt.names or ()
    fields: Any = dt.fields or {}
    if pack is not None:
        arrays = [np.ascontiguousarray(cols[name], dt[name]) for name in names]
        assert all(len(a) == n for a in arrays)
        ptrs = np.array([a.ctypes.data for a in arrays], np.uint64)
        sizes = np.array([dt[name].itemsize for name in names], np.int32)
        offs = np.array([fields[name][1] for name in names], np.int32)
        at = np.array(bounds[:-1], np.int64)
        out = np.empty(n, dt)
        pack(n, len(arrays), ptrs.ctypes.data, sizes.ctypes.data, offs.ctypes.data, dt.itemsize,
             np.ascontiguousarray(dest, np.uint8).ctypes.data, at.ctypes.data, out.ctypes.data)
        return out
    rows = np.empty(n, dt)
    for name in names:
        rows[name] = cols[name]
    return rows[np.argsort(dest, kind="stable")]


class Split:
    """One pass over the history at `path` into `k` partitions under `folder` (see the module)."""

    def __init__(self, path: Any, folder: Path, k: int, chunk: int = _CHUNK) -> None:
        self.path, self.folder, self.k, self.chunk = str(path), folder, k, chunk
        self.name = self.path  # the history as messages name it (a range staged from object storage: its URL)
        self.line_at: Any = None  # offset -> line number in the history, when `path` is a staged range of it
        self.slice = max(_MIN_SLICE, min(_SLICE, chunk // 4))
        self.mm: Any = None
        self.f_names: list[str] = []
        self.f_index: dict[Any, int] = {}
        self.p_names: list[Any] = []
        self.p_index: dict[Any, int] = {}
        self.k_names: list[str] = []
        self.k_index: dict[Any, int] = {}
        self.k_part = np.zeros(0, np.uint8)
        self.idmap = np.full(0, _UNSET, np.uint8)
        self.text_map: dict[str, int] = {}
        self.others: dict[str, list[np.ndarray]] = {c: [] for c in ("rec", "time", "type", "f", "proc", "off", "end")}
        self.obs_rec: list[int] = []
        self.obs_full: list[bool] = []
        self.obs_final: list[bool] = []
        self.obs_total: list[int] = []
        self.obs_vis: dict[int, np.ndarray] = {}  # observation -> its `visible` runs, for the reads that have them
        self.state_recs: list[int] = []
        self.start: Any = None
        self.warnings: list[str] = []
        self.n_rec = 0
        self.n_send = [0] * k
        self.n_eff = [0] * k
        self.s_text: list[list[tuple[int, str]]] = [[] for _ in range(k)]
        self.e_text: list[list[tuple[int, str]]] = [[] for _ in range(k)]
        self.prefix = b""
        self._files: list[Any] = []
        self.size = 0  # the file's size in bytes (the pass may cover only a range of it: `run`)
        # a pass over a byte range writes its rows as the whole file's (see checkers/ranges.py):
        # n_rec starts at the number of records before the range, and
        self.obs0 = 0  # sink reads before the range (added to the effects' read numbers)
        self.codes: dict[str, np.ndarray] = {}  # column ("f", "proc", "key") -> the range's code -> the file's
        # when more than `defer_over` ids of one sink read (or one slice of it) are new to the map,
        # they are mapped to DEFERRED, not to their effects' keys: parsing a whole final read for its
        # keys is slow, and in a range's pass few such ids are also the first in the whole file
        self.defer_over: int | None = None

    # -- the pass ---------------------------------------------------------------------------
    def run(self, span: tuple[int, int] | None = None, outputs: list[Any] | None = None) -> None:
        """Read the file once and spill it. `span`: only the lines that start in bytes [a, b)
        of the file (`line_start` of each end: a range of checkers/ranges.py). `outputs`: per
        partition a pair of binary writers (sends, effects) instead of the spill folder's files;
        a pair of None: rows not kept (the range's first pass only routes). Raises
        HistoryError (cannot open, a bad line)."""
        try:
            fh = open(self.path, "rb")
        except OSError as e:
            raise HistoryError(self.name, None, f"cannot open: {e.strerror or e}") from None
        with fh:
            size = self.size = os.fstat(fh.fileno()).st_size
            self.spec = SendShape(id_prefix(fh.read(1 << 20)) or b"")
            self.prefix = self.spec.prefix
            self.lib = scan_lib(None)
            pos, stop = (0, size) if span is None else (line_start(fh, span[0], size), line_start(fh, span[1], size))
            self._files = outputs if outputs is not None else [
                (open(self.folder / f"s{p}.bin", "wb", buffering=1 << 20),
                 open(self.folder / f"e{p}.bin", "wb", buffering=1 << 20)) for p in range(self.k)]
            mm = self.mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            try:
                while pos < stop:
                    try:
                        pos = self._step(fh, mm, pos, stop)
                    except LineError as e:
                        raise HistoryError(self.name, self._line_of(fh, e.offset), e.reason) from None
            finally:
                if outputs is None:
                    for s_file, e_file in self._files:
                        s_file.close()
                        e_file.close()
                if mm is not None:
                    self.mm = None
                    mm.close()
            if self._cut is not None:
                self.warnings.append(cut_warning(self.name, self._line_of(fh, self._cut)))

    _cut: int | None = None

    def _line_of(self, fh: Any, offset: int) -> int:
        """The line number in the history of the line at byte `offset` (of a staged range: the
        Source counts it, the staged file has holes before the range)."""
        return int(self.line_at(offset)) if self.line_at is not None else line_of(fh, offset)

    def _step(self, fh: Any, mm: Any, pos: int, size: int) -> int:
        """One chunk of whole lines from `pos`: the position after it. The chunk's pages of the
        file mapping are given back after it (the reads of its lines that are not sends touch
        them again after the scanner dropped them: they would stay in the resident set)."""
        nxt = self._step_pages(fh, mm, pos, size)
        if mm is not None and hasattr(mm, "madvise"):
            a = pos - pos % mmap.PAGESIZE
            if nxt > a:
                mm.madvise(mmap.MADV_DONTNEED, a, min(nxt, size) - a)
        return nxt

    def _step_pages(self, fh: Any, mm: Any, pos: int, size: int) -> int:
        stop = min(size, pos + self.chunk)
        if stop < size:
            cut = mm.rfind(b"\n", pos, stop) + 1
            if cut == 0:  # a line longer than a chunk: a sink read is streamed, any other line read whole
                fh.seek(pos)
                nxt = self._big_line(fh, pos, size, fh.read(min(self.slice, size - pos)))
                if nxt is not None:
                    return nxt
                end = _find(fh, b"\n", stop, size)
                stop = end + 1 if end >= 0 else size
            else:
                stop = cut
        at_eof = stop >= self.size
        if self.lib is not None:
            arr = np.frombuffer(mm, np.uint8)
            try:
                addr = arr.ctypes.data
                mid = mm.find(b"\n", (pos + stop) // 2, stop) + 1
                spans = [(pos, mid), (mid, stop)] if 0 < mid < stop and stop - pos >= 8 << 20 else [(pos, stop)]
                outs: list[Any] = [None] * len(spans)

                def scan(i: int) -> None:
                    outs[i] = _scan_span(self.lib, addr, spans[i][0], spans[i][1], self.spec, True)

                if len(spans) > 1:  # two threads: ctypes lets go of the GIL
                    t = threading.Thread(target=scan, args=(1,))
                    t.start()
                    try:
                        scan(0)
                    finally:
                        t.join()
                else:
                    scan(0)
                if all(o is not None for o in outs):
                    for i, (a, b) in enumerate(spans):
                        part = _native_part(self.lib, addr, mm, self.spec, a, b, outs[i],
                                            at_eof and i == len(spans) - 1, True)
                        outs[i] = None
                        self._route_part(part, 0)
                    return stop
            finally:
                del arr
        part = parse_span(mm[pos:stop], 0, stop - pos, self.spec, at_eof)
        self._route_part(part, pos)
        return stop

    def _big_line(self, fh: Any, pos: int, size: int, head: bytes) -> int | None:
        """A line longer than a chunk: an ok observe/final-read is read as its skeleton (the line
        without its effects) plus its effects slice by slice; the position after it. None for
        any other line (read whole by the caller)."""
        nl = head.find(b"\n")  # the head may hold the whole line when a slice is longer than a chunk
        end = pos + nl if nl >= 0 else _find(fh, b"\n", pos + len(head), size)
        line_end = end if end >= 0 else size
        nxt = line_end + 1 if end >= 0 else size
        s = head.find(b'"events":[')
        fh.seek(max(pos, line_end - (1 << 16)))
        tail_at = fh.tell()
        tail = fh.read(line_end - tail_at)
        t = tail.rfind(b"]]")
        if s < 0 or t < 0 or tail_at + t <= pos + s + 10:
            return None
        e_abs = tail_at + t  # the events array is [s + 10, e_abs + 1]
        skeleton = head[:s + 9] + b"[]" + tail[t + 2:]
        try:
            d = orjson.loads(skeleton)
        except orjson.JSONDecodeError:
            return None
        if not (isinstance(d, dict) and d.get("type") == "ok" and d.get("f") in (OBSERVE, FINAL_READ)
                and isinstance(d.get("value"), dict) and d["value"].get("events") == []):
            return None
        part = parse_span(skeleton + b"\n", 0, len(skeleton) + 1, self.spec, False)
        obs = len(self.obs_rec)  # in this pass (its number in the file: obs0 + obs)
        self._route_part(part, pos, line_end=nxt)
        count = 0
        at = s + 10 + pos
        stop = e_abs + 1
        while at < stop:
            fh.seek(at)
            piece = fh.read(min(self.slice, stop - at))
            if at + len(piece) < stop:
                cut = piece.rfind(b"],[")
                if cut < 0:
                    raise LineError(pos, f"a sink effect longer than {self.slice:,} bytes")
                piece = piece[:cut + 1]
            nums, widths, strs = self._effects(piece, at, pos)

            def event_at(idx: list[int], p: bytes = piece, ids: Any = (nums, widths, dict(strs))) -> dict[int, Any]:
                return _some_effects(p, idx, self.prefix, *ids)

            self._route_effects(np.full(len(nums), self.obs0 + obs, np.int32), np.arange(count, count + len(nums)),
                                nums, widths, strs, event_at)
            count += len(nums)
            at += len(piece) + 1
        self.obs_total[obs] = count
        runs = self.obs_vis.get(self.obs0 + obs)
        if runs is not None and int(runs[:, 0].sum()) != count:
            raise LineError(pos, f'"visible" covers {int(runs[:, 0].sum())} effects but "events" has {count}; '
                                 "its runs [[n, time], ...] must add up to the number of events")
        return nxt

    def _effects(self, piece: bytes, at: int, off: int) -> tuple[np.ndarray, np.ndarray, list[tuple[int, str]]]:
        """The ids of a slice `[..],[..]` of a sink read (at byte `at` of the line at `off`): numbers
        and digit counts (-1: a text id, in strs), read by the C scanner when it is built."""
        if self.lib is not None and self.mm is not None:
            cap = len(piece) // 12 + 1
            num, width = np.empty(cap, np.int64), np.empty(cap, np.int64)
            arr = np.frombuffer(self.mm, np.uint8)
            try:
                k = self.lib.hs_effects(arr.ctypes.data, at, at + len(piece), self.spec.prefix,
                                        len(self.spec.prefix), num.ctypes.data, width.ctypes.data, cap, True)
            finally:
                del arr
            if k > 0:
                return num[:k], width[:k], []
        pieces = self.spec.eff_re.split(piece) if self.spec.prefix is not None else []
        k = (len(pieces) - 1) // 2
        if k > 0 and not pieces[0] and not pieces[-1] and pieces[2:-1:2].count(b",") == k - 1:
            nums, widths = digits(pieces[1::2])
            return nums, widths.astype(np.int64), []
        try:
            events = orjson.loads(b"[" + piece + b"]")
        except orjson.JSONDecodeError as e:
            raise LineError(off, f"sink effects are not valid JSON: {e}") from None
        if not isinstance(events, list):
            raise LineError(off, "sink effects are not a list")
        strs = [(j, _effect_id(ev, off)) for j, ev in enumerate(events)]
        return np.full(len(events), -1, np.int64), np.zeros(len(events), np.int64), strs

    # -- routing ----------------------------------------------------------------------------
    def _remap(self, names: list[Any], index: dict[Any, int], out: list[Any]) -> np.ndarray:
        return remap_names(names, index, out)

    def _route_part(self, part: Part, base: int, line_end: int | None = None) -> None:
        fmap = self._remap(part.f_names, self.f_index, self.f_names)
        pmap = self._remap(part.proc_names, self.p_index, self.p_names)
        kmap = self._remap(part.key_names, self.k_index, self.k_names)
        if len(self.k_names) > len(self.k_part):
            new = np.array([zlib.crc32(k.encode()) % self.k for k in self.k_names[len(self.k_part):]], np.uint8)
            self.k_part = np.concatenate([self.k_part, new])

        def cat(name: str, dt: Any) -> np.ndarray:
            got = part.cols[name]
            return (got[0] if len(got) == 1 else np.concatenate(got)) if got else np.zeros(0, dt)

        n = part.n
        time, typ = cat("time", np.int64)[:n], cat("type", np.int8)[:n]
        f, proc = fmap[cat("f", np.int16)[:n]], pmap[cat("process", np.int32)[:n]]
        off = cat("off", np.int64)[:n] + base
        end = np.append(off[1:], part.end + base if line_end is None else line_end)
        rec0 = self.n_rec
        s_rec = cat("s_rec", np.int64)
        is_send = np.zeros(n, bool)
        is_send[s_rec] = True
        o = np.flatnonzero(~is_send)
        for name, col in (("rec", o + rec0), ("time", time[o]), ("type", typ[o]), ("f", f[o]), ("proc", proc[o]),
                          ("off", off[o]), ("end", end[o])):
            self.others[name].append(col)
        # sends
        if len(s_rec):
            keys = cat("s_key", np.int32)
            keys = np.where(keys >= 0, kmap[keys], -1)
            nums = cat("s_num", np.int64).copy()
            widths = cat("s_width", np.int64)
            texts = dict(part.s_str)
            cand = np.where(keys >= 0, self.k_part[np.maximum(keys, 0)], 0).astype(np.uint8)
            dest = self._route(nums, widths, texts, cand, keys >= 0)
            rows = {"rec": s_rec + rec0, "time": time[s_rec], "type": typ[s_rec], "f": f[s_rec], "proc": proc[s_rec],
                    "off": off[s_rec], "end": end[s_rec], "num": nums, "width": widths, "key": keys,
                    "seq": cat("s_seq", np.int64)}
            self._write(rows, SEND_DT, dest, texts, self.n_send, self.s_text, 0)
        # sink reads and their effects: the effects of all the chunk's reads spilled at once
        e_num: list[np.ndarray] = []
        e_width: list[np.ndarray] = []
        e_obs: list[np.ndarray] = []
        e_pos: list[np.ndarray] = []
        e_str: list[tuple[int, str]] = []
        starts: list[int] = []
        lines: list[tuple[int, int]] = []
        at = 0
        for j, rec in enumerate(part.obs_rec):
            obs = self.obs0 + len(self.obs_rec)
            self.obs_rec.append(rec + rec0)
            self.obs_full.append(bool(part.obs_full[j]))
            self.obs_final.append(bool(part.obs_final[j]))
            count = len(part.eff_num[j])
            runs = part.obs_vis[j] if j < len(part.obs_vis) else None
            if runs is not None:
                self.obs_vis[obs] = runs
            self.obs_total.append(count)
            if count:
                e_num.append(part.eff_num[j])
                e_width.append(np.asarray(part.eff_width[j], np.int64))
                e_obs.append(np.full(count, obs, np.int32))
                e_pos.append(np.arange(count, dtype=np.int64))
                e_str.extend((at + i, v) for i, v in part.eff_str[j])
                starts.append(at)
                lines.append((int(off[rec]), int(end[rec])))
                at += count
            part.eff_num[j] = part.eff_width[j] = np.zeros(0, np.int64)
        if at:
            def event_at(idx: list[int]) -> dict[int, Any]:
                got: dict[int, Any] = {}
                parsed: dict[int, list[Any]] = {}
                for i in idx:
                    c = int(np.searchsorted(starts, i, side="right")) - 1
                    if c not in parsed:
                        parsed[c] = self._events_of(*lines[c])
                    evs = parsed[c]
                    if i - starts[c] < len(evs):
                        got[i] = evs[i - starts[c]]
                return got

            self._route_effects(np.concatenate(e_obs), np.concatenate(e_pos), np.concatenate(e_num),
                                np.concatenate(e_width), e_str, event_at)
        self.state_recs.extend(r + rec0 for r in part.state_recs)
        if self.start is None and part.start is not None:
            self.start = part.start
        if part.truncated_at is not None:
            self._cut = part.truncated_at + base
        self.n_rec += n

    def _events_of(self, start: int, end: int) -> list[Any]:
        """The effects of the sink read on bytes [start, end) of the file, parsed."""
        d = orjson.loads(bytes(self.mm[start:end]).split(b"\n", 1)[0]) if self.mm is not None else {}
        return list((d.get("value") or {}).get("events") or [])

    def _route_effects(self, obs: np.ndarray, pos: np.ndarray, nums: np.ndarray, widths: np.ndarray,
                       strs: list[tuple[int, str]], event_at: Any) -> None:
        """Spill effects (in file order: of sink read `obs[i]`, at position `pos[i]` in it);
        `event_at(indices)` parses the effects at those indices ({index: effect}), for the keys
        of ids seen here first (they go by their key, as a send would)."""
        if not len(nums):
            return
        nums = nums.copy()
        widths = widths.copy()
        texts = dict(strs)
        dest = self._route(nums, widths, texts, None, None, event_at)
        self._write({"num": nums, "width": widths, "obs": obs, "pos": pos}, EFF_DT, dest, texts, self.n_eff,
                    self.e_text, 1)

    def _route(self, nums: np.ndarray, widths: np.ndarray, texts: dict[int, str], cand: np.ndarray | None,
               has_cand: np.ndarray | None, events: Any = None) -> np.ndarray:
        """Each id's partition: the map's, else (first seen) the candidate (a send's key), or for
        effects (`events`: parses them) the effect's own key, else the id hash."""
        k = self.k
        prefix = self.prefix.decode()
        for i, v in texts.items():  # text of the numeric shape is the same id as the number
            rest = v[len(prefix):] if v.startswith(prefix) else ""
            if 0 < len(rest) <= 18 and rest.isdigit() and rest.isascii():
                nums[i] = int(rest)
                widths[i] = len(rest)
        if events is not None:
            cand, has_cand = self._effect_keys(nums, texts, events)
        dest = np.empty(len(nums), np.uint8)
        is_num = nums >= 0
        small = is_num & (nums < _MAP_LIMIT)
        big = is_num & ~small
        dest[big] = (nums[big] % k).astype(np.uint8)
        if small.any():
            ns = nums[small]
            top = int(ns.max()) + 1
            if top > len(self.idmap):
                grown = np.full(max(top, 2 * len(self.idmap), 1 << 20), _UNSET, np.uint8)
                grown[:len(self.idmap)] = self.idmap
                self.idmap = grown
            cur = self.idmap[ns]
            unset = cur == _UNSET
            if unset.any():
                c = (ns % k).astype(np.uint8)
                if cand is not None and has_cand is not None:
                    c = np.where(has_cand[small], cand[small], c)
                nu, cu = ns[unset], c[unset]
                self.idmap[nu] = cu  # without a sort when each id has one candidate (checked: all kept)
                if not np.array_equal(self.idmap[nu], cu):  # an id with two: its first row's wins
                    u, first = np.unique(nu, return_index=True)
                    self.idmap[u] = cu[first]
                cur = self.idmap[ns]
            dest[small] = cur
        for i in np.flatnonzero(~is_num).tolist():
            v = texts[i]
            p = self.text_map.get(v)
            if p is None:
                if cand is not None and has_cand is not None and has_cand[i]:
                    p = int(cand[i])
                else:
                    p = zlib.crc32(v.encode()) % k
                self.text_map[v] = p
            dest[i] = p
        # text ids that became numbers are numbers for the History too
        for i in list(texts):
            if nums[i] >= 0:
                del texts[i]
        return dest

    def _effect_keys(self, nums: np.ndarray, texts: dict[int, str], events: Any) -> tuple[Any, Any]:
        """(partition of each effect's key, whether it has one) when some id is new to the map
        (rare: an effect seen before any send of it); else (None, None)."""
        fresh = np.zeros(len(nums), bool)
        small = (nums >= 0) & (nums < _MAP_LIMIT)
        if small.any():
            ns = nums[small]
            seen = np.zeros(len(ns), bool)
            inside = ns < len(self.idmap)
            seen[inside] = self.idmap[ns[inside]] != _UNSET
            fresh[np.flatnonzero(small)[~seen]] = True
        for i, v in texts.items():
            if nums[i] < 0 and v not in self.text_map:
                fresh[i] = True
        if not fresh.any():
            return None, None
        wanted = np.flatnonzero(fresh).tolist()
        if self.defer_over is not None and len(wanted) > self.defer_over:  # read later, if the file needs it
            return np.full(len(nums), DEFERRED, np.uint8), np.ones(len(nums), bool)
        evs = events(wanted)
        cand = np.zeros(len(nums), np.uint8)
        has = np.zeros(len(nums), bool)
        for i in wanted:
            ev = evs.get(i)
            key = ev[1] if isinstance(ev, list) and len(ev) > 1 else None
            if key is not None:
                cand[i] = zlib.crc32(str(key).encode()) % self.k
                has[i] = True
        return cand, has

    def _write(self, cols: dict[str, np.ndarray], dt: np.dtype, dest: np.ndarray, texts: dict[int, str],
               counts: list[int], text_lists: list[list[tuple[int, str]]], which: int) -> None:
        """Append rows (`cols`: a column per field of `dt`, row i going to partition `dest[i]`) to
        the partitions' spill files `which` (0: sends, 1: effects), each partition's rows in their
        order; the text ids (`texts`: row -> id) noted at their row number in their partition.
        Nothing is written when the partition's writers are None (a range's routing pass)."""
        if self._files and self._files[0][which] is None:
            return
        for name, code in self.codes.items():  # the range's name codes as the whole file's
            if name in cols:
                c = cols[name]
                cols[name] = np.where(c >= 0, code[np.maximum(c, 0)], c) if name == "key" else code[c]
        n = len(dest)
        bounds = np.concatenate([[0], np.cumsum(np.bincount(dest, minlength=self.k))]).tolist()
        pack = getattr(self.lib, "hs_pack", None) if self.lib is not None and _PACK_IN_C else None
        grouped = pack_rows(cols, dt, dest, bounds, pack)
        if texts:
            order = np.argsort(dest, kind="stable")  # a radix sort for uint8
            at = np.empty(n, np.int64)
            at[order] = np.arange(n)
            for i in sorted(texts):
                p = int(dest[i])
                text_lists[p].append((counts[p] + int(at[i]) - bounds[p], texts[i]))
        for p in range(self.k):
            if bounds[p + 1] > bounds[p]:
                self._files[p][which].write(grouped[bounds[p]:bounds[p + 1]].data.cast("B"))
                counts[p] += bounds[p + 1] - bounds[p]

    # -- the check --------------------------------------------------------------------------
    def check(self, *, order: str | None, examples: int, workers: int = 1) -> dict[str, Any]:
        """Check every partition, `workers` at a time in forked processes (1: in turn, here), and
        merge (exactly_once.finish). A worker that dies (killed by the OOM killer) raises
        HistoryError naming the memory budget."""
        sealed = self.seal()
        self.idmap = np.zeros(0, np.uint8)  # the split's maps are not needed any more
        self.text_map = {}
        with phase("check"):
            outs = self._check_all(sealed, order, examples, workers)
        with phase("merge"):
            return exactly_once.finish([o[0] for o in outs], examples=examples, first_at=[o[1] for o in outs])

    def _check_all(self, sealed: Sealed, order: str | None, examples: int,
                   workers: int) -> list[tuple[exactly_once.Partial, dict[int, int]]]:
        if workers <= 1 or self.k <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            outs = [sealed.check_partition(p, order, examples) for p in range(self.k)]
        else:
            global _SEALED
            _SEALED = sealed  # inherited by the forked workers, never pickled
            pool = ProcessPoolExecutor(min(workers, self.k), mp_context=multiprocessing.get_context("fork"))
            done = False
            try:
                got = list(pool.map(_check_one, [(p, order, examples) for p in range(self.k)]))
                outs = [o for o, _ in got]
                global WORKER_PEAK
                WORKER_PEAK = max(WORKER_PEAK, max(g for _, g in got))
                done = True
            except BrokenProcessPool:
                raise HistoryError(self.path, None, "a process checking a partition died (killed for lack of "
                                                    "memory?): give a smaller --memory budget or "
                                                    "ONCEPROOF_CHECK_WORKERS=1") from None
            finally:
                _SEALED = None
                if not done:  # an error or Ctrl-C: the workers stop now, not after their partition
                    for proc in list(pool._processes.values()):
                        proc.terminate()
                pool.shutdown(wait=True, cancel_futures=True)
        return outs

    def seal(self) -> Sealed:
        """What a partition's check needs besides its spill files: small, picklable (sent to
        Spark's executors by checkers/spark.py)."""
        others = {c: (np.concatenate(v) if v else np.zeros(0, np.int64)) for c, v in self.others.items()}
        self.others = {}
        obs_total = np.array(self.obs_total, np.int64)
        return Sealed(
            path=self.path, folder=str(self.folder), k=self.k, n_rec=self.n_rec, prefix=self.prefix.decode(),
            others=others, obs_at=np.searchsorted(others["rec"], np.array(self.obs_rec, np.int64)),
            state_at=np.searchsorted(others["rec"], np.array(self.state_recs, np.int64)),
            obs_total=obs_total, obs_grec=np.array(self.obs_rec, np.int64),
            obs_full=np.array(self.obs_full, bool), obs_final=np.array(self.obs_final, bool), obs_vis=self.obs_vis,
            f_names=list(self.f_names), p_names=list(self.p_names), k_names=list(self.k_names),
            s_text=self.s_text, e_text=self.e_text, start=self.start, warnings=list(self.warnings))


_SEALED: Sealed | None = None


WORKER_PEAK = 0  # bytes: the largest growth of a worker's resident set over what it inherited (benchmarks)


def _status_kib(field: str) -> int:
    try:
        with open("/proc/self/status") as f:
            return next((int(x.split()[1]) for x in f if x.startswith(field)), 0)
    except OSError:
        return 0


def _check_one(job: tuple[int, str | None, int]) -> tuple[tuple[exactly_once.Partial, dict[int, int]], int]:
    """A forked worker's job: partition `job[0]` of the split its parent sealed; and how much its
    resident set grew (bytes, peak over the pages inherited from the parent at the fork)."""
    assert _SEALED is not None
    base = _status_kib("VmRSS:")
    out = _SEALED.check_partition(*job)
    return out, max(0, _status_kib("VmHWM:") - base) << 10


@dataclass
class Rows:
    """A partition's rows: its sends (SEND_DT) and sink effects (EFF_DT) in file order, and its
    text ids ((row, id) of the rows whose id is not a number)."""

    sends: np.ndarray
    effs: np.ndarray
    s_text: list[tuple[int, str]]
    e_text: list[tuple[int, str]]


@dataclass
class Sealed:
    """A finished split: the records that are not sends, the name tables, the text ids per
    partition, and where the spill files are (`folder`, `s<p>.bin`/`e<p>.bin`)."""

    path: str
    folder: str
    k: int
    n_rec: int
    prefix: str
    others: dict[str, np.ndarray]
    obs_at: np.ndarray
    state_at: np.ndarray
    obs_total: np.ndarray
    obs_grec: np.ndarray
    obs_full: np.ndarray
    obs_final: np.ndarray
    obs_vis: dict[int, np.ndarray]
    f_names: list[str]
    p_names: list[Any]
    k_names: list[str]
    s_text: list[list[tuple[int, str]]]
    e_text: list[list[tuple[int, str]]]
    start: Any
    warnings: list[str]
    # a history not on this machine's disk (object storage, checkers/ranges.py): the bytes of
    # the records that are not sends (but sink reads), by offset, read with the ranges in pass 1,
    # so that the partitions' checks (progress, faults, notes, examples) do not fetch them one by one
    lines: dict[int, bytes] = dataclasses.field(default_factory=dict)

    def check_partition(self, p: int, order: str | None, examples: int,
                        rows: Rows | None = None) -> tuple[exactly_once.Partial, dict[int, int]]:
        """exactly_once.partial of partition `p` (its `rows`, else its spill files), and where
        its example events first appear."""
        h, e_pos = self.history(p, rows)
        part = exactly_once.partial(h, order=order, examples=examples)
        part.records = self.n_rec
        wanted = {e for c in part.candidates.values() for e, _ in c} | {e for e, _ in part.unseen_candidates}
        big = int(self.obs_total.max()) + 2 if len(self.obs_total) else 1
        return part, _first_at(h, e_pos, wanted, self.obs_grec, big)

    def history(self, p: int, rows: Rows | None = None) -> tuple[History, np.ndarray]:
        """Partition `p` as a History of its own (its sends, every other record, its effects),
        and the position of each of its effects in its sink read. `rows`: the partition's
        rows (from Spark's shuffle), else read from its spill files."""
        others = self.others
        if rows is None:
            folder = Path(self.folder)
            rows = Rows(np.fromfile(folder / f"s{p}.bin", SEND_DT), np.fromfile(folder / f"e{p}.bin", EFF_DT),
                        self.s_text[p], self.e_text[p])
        sends, effs = rows.sends, rows.effs
        n_o, n_s = len(others["rec"]), len(sends)
        # both are in file order: merge them by where each goes (no sort of the whole)
        at_o = np.searchsorted(sends["rec"], others["rec"]) + np.arange(n_o)
        at_s = np.searchsorted(others["rec"], sends["rec"]) + np.arange(n_s)
        inv = np.concatenate([at_o, at_s])

        def merged(a: np.ndarray, b: np.ndarray, dt: Any) -> np.ndarray:
            out = np.empty(n_o + n_s, dt)
            out[at_o] = a
            out[at_s] = b
            return out

        h = History()
        h.path, h._data = self.path, None
        h._lines = self.lines or None
        h.rec_global = merged(others["rec"], sends["rec"], np.int64)
        h.time = merged(others["time"], sends["time"], np.int64)
        h.type = merged(others["type"], sends["type"], np.int8)
        h.f = merged(others["f"], sends["f"], np.int16)
        h.process = merged(others["proc"], sends["proc"], np.int32)
        h._offsets = np.append(merged(others["off"], sends["off"], np.int64), 0)
        h._ends = merged(others["end"], sends["end"], np.int64)
        h.f_names, h.process_names, h.key_names = list(self.f_names), list(self.p_names), list(self.k_names)
        h.send_rec = inv[n_o:]
        h.obs_rec = inv[self.obs_at]
        h.obs_full = self.obs_full.copy()
        h.obs_final = self.obs_final.copy()
        h.obs_total = self.obs_total
        h.state_recs = inv[self.state_at].tolist()
        h.start = self.start
        h.warnings = list(self.warnings)
        h.truncated = bool(self.warnings)
        h.eff_obs = effs["obs"].astype(np.int32)
        del inv
        s_num = sends["num"].copy()
        s_str = list(rows.s_text)
        for i, _ in s_str:
            s_num[i] = -1
        e_num = effs["num"].copy()
        e_str = list(rows.e_text)
        for i, _ in e_str:
            e_num[i] = -1
        _intern(h, self.prefix, s_num, sends["width"].astype(np.int64), s_str, e_num,
                effs["width"].astype(np.int64), e_str, effs["pos"].copy(), sends["key"].copy(),
                sends["seq"].copy(), h.raw, sparse=self.k > 1)
        if self.obs_vis:  # each effect's visibility time: its read's run at its position in the read
            h.eff_vis = visible_times(h, [])
            obs_ids = np.array(sorted(self.obs_vis), np.int64)
            has = np.isin(h.eff_obs, obs_ids)
            if has.any():  # every run's end keyed by (read, end), one search for all effects
                big = int(self.obs_total.max()) + 1
                keys = np.concatenate([o * big + np.cumsum(self.obs_vis[o][:, 0]) for o in obs_ids.tolist()])
                times = np.concatenate([self.obs_vis[o][:, 1] for o in obs_ids.tolist()])
                seen = np.flatnonzero(has)
                at = np.searchsorted(keys, h.eff_obs[seen].astype(np.int64) * big + effs["pos"][seen], side="right")
                h.eff_vis[seen] = np.minimum(times[np.minimum(at, len(times) - 1)], h.eff_vis[seen])
        return h, effs["pos"]


def _first_at(h: History, e_pos: np.ndarray, wanted: set[int], obs_grec: np.ndarray, big: int) -> dict[int, int]:
    """Where each event in `wanted` first appears in the whole history, as a number that orders
    records and the effects within a read the way the reader numbers events."""
    if not wanted:
        return {}
    w = np.array(sorted(wanted), np.int64)
    out: dict[int, int] = {}
    assert h.rec_global is not None
    s = np.flatnonzero(np.isin(h.send_eid, w))
    for e, r in zip(h.send_eid[s].tolist(), h.rec_global[h.send_rec[s]].tolist()):
        at = r * big
        if at < out.get(e, at + 1):
            out[e] = at
    f = np.flatnonzero(np.isin(h.eff_eid, w))
    if len(f):
        for e, o, pos in zip(h.eff_eid[f].tolist(), h.eff_obs[f].tolist(), e_pos[f].tolist()):
            at = int(obs_grec[o]) * big + pos + 1
            if at < out.get(e, at + 1):
                out[e] = at
    return out


def _some_effects(piece: bytes, idx: list[int], prefix: bytes, nums: np.ndarray, widths: np.ndarray,
                  texts: dict[int, str]) -> dict[int, Any]:
    """The effects at indices `idx` of a slice `[..],[..]` of a sink read, parsed ({index:
    effect}); `nums`, `widths`, `texts`: the slice's ids as `Split._effects` read them. A few
    are cut out of the slice at its "],[" and parsed alone (each checked against its id); when
    many are wanted, or the cut does not give the slice's ids (a "],[" inside a key), the whole
    slice is parsed."""
    if len(idx) * 64 < len(nums):
        parts = piece.split(b"],[")
        if len(parts) == len(nums):
            got: dict[int, Any] = {}
            last = len(parts) - 1
            for i in idx:
                if i > last:
                    continue
                one = parts[i]
                one = (one[1:] if i == 0 else b"[" + one)
                one = (one[:-1] if i == last else one + b"]")
                try:
                    ev = orjson.loads(one)
                except orjson.JSONDecodeError:
                    break
                want = texts.get(i) if nums[i] < 0 else prefix.decode() + str(int(nums[i])).zfill(int(widths[i]))
                if not (isinstance(ev, list) and ev and ev[0] == want):
                    break
                got[i] = ev
            else:
                return got
    evs = orjson.loads(b"[" + piece + b"]")
    return {i: evs[i] for i in idx if i < len(evs)}


def line_start(fh: Any, at: int, size: int) -> int:
    """Where the first line that starts at or after byte `at` of the open file `fh` (`size`
    bytes) starts: `at` itself when it is 0 or follows a newline, else after the next newline
    (`size` when there is none). The ranges [line_start(a), line_start(b)) of cut points
    a < b cover every line once, each in the range where it starts."""
    if at <= 0:
        return 0
    if at >= size:
        return size
    end = _find(fh, b"\n", at - 1, size)
    return end + 1 if end >= 0 else size


def _find(fh: Any, needle: bytes, start: int, size: int) -> int:
    pos = start
    while pos < size:
        fh.seek(pos)
        buf = fh.read(1 << 20)
        if not buf:
            break
        i = buf.find(needle)
        if i >= 0:
            return pos + i
        pos += len(buf)
    return -1


_EVENT_LINE = re.compile(rb'"f":\s*"(?:send|observe|final-read)"')


def read_without_events(path: Any) -> History:
    """The history at `path` without its sends and sink reads (every other record: start,
    faults, progress, state, the harness's notes), read in bounded memory: the lines are
    streamed in 8 MiB pieces and a line is dropped by its first 4 KiB (a sink read of any size
    is skipped without being held). For the checkers that need the rest of a history too big
    to read whole (faults). Raises HistoryError as `read_history` does."""
    from onceproof.checkers.history.model import HistoryError as _HE

    try:
        src = open(path, "rb")
    except OSError as e:
        raise _HE(str(path), None, f"cannot open: {e.strerror or e}") from None
    fd, tmp = tempfile.mkstemp(prefix="onceproof-light-", suffix=".jsonl", dir=os.environ.get("ONCEPROOF_SCRATCH")
                               if os.environ.get("ONCEPROOF_SCRATCH") and os.path.isdir(
                                   os.environ["ONCEPROOF_SCRATCH"]) else None)
    try:
        with src, os.fdopen(fd, "wb") as out:
            pending = b""  # the start of the current line, while its fate is undecided
            keep: bool | None = None  # the current line's fate once decided
            while chunk := src.read(8 << 20):
                start = 0
                while start < len(chunk):
                    nl = chunk.find(b"\n", start)
                    piece = chunk[start:] if nl < 0 else chunk[start:nl + 1]
                    start = len(chunk) if nl < 0 else nl + 1
                    if keep is None:
                        pending += piece
                        if nl >= 0 or len(pending) >= 4096:
                            keep = not _EVENT_LINE.search(pending[:4096])
                            if keep:
                                out.write(pending)
                            pending = b""
                    elif keep:
                        out.write(piece)
                    if nl >= 0:
                        keep = None
            if pending and not _EVENT_LINE.search(pending[:4096]):
                out.write(pending)
        h = read_history(tmp)
        with open(tmp, "rb") as f:
            h._data = f.read()  # records are read from memory: the file goes now (it is small)
        return h
    finally:
        os.unlink(tmp)
