"""The split by byte ranges (checkers/ranges.py, what `--engine spark` runs as tasks), in this
process: the same result as the in-memory check on generated histories with every anomaly
kind, at any number of partitions and ranges (tiny ranges: lines straddle their cuts, an id's
records lie in several ranges, an effect's range comes before its send's)."""
from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from onceproof.checkers import exactly_once, partitioned, ranges
from onceproof.checkers.history import HistoryError, read_history

from .conftest import same
from .histories import RunModel, runs
from .test_partitioned import _inject, two_key_sends


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(run=runs(max_events=40), data=st.data(), k=st.integers(1, 7), n=st.integers(1, 12),
       order=st.sampled_from([None, "per-key"]), chunk=st.sampled_from([64, 300, 1 << 20]),
       examples=st.integers(1, 4), via_files=st.booleans(), defer_over=st.sampled_from([0, 1, 4096]))
def test_ranges_equal_in_memory_on_generated_histories_with_every_anomaly(
        run: RunModel, data: Any, k: int, n: int, order: str | None, chunk: int, examples: int, via_files: bool,
        defer_over: int,
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(run, data)
    monkeypatch.setattr(partitioned, "_MIN_SLICE", 32)
    path = tmp_path_factory.mktemp("r") / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in run.records()))
    whole = exactly_once.check(read_history(path), order=order, examples=examples)
    got = ranges.check_path(path, k, n, order=order, examples=examples, chunk=chunk,
                            spill_dir=path.parent if via_files else None, defer_over=defer_over)
    assert same(whole, got), (k, n, whole, got)


def _write(path: Path, recs: list[dict[str, Any]]) -> None:
    """The writer's shape (compact): ids of the form prefix + digits are numbered."""
    path.write_text("".join(json.dumps({"index": n, **r}, separators=(",", ":")) + "\n" for n, r in enumerate(recs)))


def sink_first_history(path: Path, ids: str) -> None:
    """12 events whose first record is an effect seen by the observer (key "a<i>"), their sends
    later in the file (key "b<i>"); a final read with event 5 lost and event 3 twice."""
    recs: list[dict[str, Any]] = []
    t = 0
    for i in range(12):  # effects first, under key "a{i}"; the sends later under "b{i}"
        t += 1
        recs.append({"time": t, "process": "observer", "type": "ok", "f": "observe",
                     "value": {"full": False, "events": [[ids.format(i), f"a{i}", i, 0]]}})
    for i in range(12):
        for typ in ("invoke", "ok"):
            t += 1
            recs.append({"time": t, "process": "load", "type": typ, "f": "send",
                         "value": {"id": ids.format(i), "key": f"b{i}", "seq": i}})
    final = [[ids.format(i), f"b{i}", i, 0] for i in range(12) if i != 5] + [[ids.format(3), "b3", 3, 1]]
    recs.append({"time": t + 1, "process": "observer", "type": "ok", "f": "final-read",
                 "value": {"full": True, "events": final}})
    _write(path, recs)


@pytest.mark.parametrize("ids", ["e-{}", "e-{}-x"])  # numbered ids (the id map), text ids (the text map)
def test_an_id_seen_in_the_sink_before_its_send_follows_its_first_range(tmp_path: Path, ids: str) -> None:
    """The observer may log an effect before the load logs its send (premature, or a send whose
    ok is logged late): the id's first record is then an effect, in an earlier range than its
    send, under a key whose partition differs from the send's key's. Every record of the id
    must go where that first range sent it; the result is the in-memory one at every cut."""
    path = tmp_path / "h.jsonl"
    sink_first_history(path, ids)
    for k in (2, 3, 5):
        assert any(zlib.crc32(f"a{i}".encode()) % k != zlib.crc32(f"b{i}".encode()) % k for i in range(12))
        for n in (2, 3, 7, 25):
            sealed, jobs, idmap, text_map = ranges.plan(str(path), k, n, 64, defer_over=-1 if n % 2 else 4096)
            for i in range(12):  # each id's partition: its first record's, the effect's key "a<i>"
                got = int(idmap[i]) if ids == "e-{}" else text_map[ids.format(i)]
                assert got == zlib.crc32(f"a{i}".encode()) % k
            for job in jobs:  # every send sits where the id's effect (its first record) went
                for p, part in ranges.route(str(path), job, k, 64, idmap, text_map):
                    rows = ranges.gather([part])
                    for num in rows.sends["num"].tolist():
                        if num >= 0:
                            assert idmap[num] == p
                    for _, v in rows.s_text:
                        assert text_map[v] == p
            for order in (None, "per-key"):
                whole = exactly_once.check(read_history(path), order=order)
                got = ranges.check_path(path, k, n, order=order, chunk=64, defer_over=n % 3 - 1)
                assert same(whole, got), (k, n, whole, got)
                assert whole["anomalies"]["lost"] == 1 and whole["anomalies"]["duplicate"] == 1


@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_an_id_sent_under_two_keys_in_two_ranges_goes_where_its_first_send_goes(tmp_path: Path, k: int) -> None:
    """A retry under another key in a later range follows the id's first send (the fold's
    first range wins), whatever the cuts."""
    path = tmp_path / "h.jsonl"
    _write(path, two_key_sends())
    for n in (2, 5, 13, 40):
        for order in (None, "per-key"):
            whole = exactly_once.check(read_history(path), order=order)
            assert same(whole, ranges.check_path(path, k, n, order=order, chunk=64))


def test_a_bad_line_is_named_by_its_line_in_the_file_whatever_range_holds_it(tmp_path: Path) -> None:
    """A bad line in a later range: the error names its line in the whole file (the first bad
    line of the file when several ranges have one)."""
    recs = [{"index": i, "time": i, "process": "load", "type": "invoke", "f": "send",
             "value": {"id": f"e-{i}", "key": "k", "seq": i}} for i in range(30)]
    lines = [json.dumps(r) for r in recs]
    lines[17] = '{"index": 17, "time": '
    lines[25] = "not json"
    path = tmp_path / "h.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(HistoryError) as read:
        read_history(path)
    for n in (1, 3, 8):
        with pytest.raises(HistoryError) as got:
            ranges.check_path(path, 3, n, chunk=64)
        assert got.value.line == read.value.line == 18 and got.value.path == str(path)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 400), data=st.data())
def test_a_few_effects_cut_out_of_a_slice_are_the_parsed_ones(n: int, data: Any) -> None:
    """partitioned._some_effects (the keys of a few effects of a big sink read, for ids first
    seen there): the same effects as parsing the whole slice, also with a "],[" inside a key
    or ids that are not numbered (it then parses the whole slice)."""
    keys = st.sampled_from(["k0", "k1", "a],[b", "x"])
    evs = [[f"e-{data.draw(st.integers(0, 10**6))}", data.draw(keys), i, 0] for i in range(n)]
    piece = json.dumps(evs, separators=(",", ":")).encode()[1:-1]
    nums = np.array([int(e[0][2:]) for e in evs], np.int64)
    widths = np.array([len(e[0]) - 2 for e in evs], np.int64)
    idx = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=max(1, n // 60))))
    assert partitioned._some_effects(piece, idx, b"e-", nums, widths, {}) == {i: evs[i] for i in idx}
    texts = {i: e[0] for i, e in enumerate(evs)}
    assert partitioned._some_effects(piece, idx, b"", np.full(n, -1, np.int64), widths, texts) == {
        i: evs[i] for i in idx}


def test_a_cut_last_line_is_ignored_with_its_warning_in_any_range(tmp_path: Path) -> None:
    """A history whose last line was cut (the harness killed while writing it): the range that
    holds it ignores it with the in-memory check's warning, whatever the cuts."""
    path = tmp_path / "h.jsonl"
    sink_first_history(path, "e-{}")
    path.write_bytes(path.read_bytes() + b'{"index":99,"time":99,"process":"load","type":"inv')
    whole = exactly_once.check(read_history(path))
    assert read_history(path).warnings
    for n in (1, 2, 5, 17):
        sealed, _, _, _ = ranges.plan(str(path), 3, n, 64)
        assert sealed.warnings == read_history(path).warnings
        assert same(whole, ranges.check_path(path, 3, n, chunk=64))
