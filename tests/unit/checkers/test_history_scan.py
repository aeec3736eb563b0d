"""The compiled line scanner (checkers/history_scan.c) against the pure-Python reader, its oracle:
same History columns and same exactly-once verdicts on histories with odd lines."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from onceproof.checkers import exactly_once
from onceproof.checkers import history as H
from onceproof.checkers.history import native as scanner

pytestmark = pytest.mark.skipif(scanner.scan_lib(None) is None, reason="compiled scanner not built (onceproof setup)")


def _columns(h: H.History) -> dict[str, Any]:
    return {
        "time": h.time.tolist(), "type": h.type.tolist(),
        "f": [h.f_names[i] for i in h.f.tolist()], "process": [h.process_names[i] for i in h.process.tolist()],
        "event_ids": list(h.event_ids),
        "event_key": [h.key_names[k] if k >= 0 else None for k in h.event_key.tolist()],
        "event_seq": h.event_seq.tolist(), "send_rec": h.send_rec.tolist(), "send_eid": h.send_eid.tolist(),
        "obs_rec": h.obs_rec.tolist(), "obs_full": h.obs_full.tolist(), "obs_final": h.obs_final.tolist(),
        "eff_obs": h.eff_obs.tolist(), "eff_eid": h.eff_eid.tolist(), "state_recs": list(h.state_recs),
        "start": h.start, "offsets": h._offsets.tolist(), "truncated": h.truncated, "warnings": h.warnings,
        "records": [h.raw(i) for i in range(0, len(h), max(1, len(h) // 50))],
    }


def _history(seed: int, n: int = 600, prefix: str = "e-") -> bytes:
    rng = random.Random(seed)
    lines: list[bytes] = []
    t = 0

    def emit(process: str, typ: str, f: str, value: Any) -> None:
        nonlocal t
        t += rng.randint(1, 1000)
        lines.append(orjson.dumps({"index": len(lines), "time": t, "process": process, "type": typ, "f": f,
                                   "value": value}))

    emit("harness", "info", "start", {"run_id": "r", "plan": "p", "seed": seed, "rate": 1, "duration_s": 1,
                                      "order": "per-key"})
    sink: list[list[Any]] = []
    new: list[list[Any]] = []
    width = rng.choice([0, 6])
    for i in range(n):
        r = rng.random()
        if r < 0.04:
            eid = rng.choice(["é-ünï", "e\"q", "tab\\t", "x" * 30, "e-" + "9" * 20, f"{prefix}{i:03d}", f"{i}"])
        else:
            eid = f"{prefix}{i:0{width}d}" if width else f"{prefix}{i}"
        key = rng.choice(["k1", "k2", "ключ", 'k"3', "k4", ""])
        value = {"id": eid, "key": key, "seq": i}
        if rng.random() < 0.05:  # another shape: extra field, other order, spaces
            value = {"key": key, "id": eid, "seq": i, "partition": 1}
        emit("load", "invoke", "send", value)
        if rng.random() < 0.03:
            lines.append(b'  {"index": 0, "time": %d, "process": "load", "type": "ok", "f": "send", '
                         b'"value": {"id": %s, "key": "k1", "seq": %d}}' % (t + 1, orjson.dumps(eid), i))
            t += 1
        else:
            emit("load", rng.choice(["ok", "ok", "ok", "info", "fail"]), "send", value)
        if rng.random() < 0.01:
            lines.append(b"   ")
        effect = [eid, key, i, rng.randrange(3)]
        if rng.random() < 0.9:
            sink.append(effect)
            new.append(effect)
            if rng.random() < 0.02:
                sink.append(effect)
                new.append(effect)
        if rng.random() < 0.05:
            emit("observer", "invoke", "observe", None)
            emit("observer", rng.choice(["ok", "ok", "fail"]), "observe", {"full": rng.random() < 0.3,
                                                                          "events": new})
            new = []
        if rng.random() < 0.02:
            emit("nemesis", "invoke", "apply", {"fault": "f1", "kind": "kill", "targets": ["a"]})
    emit("observer", "ok", "state", {"k1": {"count": 1, "sum": 0}})
    emit("observer", "invoke", "final-read", None)
    emit("observer", "ok", "final-read", {"full": True, "events": sink})
    return b"\n".join(lines) + b"\n"


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("tail", [b"", b'{"index": 9, "time": 5, "process": "lo', b'{"index":1,"time":2,"process"'])
def test_scanner_and_python_reader_agree(seed: int, tail: bytes, tmp_path: Path, monkeypatch: Any) -> None:
    data = _history(seed, prefix=["e-", ""][seed % 2]) + tail
    path = tmp_path / "h.jsonl"
    path.write_bytes(data)
    monkeypatch.setattr(scanner, "_THREADS_MIN_BYTES", 1 << 10)  # two halves, two threads
    monkeypatch.setattr(scanner, "_SKELETON_MIN", 256)
    a = H.read_history(str(path), native=True)
    b = H.read_history(str(path), native=False)
    c = H.history_from_bytes(data, native=True)
    assert _columns(a) == _columns(b)
    assert bool(tail) == a.truncated
    ca, cb = _columns(c), _columns(H.history_from_bytes(data, native=False))
    assert ca == cb
    ra, rb = exactly_once.check(a), exactly_once.check(b)
    assert ra == rb
    assert np.array_equal(a.event_key >= 0, b.event_key >= 0)


def test_scanner_reports_bad_lines_like_python(tmp_path: Path) -> None:
    data = _history(3).split(b"\n")
    data[40] = b'{"index": 2, "time": "soon", "process": "load", "type": "ok", "f": "send", "value": {}}'
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"\n".join(data))
    errors = []
    for native in (True, False):
        with pytest.raises(H.HistoryError) as e:
            H.read_history(str(path), native=native)
        errors.append((e.value.line, e.value.reason))
    assert errors[0] == errors[1] and errors[0][0] == 41
