"""The split by byte ranges (checkers/ranges.py, what `--engine spark` runs as tasks), in this
process: the same result as the in-memory check on generated histories with every anomaly
kind, at any number of partitions and ranges (tiny ranges: lines straddle their cuts, an id's
records lie in several ranges, an effect's range comes before its send's)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from onceproof.checkers import exactly_once, partitioned, ranges
from onceproof.checkers.history import HistoryError, read_history

from .conftest import same
from .histories import RunModel, runs
from .test_partitioned import _inject


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(run=runs(max_events=40), data=st.data(), k=st.integers(1, 7), n=st.integers(1, 12),
       order=st.sampled_from([None, "per-key"]), chunk=st.sampled_from([64, 300, 1 << 20]),
       examples=st.integers(1, 4))
def test_ranges_equal_in_memory_on_generated_histories_with_every_anomaly(
        run: RunModel, data: Any, k: int, n: int, order: str | None, chunk: int, examples: int,
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(run, data)
    monkeypatch.setattr(partitioned, "_MIN_SLICE", 32)
    path = tmp_path_factory.mktemp("r") / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in run.records()))
    whole = exactly_once.check(read_history(path), order=order, examples=examples)
    got = ranges.check_path(path, k, n, order=order, examples=examples, chunk=chunk)
    assert same(whole, got), (k, n, whole, got)
