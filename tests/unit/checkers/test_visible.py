"""Visibility times (`visible` in an observation, checkers/HISTORY.md): latency is measured to
when an effect became visible in the sink (a commit time), not to when the observer polled;
every reader (pure Python, the C scanner, the partitioned check) gives the same times; a
visibility time after the read that saw it is bounded by the read; a bad `visible` is a
clear error with its line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from onceproof.checkers import exactly_once, partitioned, perf
from onceproof.checkers.history import HistoryError, history_from_records, read_history, scan_lib

from .conftest import same

MS = 1_000_000


def _run(visible: bool, skew_ms: int = 0, n: int = 40, poll_ms: int = 500) -> list[dict[str, Any]]:
    """`n` events, one every 20 ms, acked 10 ms after the send, committed in the sink 50 ms
    after the send (so 40 ms after the ack), read by an observer polling every `poll_ms`. With
    `visible`, each read says when each of its effects was committed (plus `skew_ms`)."""
    out: list[dict[str, Any]] = [{"time": 0, "process": "harness", "type": "info", "f": "load-start", "value": None}]
    commits = []
    for i in range(n):
        t = i * 20 * MS
        v = {"id": f"e-{i:04d}", "key": f"k{i % 3}", "seq": i // 3}
        out += [{"time": t, "process": "load", "type": "invoke", "f": "send", "value": v},
                {"time": t + 10 * MS, "process": "load", "type": "ok", "f": "send", "value": v}]
        commits.append((t + 50 * MS, [v["id"], v["key"], v["seq"], 0]))
    poll = poll_ms * MS
    while commits:
        now = [c for c in commits if c[0] <= poll]
        commits = commits[len(now):]
        value: dict[str, Any] = {"full": False}
        if visible and now:
            value["visible"] = [[1, t + skew_ms * MS] for t, _ in now]
        value["events"] = [e for _, e in now]
        out.append({"time": poll, "process": "observer", "type": "ok", "f": "observe", "value": value})
        poll += poll_ms * MS
    out.append({"time": poll, "process": "observer", "type": "ok", "f": "final-read",
                "value": {"full": True, "events": [e for r in out if r["f"] == "observe" for e in r["value"]["events"]]}})
    for i, r in enumerate(out):
        r["index"] = i
    return out


def _write(tmp_path: Path, records: list[dict[str, Any]]) -> Path:
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records))
    return path


def test_latency_is_measured_to_the_commit_time_not_to_the_poll(tmp_path: Path) -> None:
    polled = perf.latency_ms(history_from_records(_run(visible=False)))
    committed = perf.latency_ms(history_from_records(_run(visible=True)))
    assert committed["p50"] == pytest.approx(40.0) and committed["max"] == pytest.approx(40.0)
    assert polled["p50"] > 150  # the polling delay the commit times take out
    assert committed["n"] == polled["n"] == 40
    assert perf.check(history_from_records(_run(visible=True)))["latency_to"] == "visible"
    assert perf.check(history_from_records(_run(visible=False)))["latency_to"] == "read"


@pytest.mark.parametrize("native", [False, True])
def test_every_reader_gives_the_same_visibility_times(tmp_path: Path, native: bool) -> None:
    if native and scan_lib(None) is None:
        pytest.fail("the compiled scanner is not built: run `onceproof setup`")
    path = _write(tmp_path, _run(visible=True, n=400, poll_ms=2000))  # reads long enough for the C scanner
    h = read_history(path, native=native)
    assert h.eff_vis is not None
    seen_early = ~h.obs_final[h.eff_obs]  # the final read gives no commit times: its own time
    assert ((h.eff_vis - h.time[h.obs_rec[h.eff_obs]])[seen_early] < 0).all()
    whole = exactly_once.check(h)
    split = partitioned.check_path(path, partitions=3, memory=1 << 16)
    assert same(whole, split)
    assert perf.latency_ms(h)["p50"] == pytest.approx(40.0)


def test_a_visibility_time_after_its_read_is_bounded_by_the_read(tmp_path: Path) -> None:
    # a server clock one hour ahead: never a sighting later than the read that saw it
    ahead = perf.latency_ms(history_from_records(_run(visible=True, skew_ms=3_600_000)))
    polled = perf.latency_ms(history_from_records(_run(visible=False)))
    assert ahead == polled
    # an hour behind (before the event was even sent: impossible): the read's own time stands
    behind = perf.latency_ms(history_from_records(_run(visible=True, skew_ms=-3_600_000)))
    assert behind == polled
    # 45 ms behind (after the send, before the acknowledgement): 0, never negative
    early = perf.latency_ms(history_from_records(_run(visible=True, skew_ms=-45)))
    assert early["p50"] == 0.0 and early["max"] == 0.0 and early["n"] == 40
    h = history_from_records(_run(visible=True, skew_ms=-3_600_000))
    assert exactly_once.check(h)["stats"]["latency_ms"] == exactly_once.check(
        history_from_records(_run(visible=False)))["stats"]["latency_ms"]


@pytest.mark.parametrize(("visible", "message"), [
    ([[2, 5]], r'h\.jsonl:3: "visible" covers 2 effects but "events" has 1'),
    ([[0, 5]], r'h\.jsonl:3: "visible" must be \[\[n, time\], \.\.\.\]'),
    ("soon", r'h\.jsonl:3: "visible" must be'),
])
def test_a_bad_visible_is_an_error_naming_its_line(tmp_path: Path, visible: Any, message: str) -> None:
    recs = [{"index": 0, "time": 0, "process": "load", "type": "invoke", "f": "send",
             "value": {"id": "e-1", "key": "k", "seq": 0}},
            {"index": 1, "time": 1, "process": "load", "type": "ok", "f": "send",
             "value": {"id": "e-1", "key": "k", "seq": 0}},
            {"index": 2, "time": 9, "process": "observer", "type": "ok", "f": "observe",
             "value": {"full": False, "visible": visible, "events": [["e-1", "k", 0, 0]]}}]
    path = _write(tmp_path, recs)
    for native in (False, None):
        with pytest.raises(HistoryError, match=message):
            read_history(path, native=native)
