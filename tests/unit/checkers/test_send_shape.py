"""The byte shape of send lines, written down once in checkers/HISTORY.md ("The byte shape of
send lines"), holds on both sides: the recorder writes exactly that shape, the readers' fast
path takes exactly that shape, and a send in any other shape is still read, the same, by the
one-line-at-a-time path."""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from onceproof.checkers.history import History, history_from_bytes
from onceproof.checkers.history import native as scanner
from onceproof.checkers.history.shape import SendShape, id_prefix
from onceproof.recorder import HistoryWriter

HISTORY_MD = Path(__file__).resolve().parents[3] / "checkers" / "HISTORY.md"
TYPES = ("invoke", "ok", "fail", "info")


def documented_shape() -> str:
    """The one line in the code block of HISTORY.md's "The byte shape of send lines"."""
    text = HISTORY_MD.read_text()
    section = text.split("#### The byte shape of send lines", 1)[1]
    (line,) = re.search(r"```\n(.*?)\n```", section, re.S).group(1).splitlines()  # type: ignore[union-attr]
    return line


def shape_regex() -> re.Pattern[bytes]:
    """HISTORY.md's shape as a regex: its capital-letter placeholders replaced by what its rules allow."""
    allowed = {"I": rb"-?(?:0|[1-9]\d{0,17})", "T": rb"(?:0|[1-9]\d{0,17})", "S": rb"(?:0|[1-9]\d{0,17})",
               "TYPE": rb"(?:invoke|ok|fail|info)", "ID": rb'[ !#-\[\]-~]*', "KEY": rb'[ !#-\[\]-~]*'}
    parts = re.split(r"\b([A-Z]+)\b", documented_shape())
    pattern = b"".join(re.escape(p.encode()) if k % 2 == 0 else allowed[p] for k, p in enumerate(parts))
    return re.compile(pattern)


def fill(rng: random.Random, n: int, prefix: str = "e-") -> list[tuple[str, dict[str, Any]]]:
    """`n` sends (type, value) of events with ids `prefix` + digits, as the workload makes them."""
    return [(rng.choice(TYPES), {"id": f"{prefix}{i:06d}", "key": f"k{rng.randrange(7)}", "seq": i})
            for i in range(n)]


def in_documented_shape(sends: list[tuple[str, dict[str, Any]]]) -> bytes:
    """The sends written by filling HISTORY.md's shape in (time = 1000 * index)."""
    shape = documented_shape()
    out = []
    for i, (typ, v) in enumerate(sends):
        values = {"I": str(i), "T": str(1000 * i), "S": str(v["seq"]), "TYPE": typ, "ID": v["id"], "KEY": v["key"]}
        out.append(re.sub(r"\b([A-Z]+)\b", lambda m: values[m.group(1)], shape))
    return ("\n".join(out) + "\n").encode()


def columns(h: History) -> dict[str, Any]:
    return {"time": h.time.tolist(), "type": h.type.tolist(), "event_ids": list(h.event_ids),
            "event_key": [h.key_names[k] for k in h.event_key.tolist()], "event_seq": h.event_seq.tolist(),
            "send_eid": h.send_eid.tolist(), "send_rec": h.send_rec.tolist()}


def test_the_recorder_writes_sends_in_the_documented_shape(tmp_path: Path) -> None:
    rng = random.Random(1)
    path = tmp_path / "h.jsonl"
    with HistoryWriter(path) as w:
        for typ in TYPES:
            w.record_sends("load", typ, [(f"e-{i:06d}", f"k{rng.randrange(50)}", rng.randrange(10**6))
                                         for i in range(200)])
    lines = path.read_bytes().split(b"\n")
    assert lines.pop() == b""
    regex = shape_regex()
    assert len(lines) == 800
    assert [ln for ln in lines if not regex.fullmatch(ln)] == []


def test_the_readers_fast_path_takes_every_line_of_the_documented_shape() -> None:
    data = in_documented_shape(fill(random.Random(2), 500))
    assert all(shape_regex().fullmatch(ln) for ln in data.splitlines())
    spec = SendShape(id_prefix(data) or b"")
    assert spec.prefix == b"e-"
    assert len(spec.send_re.findall(data)) == 500
    lib = scanner.scan_lib(None)
    if lib is not None:  # the C scanner hands back no line as "other"
        out = scanner._scan_span(lib, np.frombuffer(data, np.uint8).ctypes.data, 0, len(data), spec, False)
        assert len(out["s_rec"]) == 500 and len(out["o_rec"]) == 0


OTHER_SHAPES = {
    "spaces": lambda i, typ, v: orjson.dumps({"index": i, "time": 1000 * i, "process": "load", "type": typ,
                                              "f": "send", "value": v}).replace(b",", b", "),
    "key order": lambda i, typ, v: orjson.dumps({"time": 1000 * i, "index": i, "process": "load", "type": typ,
                                                 "f": "send", "value": v}),
    "extra field": lambda i, typ, v: orjson.dumps({"index": i, "time": 1000 * i, "process": "load", "type": typ,
                                                   "f": "send", "value": v | {"partition": 0}}),
    "other process": lambda i, typ, v: orjson.dumps({"index": i, "time": 1000 * i, "process": "load-2",
                                                     "type": typ, "f": "send", "value": v}),
}


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("shape", sorted(OTHER_SHAPES))
def test_a_send_in_another_shape_is_read_the_same_by_the_slow_path(shape: str, native: bool) -> None:
    if native and scanner.scan_lib(None) is None:
        pytest.skip("compiled scanner not built (onceproof setup)")
    sends = fill(random.Random(3), 300)
    fast = in_documented_shape(sends)
    other = b"".join(OTHER_SHAPES[shape](i, typ, v) + b"\n" for i, (typ, v) in enumerate(sends))
    assert not shape_regex().search(other) and not SendShape(b"e-").send_re.search(other)  # not the fast path
    a, b = history_from_bytes(fast, native=native), history_from_bytes(other, native=native)
    if shape == "other process":
        assert [b.process_names[p] for p in b.process.tolist()] == ["load-2"] * 300
    assert columns(a) == columns(b)
