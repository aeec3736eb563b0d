"""The history record model: record types, the `History` columns a reader fills, `Record`,
`HistoryError` (checkers/HISTORY.md says what each record means)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from onceproof.errors import OnceproofError

INVOKE, OK, FAIL, INFO = 0, 1, 2, 3
TYPES = ("invoke", "ok", "fail", "info")
TYPE_CODE = {name: code for code, name in enumerate(TYPES)}
FIELDS = ("index", "time", "process", "type", "f", "value")

# f values with a meaning to the reader (the others are only kept as names)
SEND, OBSERVE, FINAL_READ, STATE = "send", "observe", "final-read", "state"


class HistoryError(OnceproofError):
    """An unreadable history: says which file (`path`, None for bytes in memory), which line
    (`line`, 1-based, None when not about one line) and why (`reason`)."""

    def __init__(self, path: str | None, line: int | None, reason: str) -> None:
        self.path, self.line, self.reason = path, line, reason
        where = str(path or "<history>") + (f":{line}" if line is not None else "")
        super().__init__(f"{where}: {reason}")


def open_history(path: Any, mode: str = "rb", **kw: Any) -> Any:
    """`open(path, mode, **kw)` of a history file; raises HistoryError ("cannot open: why")
    rather than OSError."""
    try:
        return open(path, mode, **kw)
    except OSError as e:
        raise HistoryError(str(path), None, f"cannot open: {e.strerror or e}") from None


@dataclass(frozen=True, slots=True)
class Record:
    """One operation of a history, as written: `time` in ns since the run started, `type` one
    of TYPES, `value` any JSON value (checkers/HISTORY.md)."""

    index: int
    time: int
    process: str | int
    type: str
    f: str
    value: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object of its line (keys in FIELDS order)."""
        return {k: getattr(self, k) for k in FIELDS}


class History:
    """A history loaded into columns.

    Per record (n = len(history)): `time` (int64 ns), `type` (int8, see TYPES),
    `f` (int16 code into `f_names`), `process` (int32 code into `process_names`).
    Events (the ids found in sends and sink reads, interned as eid = 0, 1, ...):
    `event_ids[eid]`, `event_key[eid]` (code into `key_names`, -1 unknown), `event_seq[eid]`.
    Sends: `send_rec` (record number of each send record), `send_eid`.
    Sink reads (ok `observe` / `final-read` records): `obs_rec`, `obs_full`, `obs_final`;
    their effects in sink order: `eff_obs` (row in the obs columns), `eff_eid`; `eff_vis`
    (int64 ns per effect, when it became visible in the sink: the commit time the read gave,
    see `visible` in checkers/HISTORY.md) or None when no read gave one (`effect_times()`).
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
        self.eff_vis: np.ndarray | None = None
        self.state_recs: list[int] = []
        self.start: dict[str, Any] | None = None
        self._offsets = np.zeros(1, np.int64)
        self._data: bytes | None = None  # in-memory source; else self.path is read on demand
        self._lines: dict[int, bytes] | None = None  # some records' bytes by offset (a history in object storage)
        # a partition of a bigger history (checkers/partitioned.py): per record, its number in the
        # whole history and where its line ends; per sink read, how many effects it holds in all
        self.rec_global: np.ndarray | None = None
        self._ends: np.ndarray | None = None
        self.obs_total: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.time)

    def effect_times(self, sent_ns: np.ndarray | None = None) -> np.ndarray:
        """Per effect (int64 ns since the run started): when it became visible in the sink, i.e.
        `eff_vis` where the read said (a commit time), else the time of the read that saw it.
        `sent_ns` (per event, int64 ns; int64 max when never sent): a visibility time before its
        event was sent is impossible (a server clock that jumped back between the commit and the
        read: checkers/HISTORY.md), and the read's own time stands for it."""
        read = self.time[self.obs_rec[self.eff_obs]] if len(self.eff_obs) else np.zeros(0, np.int64)
        if self.eff_vis is None:
            return read
        if sent_ns is None or not len(self.eff_vis):
            return self.eff_vis
        return np.where(self.eff_vis < sent_ns[self.eff_eid], read, self.eff_vis)

    def f_code(self, name: str) -> int:
        """Code of an `f` name, or -1 if no record has it."""
        try:
            return self.f_names.index(name)
        except ValueError:
            return -1

    def raw(self, i: int) -> bytes:
        """The bytes of record `i` as they are in the file."""
        start = int(self._offsets[i])
        end = int(self._ends[i]) if self._ends is not None else int(self._offsets[i + 1])
        if self._data is not None:
            data = self._data[start:end]
        elif self._lines is not None and start in self._lines:
            data = self._lines[start]
        elif self.path is not None and str(self.path).startswith("s3://"):  # a history in object storage
            from onceproof.checkers.source import open_source

            data = open_source(str(self.path)).read_range(start, end)
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
        """Records by number, as dicts (see `record`)."""
        return [self.record(int(i)) for i in indices]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Every record as a dict, in file order (slow: for small histories and reports)."""
        for i in range(len(self)):
            yield self.record(i)

