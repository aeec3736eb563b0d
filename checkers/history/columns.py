"""The column builder both readers fill: a `Part` per stretch of the file (the pure-Python
reader's chunks or halves, the C scanner's halves), then `merge` joins the parts into one
`History` and interns event ids into event numbers (eid) in order of first appearance."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from onceproof.checkers.history.lines import BigObservation
from onceproof.checkers.history.model import INVOKE, History


class Part:
    """What one stretch of a history file holds, with local codes (merged by `merge`): per
    record the columns in `cols` (lists of numpy arrays, one per chunk), the names behind the
    f, process and key codes, sends, observations and their effects."""

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
        self.obs_vis: list[np.ndarray | None] = []  # per observation: its `visible` runs [[n, t], ...] or None
        self.state_recs: list[int] = []
        self.start: Any = None
        self.truncated_at: int | None = None  # offset of an ignored cut last line

    def add_records(self, n: int, times: np.ndarray, types: np.ndarray, fs: np.ndarray, procs: np.ndarray,
                    offs: np.ndarray) -> None:
        """Append a chunk's per-record columns, keeping its first `n` records (a cut last line's
        slot, always the last, is dropped by giving a smaller `n`)."""
        for name, col in (("time", times), ("type", types), ("f", fs), ("process", procs), ("off", offs)):
            self.cols[name].append(col[:n] if len(col) > n else col)
        self.end = 0  # offset after the last byte consumed

    def f_code(self, f: Any) -> int:
        """The part's code of the name `f` (new names numbered in order); TypeError if not a str."""
        c = self.f_index.get(f)
        if c is None:
            if not isinstance(f, str):
                raise TypeError
            c = self.f_index[f] = len(self.f_names)
            self.f_names.append(f)
        return c

    def proc_code(self, p: Any) -> int:
        """The part's code of the process `p`; TypeError if neither a str nor an int."""
        c = self.proc_index.get(p)
        if c is None:
            if not isinstance(p, (str, int)):
                raise TypeError
            c = self.proc_index[p] = len(self.proc_names)
            self.proc_names.append(p)
        return c

    def key_code(self, key: Any) -> int:
        """The part's code of an event key (as text), -1 for None."""
        if key is None:
            return -1
        key = str(key)
        c = self.key_index.get(key)
        if c is None:
            c = self.key_index[key] = len(self.key_names)
            self.key_names.append(key)
        return c


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
            at = self._rev.get(value)
            if at is not None and at >= start and (stop is None or at < stop):
                return at
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


def remap_names(names: list[Any], index: dict[Any, int], out: list[Any], dtype: Any = np.int64) -> np.ndarray:
    """A part's name table (`names`, its codes 0..n-1) -> the codes of the same names in a
    whole table (`out`, found through `index`: name -> code), the names new to it appended to
    both; one more code at the end (0: a part's code -1 means none, and indexes it)."""
    codes = []
    for name in names:
        c = index.get(name)
        if c is None:
            c = index[name] = len(out)
            out.append(name)
        codes.append(c)
    return np.array(codes + [0], dtype=dtype)


def merge(parts: list[Part], prefix: str, path: str | None, data: bytes | None) -> History:
    """One History from the parts of a file, in file order. `prefix`: the event ids' text before
    their digits (shape.id_prefix); `path`/`data`: where `History.raw` reads records back (the
    bytes in memory, else the file). An ignored cut line is left in `warnings` as "\\0<offset>"
    for lines.name_cut_lines."""
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
    vis: list[tuple[int, int, np.ndarray]] = []  # (observation, its first effect, runs) of reads with `visible`
    rec_base = send_base = obs_base = eff_base = 0
    for part in parts:
        fmap = remap_names(part.f_names, f_index, h.f_names, np.int16)
        pmap = remap_names(part.proc_names, p_index, h.process_names, np.int32)
        kmap = remap_names(part.key_names, k_index, h.key_names, np.int32)

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
            runs = part.obs_vis[j] if j < len(part.obs_vis) else None
            if runs is not None:
                vis.append((obs_base + j, eff_base, runs))
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
    if vis:
        h.eff_vis = visible_times(h, [(o, np.arange(start, start + int(r[:, 0].sum())), r) for o, start, r in vis])
    return h


def visible_times(h: History, runs: list[tuple[int, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Per effect of `h` (int64 ns, the run's clock): when it became visible in the sink. The
    observation's time by default; for each (observation, the rows of its effects in h's effect
    columns, its `visible` runs [[n, t], ...] in sink order), the run's time, bounded by the
    observation's time (an effect cannot become visible after it was seen: a skewed server clock
    never makes a sighting later than the read that saw it)."""
    out = h.time[h.obs_rec[h.eff_obs]].astype(np.int64, copy=True) if len(h.eff_obs) else np.zeros(0, np.int64)
    for obs, rows, r in runs:
        if len(rows):
            t = np.repeat(r[:, 1], r[:, 0])
            out[rows] = np.minimum(t[:len(rows)], h.time[h.obs_rec[obs]])
    return out


def _intern(h: History, prefix: str, s_num: np.ndarray, s_width: np.ndarray, s_str: list[tuple[int, str]],
            e_num: np.ndarray, e_width: np.ndarray, e_str: list[tuple[int, str]], e_pos: np.ndarray,
            s_key: np.ndarray, s_seq: np.ndarray, raw: Any, sparse: bool = False) -> None:
    """Event numbers (eid) in order of first appearance, as the one-line-at-a-time reader gives them.
    `sparse`: the id numbers are a sample of a wider range (a partition of a history's events,
    checkers/partitioned.py): they are made dense by sorting them as soon as they span more than
    twice their count, rather than tables as wide as the range."""
    # ids given as text that have the numeric shape become numbers too
    for lst, col_num, col_width in ((s_str, s_num, s_width), (e_str, e_num, e_width)):
        keep = []
        for i, v in lst:
            rest = v[len(prefix):] if v.startswith(prefix) else ""
            if 0 < len(rest) <= 18 and rest.isdigit() and rest.isascii():
                col_num[i], col_width[i] = int(rest), len(rest)
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
    if top > (2 * n_tok if sparse else 4 * n_tok + (1 << 20)):
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
    wanted_eids = set(eids)  # built once: a membership test per effect must not scan a list
    key_code = {k: i for i, k in enumerate(h.key_names)}
    for e, (rec, j) in first_effect.items():
        if e in wanted_eids:
            by_rec.setdefault(rec, []).append((j, e))
    for rec, wanted in by_rec.items():
        d = BigObservation(raw(rec))
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
                kc = key_code.get(key, -1)
                if kc < 0:
                    kc = key_code[key] = len(h.key_names)
                    h.key_names.append(key)
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
