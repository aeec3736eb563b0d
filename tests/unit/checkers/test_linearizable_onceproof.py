"""`onceproof check --checker linearizable` on onceproof's own histories (found by a new user,
nu3 N2): a run's own records (sends, landed, progress, observe, faults, phases) are no operations
of a model and are skipped, as Jepsen's checkers keep only client ops (jepsen.history
`client-ops`; Knossos skips :nemesis); a run with no operation of any model is refused with one
clear line (exit 2); a run with a read workload is judged in the max register per key, with the
`reads` checker's verdict."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onceproof.checkers import reads
from onceproof.checkers.history import history_from_records

from .test_reads import _saved, _simulated

RUN = Path(__file__).parent / "data" / "run-k2k-txn-trimmed.jsonl"  # a real run (nu3 k2k-txn-1), trimmed


def _lin(path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "onceproof", "check", "--checker", "linearizable", *extra, str(path)],
                          capture_output=True, text=True, timeout=120)


def _write(tmp_path: Path, recs: list[dict[str, Any]]) -> Path:
    recs = sorted(recs, key=lambda r: r["time"])
    for i, r in enumerate(recs):
        r["index"] = i
    p = tmp_path / "history.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return p


def test_a_real_run_without_operations_of_a_model_is_refused_in_one_clear_line():
    res = _lin(RUN)
    assert res.returncode == 2, (res.stdout, res.stderr)
    err = res.stderr.strip()
    assert "no operation of any model" in err and "workload.reads" in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "landed" not in err.split(":", 2)[1] and "no invoke" not in err and "progress is not" not in err


def _client_ops(stale: bool) -> list[dict[str, Any]]:
    """The real run's records, and a client process 0 writing 1 then reading (1, or 0 when stale)."""
    recs = [json.loads(line) for line in RUN.read_text().splitlines()]
    t = recs[5]["time"]
    for dt, typ, f, v in ((1, "invoke", "write", 1), (2, "ok", "write", 1), (3, "invoke", "read", None),
                          (4, "ok", "read", 0 if stale else 1)):
        recs.append({"index": 0, "time": t + dt, "process": 0, "type": typ, "f": f, "value": v})
    return recs


@pytest.mark.parametrize("stale", [False, True])
def test_a_run_with_client_ops_is_judged_on_them_alone(tmp_path, stale):
    res = _lin(_write(tmp_path, _client_ops(stale)))
    assert res.returncode == (1 if stale else 0), (res.stdout, res.stderr)
    assert "2 operations" in " ".join(res.stdout.split()), res.stdout


def _verdicts(tmp_path: Path, recs: list[dict[str, Any]]) -> tuple[Any, int, str]:
    expected = reads.check(history_from_records([dict(r) for r in recs]))["valid"]
    res = _lin(_write(tmp_path, recs))
    return expected, res.returncode, res.stdout + res.stderr


@pytest.mark.parametrize("stale", [False, True])
def test_a_read_workload_gets_the_reads_checkers_verdict(tmp_path, stale):
    expected, rc, out = _verdicts(tmp_path, _saved(stale))
    assert expected is (not stale)
    assert rc == (0 if expected else 1), out
    assert "max-register per key" in out, out
    if stale:  # the smallest set, in EDN, with the lines of the history
        flat = " ".join(out.split())
        assert "[:read \"k\"] -> 0" in flat and "[:write \"k\" 1] -> nil" in flat, out


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("stale", [False, True])
def test_simulated_read_workloads_get_the_reads_checkers_verdict(tmp_path, seed, stale):
    h = _simulated(stale, seed)
    h.add(0, "harness", "info", "load-start", None)
    expected, rc, out = _verdicts(tmp_path, h.recs)
    assert expected is (not stale)
    assert rc == (0 if expected else 1), out
