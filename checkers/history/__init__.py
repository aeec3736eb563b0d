"""The history record model and a fast, column-oriented reader (see checkers/HISTORY.md).

A history is JSON Lines, one operation per line:
`{"index", "time", "process", "type", "f", "value"}`. The reader loads it into numpy
columns (`History`), interns event ids into small integers, and keeps the byte offset of
every line so that any record can be turned back into a dict on demand (for examples in a
report) without keeping ten million dicts alive.

Two readers fill the same columns (columns.py): the compiled scanner (native.py, over
checkers/history_scan.c) when `onceproof setup` has built it, else the pure-Python reader
(python_reader.py), which is also the scanner's oracle in the tests. Both read the writer's
`send` lines in bulk by their byte shape (shape.py; the rule is in checkers/HISTORY.md) and
every other line one by one (lines.py).

A truncated last line (a harness killed with SIGKILL) is ignored and reported in
`History.warnings`; any other unreadable line raises `HistoryError(path, line, reason)`.
"""
from __future__ import annotations

import contextlib
import gc
import os
import stat
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from onceproof.checkers.history.columns import merge
from onceproof.checkers.history.lines import LineError, line_of, name_cut_lines
from onceproof.checkers.history.model import (
    FAIL,
    FIELDS,
    FINAL_READ,
    INFO,
    INVOKE,
    OBSERVE,
    OK,
    SEND,
    STATE,
    TYPE_CODE,
    TYPES,
    History,
    HistoryError,
    Record,
    open_history,
)
from onceproof.checkers.history.native import native_parts, read_native, scan_lib, scan_library_path
from onceproof.checkers.history.python_reader import parse_span, read_python
from onceproof.checkers.history.shape import SendShape, id_prefix

__all__ = [
    "FAIL", "FIELDS", "FINAL_READ", "INFO", "INVOKE", "OBSERVE", "OK", "SEND", "STATE", "TYPES", "TYPE_CODE",
    "History", "HistoryError", "Record", "history_from_bytes", "history_from_records", "open_history",
    "read_history", "scan_library_path",
]


def read_history(path: Any, native: bool | None = None) -> History:
    """Load a JSON Lines history file (`path`: str or PathLike) into columns. `native`: None (the
    compiled scanner when it is installed, else pure Python), False (pure Python), True (the
    compiled scanner, or an error). Raises HistoryError: the file cannot be opened, a line
    other than a cut last one is unreadable (with its 1-based line number), or `native=True`
    and the scanner is not built or gives up."""
    data = _unsized(path)
    if data is not None:
        return history_from_bytes(data, str(path), native)
    with _no_gc(), _no_hugepages():
        lib = scan_lib(native)
        if lib is not None:
            hist = read_native(path, lib)
            if hist is not None:
                return hist
            if native:
                raise HistoryError(path, None, "the compiled scanner could not read this file")
        return read_python(path)


_UNSIZED_MAX = 256 << 20


def _unsized(path: Any) -> bytes | None:
    """The bytes of a file whose size says nothing (a /proc file: size 0, yet it has text), read
    whole; None for an ordinary file. Raises HistoryError for what is not a regular file (a
    FIFO would block the reader forever; a folder or a device is no history)."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise HistoryError(str(path), None, f"cannot open: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise HistoryError(str(path), None, "not a regular file (a folder, FIFO, socket or device); "
                                            "give the path of a history file")
    if st.st_size > 0:
        return None
    try:
        with open(path, "rb") as fh:
            data = fh.read(_UNSIZED_MAX + 1)
    except OSError as e:
        raise HistoryError(str(path), None, f"cannot read: {e.strerror or e}") from None
    if len(data) > _UNSIZED_MAX:
        raise HistoryError(str(path), None, f"a file without a size holding more than {_UNSIZED_MAX >> 20} MiB; "
                                            "copy it to a regular file first")
    return data or None


def history_from_bytes(data: bytes, path: str | None = None, native: bool | None = None) -> History:
    """A History from a whole history's bytes in memory (`path`: only named in messages; `native`
    as in `read_history`). Raises HistoryError as `read_history` does."""
    with _no_gc():
        spec = SendShape(id_prefix(data[:1 << 20]) or b"")
        lib = scan_lib(native) if data else None
        try:
            parts = native_parts(lib, data, spec) if lib is not None else None
            if parts is None and native:
                raise HistoryError(path, None, "the compiled scanner could not read this history")
            if parts is None:
                parts = [parse_span(data, 0, len(data), spec, True)]
        except LineError as e:
            raise HistoryError(path, line_of(data, e.offset), e.reason) from None
        hist = merge(parts, spec.prefix.decode(), path, data)
        name_cut_lines(hist, path, data)
    return hist


def history_from_records(records: Iterable[dict[str, Any] | Record]) -> History:
    """A History from records in memory (tests, other tools): same code path as a file. Raises
    HistoryError for a record that is not a valid history record."""
    lines = [orjson.dumps(r.to_dict() if isinstance(r, Record) else r) for r in records]
    data = b"\n".join(lines) + (b"\n" if lines else b"")
    return history_from_bytes(data)


@contextlib.contextmanager
def _no_hugepages() -> Iterator[None]:
    # numpy asks for transparent huge pages for big arrays; with the kernel's defrag=madvise each
    # fault may then compact memory first, which made fresh arrays cost several times their copy
    try:
        from numpy._core import multiarray
    except ImportError:
        yield
        return
    set_madvise = getattr(multiarray, "_set_madvise_hugepage", None)  # private to numpy: may go
    if set_madvise is None:
        yield
        return
    was = set_madvise(False)
    try:
        yield
    finally:
        set_madvise(was)


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
