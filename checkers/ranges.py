"""The split of a history into partitions of events, by byte ranges of the file: for an engine
that runs it on many machines at once (checkers/spark.py).

checkers/partitioned.py's `Split` routes an event to the partition where its first record goes
(a send by its key's hash, an effect seen before any send by its own key, else its id's hash),
and every later record of that id follows it: a rule that runs along the file. Here the same
`Split` runs on byte ranges of the file (each range: the lines that start in it,
`partitioned.line_start`), in two passes of one task per range, with one fold in between:

1. `scan`: the range's Split, keeping no rows: what it learned (its records that are not
   sends, its sink reads, its name tables, its warnings) and each id first seen in it with
   the partition it would go to (its slice of the id map, its text ids).
2. `fold` (sequential, small): the ranges in file order make the whole file's record and read
   numbers, name tables (in order of first appearance, as one pass makes them), the records
   that are not sends (a `Sealed`, as `Split.seal` makes it) and the id map: an id goes where
   the first range that saw it sent it (every id's records thus share one partition whatever
   range they are in); one `RangeJob` per range.
   A range is read through a `Source` (checkers/source.py): a local file as it is, an object
   in object storage staged as a sparse temporary file (its range only); from a staged range
   pass 1 also keeps the bytes of its records that are not sends (`Sealed.lines`), so that the
   partitions' checks do not fetch them one by one.
3. `route`: the range's Split again, with the file's id map, numbers and name codes: its rows
   packed by partition (`RangePart`s), the same bytes a whole-file Split would spill.
4. `gather`: a partition's RangeParts in range order as its `Rows`, checked by
   `Sealed.check_partition`; `exactly_once.finish` merges the partials as for the local check.

Memory: a range task holds a chunk of the file (`chunk` bytes, as Split), its id map (1 byte per
id number up to the largest it saw) and its rows (about 60 bytes a send, 21 an effect); the
fold holds the whole id map (1 byte per id number below `partitioned._MAP_LIMIT`), the text
ids, and the records that are not sends.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onceproof.checkers import exactly_once
from onceproof.checkers.history.columns import remap_names
from onceproof.checkers.history.model import HistoryError
from onceproof.checkers.partitioned import _UNSET, DEFER_OVER, DEFERRED, EFF_DT, SEND_DT, Rows, Sealed, Split, _spill_folder
from onceproof.checkers.source import Source, open_source


def as_source(path: Any) -> Source:
    """`path` as a Source (checkers/source.py): a Source as it is, a path or s3:// URL opened."""
    return path if hasattr(path, "stage") else open_source(path)


@contextlib.contextmanager
def _split(src: Source, a: int, b: int, k: int, chunk: int) -> Iterator[Split]:
    """A Split of the lines starting in bytes [a, b) of `src`, over the range staged as a local
    file (the file itself when it is one), named as `src` in its messages and warnings."""
    with src.stage(a, b) as local:
        split = Split(local, Path("."), k, chunk)
        split.name = src.name
        if local != src.name:
            split.line_at = src.line_of
        yield split


@dataclass
class RangeScan:
    """What the first pass learned from one byte range (record and read numbers, name codes:
    the range's own, from 0). `error`: (line, reason) of the range's first bad line."""

    n_rec: int = 0
    prefix: bytes = b""
    f_names: list[str] = field(default_factory=list)
    p_names: list[Any] = field(default_factory=list)
    k_names: list[str] = field(default_factory=list)
    others: dict[str, np.ndarray] = field(default_factory=dict)
    obs_rec: list[int] = field(default_factory=list)
    obs_full: list[bool] = field(default_factory=list)
    obs_final: list[bool] = field(default_factory=list)
    obs_total: list[int] = field(default_factory=list)
    obs_vis: dict[int, np.ndarray] = field(default_factory=dict)
    state_recs: list[int] = field(default_factory=list)
    start: Any = None
    warnings: list[str] = field(default_factory=list)
    id_lo: int = 0  # the range's id map, from id number id_lo on
    idmap: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint8))
    text_map: dict[str, int] = field(default_factory=dict)
    error: tuple[int | None, str] | None = None
    lines: dict[int, bytes] = field(default_factory=dict)  # a staged range: its `others`' bytes (Sealed.lines)


@dataclass
class RangeJob:
    """The second pass over range `r` (bytes [a, b) cut at lines): the file's numbers of its
    first record (`rec0`) and first sink read (`obs0`), and its name codes as the file's
    (`codes`: column -> array, the range's code -> the file's)."""

    r: int
    a: int
    b: int
    rec0: int
    obs0: int
    codes: dict[str, np.ndarray]
    deferred: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ids first seen here, in a read
    deferred_text: set[str] = field(default_factory=set)


@dataclass
class RangePart:
    """Range `r`'s rows of one partition: packed sends (SEND_DT) and effects (EFF_DT), or the
    files that hold them (`files`: sends', effects'), and its text ids ((row within these rows,
    id))."""

    r: int
    sends: bytes
    effs: bytes
    s_text: list[tuple[int, str]]
    e_text: list[tuple[int, str]]
    files: tuple[str, str] | None = None


def cuts(size: int, n: int) -> list[int]:
    """`n` + 1 cut points of a `size`-byte file into `n` ranges of nearly equal size (each task
    moves its ends to line starts itself)."""
    return [size * i // n for i in range(n + 1)]


def scan(path: Any, a: int, b: int, k: int, chunk: int, defer_over: int = DEFER_OVER) -> RangeScan:
    """The first pass over the lines that start in bytes [a, b) of the history at `path`, for
    `k` partitions, reading `chunk` bytes at a time; the keys of a sink read (or slice) with
    more than `defer_over` ids new to the range are left for `resolve` (DEFERRED). A bad line
    is returned (`error`), not raised (the fold raises the first in file order). `path`: a
    file, an s3:// URL or a Source."""
    src = as_source(path)
    lines: dict[int, bytes] = {}
    try:
        with _split(src, a, b, k, chunk) as split:
            split.defer_over = defer_over
            split.run((a, b), [(None, None)] * k)
            others = {c: (np.concatenate(v) if v else np.zeros(0, np.int64)) for c, v in split.others.items()}
            if split.path != src.name:  # staged: keep the bytes of its records that are not sends
                lines = _lines(split.path, others, set(split.obs_rec))
    except HistoryError as e:
        return RangeScan(error=(e.line, e.reason))
    set_ = np.flatnonzero(split.idmap != _UNSET)
    lo, hi = (int(set_[0]), int(set_[-1]) + 1) if len(set_) else (0, 0)
    return RangeScan(
        n_rec=split.n_rec, prefix=split.prefix, f_names=split.f_names, p_names=split.p_names,
        k_names=split.k_names, lines=lines, others=others,
        obs_rec=split.obs_rec, obs_full=split.obs_full, obs_final=split.obs_final, obs_total=split.obs_total,
        obs_vis=split.obs_vis, state_recs=split.state_recs, start=split.start, warnings=split.warnings,
        id_lo=lo, idmap=split.idmap[lo:hi].copy(), text_map=split.text_map)


LINE_CAP = 1 << 16  # a record longer than this is not kept by `_lines` (read again if ever needed)


def _lines(staged: str, others: dict[str, np.ndarray], reads: set[int]) -> dict[int, bytes]:
    """The bytes of a staged range's records that are not sends, by offset in the history,
    but sink reads (`reads`: their record numbers; huge, and read from the rows) and lines
    longer than LINE_CAP."""
    out: dict[int, bytes] = {}
    with open(staged, "rb") as fh:
        for rec, off, end in zip(others["rec"].tolist(), others["off"].tolist(), others["end"].tolist()):
            if rec not in reads and end - off <= LINE_CAP:
                fh.seek(off)
                out[off] = fh.read(end - off)
    return out


def _codes(names: list[Any], index: dict[Any, int], out: list[Any]) -> np.ndarray:
    return remap_names(names, index, out)[:-1]


def fold(path: Any, k: int, bounds: list[int], scans: list[RangeScan]) -> tuple[Sealed, list[RangeJob], np.ndarray,
                                                                               dict[str, int]]:
    """The ranges' first passes (`scans`, in file order, of the ranges between `bounds`) as the
    whole file's: the Sealed split (no spill folder: the rows come from `route`), one RangeJob
    per range, the id map and the text ids' partitions. Raises HistoryError: the first bad
    line of the file."""
    path = as_source(path).name
    for s in scans:
        if s.error is not None:
            raise HistoryError(path, s.error[0], s.error[1])
    whole = Split(path, Path(""), k)
    whole.prefix = next((s.prefix for s in scans if s.prefix), b"")
    jobs = []
    top = max((s.id_lo + len(s.idmap) for s in scans), default=0)
    idmap = np.full(top, _UNSET, np.uint8)
    text_map: dict[str, int] = {}
    for r, s in enumerate(scans):
        rec0, obs0 = whole.n_rec, len(whole.obs_rec)
        codes = {"f": _codes(s.f_names, whole.f_index, whole.f_names),
                 "proc": _codes(s.p_names, whole.p_index, whole.p_names),
                 "key": _codes(s.k_names, whole.k_index, whole.k_names)}
        o = s.others
        if len(o["rec"]):
            for c in ("time", "type", "off", "end"):
                whole.others[c].append(o[c])
            whole.others["rec"].append(o["rec"] + rec0)
            whole.others["f"].append(codes["f"][o["f"]])
            whole.others["proc"].append(codes["proc"][o["proc"]])
        whole.obs_rec.extend(x + rec0 for x in s.obs_rec)
        whole.obs_full.extend(s.obs_full)
        whole.obs_final.extend(s.obs_final)
        whole.obs_total.extend(s.obs_total)
        whole.obs_vis.update((obs0 + i, runs) for i, runs in s.obs_vis.items())
        whole.state_recs.extend(x + rec0 for x in s.state_recs)
        if whole.start is None:
            whole.start = s.start
        whole.warnings.extend(s.warnings)
        whole.n_rec += s.n_rec
        seg = idmap[s.id_lo:s.id_lo + len(s.idmap)]  # a view: an id keeps the partition of its first range
        unset = seg == _UNSET
        seg[unset] = s.idmap[unset]
        job = RangeJob(r, bounds[r], bounds[r + 1], rec0, obs0, codes)
        job.deferred = s.id_lo + np.flatnonzero(unset & (s.idmap == DEFERRED))
        for v, p in s.text_map.items():
            if v not in text_map:
                text_map[v] = p
                if p == DEFERRED:
                    job.deferred_text.add(v)
        jobs.append(job)
        s.others, s.idmap = {}, np.zeros(0, np.uint8)
    sealed = whole.seal()
    for s in scans:
        sealed.lines.update(s.lines)
        s.lines = {}
    return sealed, jobs, idmap, text_map


def resolve(path: Any, job: RangeJob, k: int, chunk: int, top: int) -> tuple[np.ndarray, dict[str, int]]:
    """The partitions of the ids whose first record in the file is an effect in `job`'s range
    (`job.deferred`, `job.deferred_text`; `top`: the length of the file's id map): the range's
    Split again, with every other id already mapped, so that only the sink reads holding them
    are parsed for their keys. (partition per deferred id, partition per deferred text id)."""
    with _split(as_source(path), job.a, job.b, k, chunk) as split:
        split.idmap = np.zeros(top, np.uint8)
        split.idmap[job.deferred] = _UNSET
        split.text_map = _AllBut(job.deferred_text)
        split.run((job.a, job.b), [(None, None)] * k)
    return split.idmap[job.deferred].copy(), {v: dict.__getitem__(split.text_map, v) for v in job.deferred_text}


class _AllBut(dict):  # type: ignore[type-arg]
    """A text map that has every text id but `pending` (until they are set)."""

    def __init__(self, pending: set[str]) -> None:
        super().__init__()
        self.pending = pending

    def get(self, v: Any, default: Any = None) -> Any:
        return super().get(v, default) if v in self.pending else 0

    def __contains__(self, v: Any) -> bool:
        return v not in self.pending or super().__contains__(v)


def settle(jobs: list[RangeJob], got: list[tuple[np.ndarray, dict[str, int]]], idmap: np.ndarray,
           text_map: dict[str, int]) -> None:
    """Put the partitions `resolve` found (`got[i]`: of `jobs[i]`) into the file's maps."""
    for job, (parts, texts) in zip(jobs, got):
        idmap[job.deferred] = parts
        text_map.update(texts)


def route(path: Any, job: RangeJob, k: int, chunk: int, idmap: np.ndarray, text_map: dict[str, int],
          folder: str | None = None) -> list[tuple[int, RangePart]]:
    """The second pass over `job`'s range: its rows by partition ((partition, RangePart), for
    the partitions it has rows of), routed by the file's `idmap` and `text_map` (from `fold`);
    in memory, or written to files in `folder` (`r<range>-s<partition>.bin`, `-e`: sends,
    effects). Raises HistoryError as Split.run (the first pass saw the same bytes: it does not)."""
    names = [(f"{folder}/r{job.r}-s{p}.bin", f"{folder}/r{job.r}-e{p}.bin") for p in range(k)] if folder else []
    with _split(as_source(path), job.a, job.b, k, chunk) as split:
        split.n_rec, split.obs0, split.codes = job.rec0, job.obs0, job.codes
        split.idmap, split.text_map = idmap, text_map  # only read: every id is in them
        outs: list[Any] = ([(open(a, "wb", buffering=1 << 20), open(b, "wb", buffering=1 << 20)) for a, b in names]
                           if folder else [(io.BytesIO(), io.BytesIO()) for _ in range(k)])
        try:
            split.run((job.a, job.b), outs)
        finally:
            if folder:
                for a, b in outs:
                    a.close()
                    b.close()
    got = []
    for p in range(k):
        if split.n_send[p] or split.n_eff[p]:
            if folder:
                part = RangePart(job.r, b"", b"", split.s_text[p], split.e_text[p], names[p])
            else:
                part = RangePart(job.r, outs[p][0].getvalue(), outs[p][1].getvalue(), split.s_text[p], split.e_text[p])
            got.append((p, part))
    return got


def gather(parts: Iterable[RangePart]) -> Rows:
    """One partition's rows from its ranges' RangeParts (any order): in file order, text ids
    numbered by row in the whole partition."""
    ordered = sorted(parts, key=lambda x: x.r)
    for x in ordered:
        if x.files is not None:
            x.sends, x.effs = (Path(f).read_bytes() for f in x.files)
    s_text: list[tuple[int, str]] = []
    e_text: list[tuple[int, str]] = []
    n_s = n_e = 0
    for x in ordered:
        s_text.extend((n_s + i, v) for i, v in x.s_text)
        e_text.extend((n_e + i, v) for i, v in x.e_text)
        n_s += len(x.sends) // SEND_DT.itemsize
        n_e += len(x.effs) // EFF_DT.itemsize
    sends = np.frombuffer(b"".join(x.sends for x in ordered), SEND_DT)
    effs = np.frombuffer(b"".join(x.effs for x in ordered), EFF_DT)
    return Rows(sends, effs, s_text, e_text)


def plan(path: Any, k: int, n: int, chunk: int,
         defer_over: int = DEFER_OVER) -> tuple[Sealed, list[RangeJob], np.ndarray, dict[str, int]]:
    """Steps 1 and 2 in this process, one range after another: `fold`'s result with the
    deferred ids resolved (the maps `route` takes). `path`: a file, an s3:// URL or a Source.
    Raises HistoryError."""
    path = as_source(path)
    bounds = cuts(path.size(), n)
    sealed, jobs, idmap, text_map = fold(path, k, bounds, [scan(path, bounds[r], bounds[r + 1], k, chunk, defer_over)
                                                         for r in range(n)])
    pending = [j for j in jobs if len(j.deferred) or j.deferred_text]
    settle(pending, [resolve(path, j, k, chunk, len(idmap)) for j in pending], idmap, text_map)
    return sealed, jobs, idmap, text_map


def check_path(path: Any, k: int, n: int, *, order: str | None = None, examples: int = 10,
               chunk: int = 64 << 20, fs: set[str] | None = None, spill_dir: Any = None,
               defer_over: int = DEFER_OVER) -> dict[str, Any]:
    """The four steps in this process, one range after another (what checkers/spark.py runs as
    tasks): the exactly-once check of the history at `path` by `k` partitions and `n` ranges.
    `fs`: filled with the history's operation names. `defer_over`: as `scan`. `spill_dir`: the routed rows go through
    files in a folder made there (else in memory). Result as `exactly_once.check`; raises
    HistoryError."""
    path = as_source(path)
    sealed, jobs, idmap, text_map = plan(path, k, n, chunk, defer_over)
    if fs is not None:
        fs.update(sealed.f_names)
    by_part: list[list[RangePart]] = [[] for _ in range(k)]
    with _spill_folder(spill_dir) if spill_dir else contextlib.nullcontext() as folder:
        for job in jobs:
            for p, part in route(path, job, k, chunk, idmap, text_map, str(folder) if folder else None):
                by_part[p].append(part)
        outs = [sealed.check_partition(p, order, examples, gather(by_part[p])) for p in range(k)]
    return exactly_once.finish([o[0] for o in outs], examples=examples, first_at=[o[1] for o in outs])
