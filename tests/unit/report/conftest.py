from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.report.synthetic_run import write_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic run with anomalies (duplicates, lost), three faults and hostile keys.
    Shared by a module: tests must not change it (copy it first)."""
    out = tmp_path_factory.mktemp("run")
    write_run(out, rate=150, duration_s=12.0, linearizable=True)
    return out
