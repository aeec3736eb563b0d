"""The partitioned exactly-once check (checkers/partitioned.py): the same result as the
in-memory check on generated histories with every anomaly kind, at any number of partitions
and chunk sizes; within its memory budget on a history several times bigger; its flags."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from onceproof.checkers import exactly_once, partitioned
from onceproof.checkers.history import read_history
from onceproof.checkers.history.native import scan_lib
from onceproof.cli import main

from .conftest import same
from .histories import RunModel, runs

ROOT = Path(__file__).resolve().parents[3]


def _inject(run: RunModel, data: Any) -> None:
    """Any mix of anomalies: lost, duplicate, phantom, premature, flicker, reorder, state."""
    kinds = data.draw(st.sets(st.sampled_from(
        ["lost", "duplicate", "phantom", "premature", "flicker", "reorder", "state"])))
    ok = [e for e in run.events if e.outcome == "ok"]
    if "lost" in kinds and ok:
        data.draw(st.sampled_from(ok)).apply_t = None
    applied = [e for e in run.events if e.apply_t is not None]
    if "duplicate" in kinds and applied:
        v = data.draw(st.sampled_from(applied))
        run.final_extra.append([v.id, v.key, v.seq, 1])
    if "phantom" in kinds:
        run.final_extra.append([f"ghost-{data.draw(st.integers(0, 9))}", data.draw(st.sampled_from(["k0", "k1"])),
                                data.draw(st.integers(0, 30)), 0])
    if "premature" in kinds and applied:
        v = data.draw(st.sampled_from(applied))
        run.extra.append({"time": v.invoke_t - 3, "process": "observer", "type": "ok", "f": "observe",
                          "value": {"full": False, "events": [[v.id, v.key, v.seq, 0]]}})
    if "flicker" in kinds and applied and run.full_ts:
        run.obs_drop[run.full_ts[-1]] = {data.draw(st.sampled_from(applied)).id}
    if "reorder" in kinds and len(applied) >= 2:
        a, b = data.draw(st.sampled_from(applied)), data.draw(st.sampled_from(applied))
        if a.id != b.id:
            run.swap = (a.id, b.id)
    if "state" in kinds:
        run.state = run.fold()
        if run.state and data.draw(st.booleans()):
            key = sorted(run.state)[0]
            run.state[key]["count"] += 1


@settings(max_examples=60, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate], suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(run=runs(max_events=40), data=st.data(), k=st.integers(1, 9), order=st.sampled_from([None, "per-key"]),
       chunk=st.sampled_from([64, 300, 1 << 20]), examples=st.integers(1, 4), workers=st.sampled_from([1, 2]),
       pack_in_c=st.booleans())
def test_partitioned_equals_in_memory_on_generated_histories_with_every_anomaly(
        run: RunModel, data: Any, k: int, order: str | None, chunk: int, examples: int, workers: int,
        pack_in_c: bool, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    _inject(run, data)
    monkeypatch.setattr(partitioned, "_PACK_IN_C", pack_in_c)  # the spill's rows packed by C or by numpy
    monkeypatch.setattr(partitioned, "_MIN_CHUNK", chunk)
    monkeypatch.setattr(partitioned, "_MIN_SLICE", 32)
    path = tmp_path_factory.mktemp("p") / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in run.records()))
    memory = chunk * 32  # the chunk size follows the budget: tiny chunks, sink reads streamed in slices
    whole = exactly_once.check(read_history(path), order=order, examples=examples)
    split = partitioned.check_path(path, partitions=k, memory=memory, order=order, examples=examples,
                                   workers=workers)
    assert same(whole, split), (k, whole, split)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(0, 300), k=st.integers(1, 7), seed=st.integers(0, 2**32 - 1),
       dt=st.sampled_from([partitioned.SEND_DT, partitioned.EFF_DT]))
def test_the_spill_rows_packed_in_c_are_numpys_bytes(n: int, k: int, seed: int, dt: Any) -> None:
    """hs_pack (the scanner library's one-pass pack and scatter) writes the same bytes as numpy's
    field-by-field packing and stable sort by partition, for every field width and any mix of
    partitions."""
    lib = scan_lib(None)
    assert lib is not None and hasattr(lib, "hs_pack"), "the scanner library is built by `onceproof setup`"
    rng = np.random.default_rng(seed)
    cols = {name: rng.integers(np.iinfo(dt[name]).min, np.iinfo(dt[name]).max, n, dtype=dt[name])
            for name in dt.names}
    dest = rng.integers(0, k, n).astype(np.uint8)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(dest, minlength=k))]).tolist()
    in_c = partitioned.pack_rows(cols, dt, dest, bounds, lib.hs_pack)
    in_numpy = partitioned.pack_rows(cols, dt, dest, bounds, None)
    assert in_c.tobytes() == in_numpy.tobytes()
    for p in range(k):  # each partition's rows, in their order
        rows = in_c[bounds[p]:bounds[p + 1]]
        for name in dt.names:
            assert rows[name].tolist() == np.asarray(cols[name]).astype(dt[name])[dest == p].tolist()


def two_key_sends() -> list[dict[str, Any]]:
    """40 events, each sent under its key and then again under another (a retry naming another
    key), and a final read of the first keys: every 7th id lost, e-3 applied twice."""
    recs: list[dict[str, Any]] = []
    t = 0
    for i in range(40):
        for key in (f"k{i % 3}", f"other{i % 5}"):  # the retry names another key
            for typ in ("invoke", "ok"):
                t += 1
                recs.append({"time": t, "process": "load", "type": typ, "f": "send",
                             "value": {"id": f"e-{i}", "key": key, "seq": i}})
    final = [[f"e-{i}", f"k{i % 3}", i, 0] for i in range(40) if i % 7] + [["e-3", "k0", 3, 1]]
    recs.append({"time": t + 1, "process": "observer", "type": "ok", "f": "final-read",
                 "value": {"full": True, "events": final}})
    return recs


@pytest.mark.parametrize("separators", [(",", ":"), (", ", ": ")])  # the writer's shape (numbered ids), not
@pytest.mark.parametrize("k", [2, 3, 5, 8])
def test_an_id_sent_under_two_keys_goes_where_its_first_send_goes(tmp_path: Path, k: int,
                                                                  separators: tuple[str, str]) -> None:
    """The spill routes a new id by its first record's key, also when the same chunk holds a later
    send of it under another key (the id map is then filled by first occurrence, not by
    whichever row numpy writes last): the result is the in-memory one."""
    recs = two_key_sends()
    path = tmp_path / "h.jsonl"
    path.write_text("".join(json.dumps({"index": n, **r}, separators=separators) + "\n" for n, r in enumerate(recs)))
    for order in (None, "per-key"):
        whole = exactly_once.check(read_history(path), order=order)
        split = partitioned.check_path(path, partitions=k, workers=1, order=order)
        assert same(whole, split), (whole, split)
        assert whole["anomalies"]["lost"] > 0 and whole["anomalies"]["duplicate"] == 1


def test_a_partitioned_check_times_its_phases(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    _generate()(str(path), 20_000)
    partitioned.PHASES.clear()
    whole = exactly_once.check(read_history(path))
    split = partitioned.check_path(path, partitions=3, workers=2)
    assert same(whole, split)
    assert set(partitioned.PHASES) == {"spill", "check", "merge"}
    for wall, cpu in partitioned.PHASES.values():
        assert wall > 0 and cpu >= 0
    assert partitioned.PHASES["check"][1] > 0  # the workers' CPU counts once they are reaped


def test_the_spill_folder_is_removed_after_an_error(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    good = json.dumps({"index": 0, "time": 1, "process": "load", "type": "invoke", "f": "send",
                       "value": {"id": "e-1", "key": "k", "seq": 0}})
    path.write_text(good + "\n" + "{not json\n" + good + "\n")
    spill = tmp_path / "spill"
    with pytest.raises(Exception, match=r"h\.jsonl:2: not valid JSON"):
        partitioned.check_path(path, partitions=3, spill_dir=spill)
    assert list(spill.iterdir()) == []


@pytest.mark.parametrize(("text", "size"), [("2GiB", 2 << 30), ("512MiB", 512 << 20), ("512M", 512 << 20),
                                            ("1.5G", 3 << 29), ("200000000", 200000000), ("128mib", 128 << 20)])
def test_memory_sizes_are_parsed(text: str, size: int) -> None:
    assert partitioned.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "2 GB x", "-1GiB", "12x", "1MiB", "GiB", "64MiB", "100000000"])
def test_bad_memory_sizes_exit_2_with_what_is_expected(text: str, tmp_path: Path, capsys: Any) -> None:
    path = tmp_path / "h.jsonl"
    path.write_text("")
    with pytest.raises(SystemExit) as e:
        main(["check", f"--memory={text}", str(path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "--memory" in err and ("memory size" in err) and "Traceback" not in err


def _generate() -> Any:
    spec = importlib.util.spec_from_file_location("bench_check", ROOT / "benchmarks" / "check_exactly_once.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.generate


def test_a_history_bigger_than_the_budget_is_checked_within_it(tmp_path: Path) -> None:
    """A 1.5M-record history (about 230 MiB; the in-memory check needs about 360 MiB) checked
    with --memory 128MiB in a subprocess: its peak RSS (VmHWM of the child, plus its workers'
    growth) stays under 128 MiB and the injected duplicates are all found. (At 100 MiB the
    interpreter, numpy and the visibility times left too little: 102-103 MiB measured.)"""
    path = tmp_path / "h.jsonl"
    injected = _generate()(str(path), 1_500_000)
    budget = 128 << 20
    assert partitioned.estimate(path) > 2 * budget
    # VmHWM of the child itself (ru_maxrss would also count this process's peak before the exec),
    # plus, for each of its partition workers, the largest growth of a worker's resident set over
    # the pages it shares with its parent (a bound on what the workers add together)
    child = ("import sys\nfrom onceproof.cli import main\n"
             "from onceproof.checkers import partitioned\ncode = main(sys.argv[1:])\n"
             "hwm = [x for x in open('/proc/self/status') if x.startswith('VmHWM')][0].split()[1]\n"
             "kids = partitioned.WORKER_PEAK * partitioned.default_workers()\n"
             "print('RSS', int(hwm) * 1024 + kids, file=sys.stderr)\nsys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", child, "check", "--json", "--memory", "128MiB", str(path)],
                          capture_output=True, text=True, env=os.environ | {"ONCEPROOF_SCRATCH": str(tmp_path / "s")},
                          timeout=600, check=False)
    assert proc.returncode == 1, proc.stderr
    rss = int(proc.stderr.split("RSS")[-1])
    out = json.loads(proc.stdout)
    assert out["checkers"]["exactly-once"]["anomalies"]["duplicate"] == injected["duplicates"]
    assert out["stats"]["records"] == injected["records"]
    print(f"peak RSS {rss >> 20} MiB, budget 128 MiB")
    assert rss < budget, f"peak RSS {rss >> 20} MiB over the 128 MiB budget"
    assert list((tmp_path / "s").iterdir()) == []


def test_sigterm_during_a_partitioned_check_leaves_no_spill(tmp_path: Path) -> None:
    """SIGTERM while the split writes its partitions: exit 130 ("interrupted"), spill folder gone."""
    import signal
    import time

    path = tmp_path / "h.jsonl"
    _generate()(str(path), 400_000)
    scratch = tmp_path / "s"
    proc = subprocess.Popen([sys.executable, "-m", "onceproof", "check", "--memory", "128MiB", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"ONCEPROOF_SCRATCH": str(scratch)})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (scratch.exists() and any(scratch.iterdir())):
        time.sleep(0.01)
    assert scratch.exists() and any(scratch.iterdir()), "the check never started spilling"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert list(scratch.iterdir()) == []


def test_a_second_signal_while_the_spill_folder_is_removed_does_not_stop_the_removal(tmp_path: Path,
                                                                                       monkeypatch: Any) -> None:
    """A check of a 200M-record history got SIGTERM; removing its 13 GB spill folder took long
    enough for a second SIGTERM to arrive, which stopped the removal half-way (5.6 GB left in
    /tmp). While the folder is removed, SIGINT and SIGTERM wait; the handlers are given back."""
    import shutil
    import signal

    real = shutil.rmtree

    def rmtree_under_signals(path: Any, ignore_errors: bool = False) -> None:
        os.kill(os.getpid(), signal.SIGTERM)  # the second signal: would raise KeyboardInterrupt
        os.kill(os.getpid(), signal.SIGINT)
        real(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(partitioned.shutil, "rmtree", rmtree_under_signals)
    before = (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))
    with pytest.raises(RuntimeError):
        with partitioned._spill_folder(tmp_path) as folder:
            (folder / "p0.bin").write_bytes(b"x" * 1000)
            raise RuntimeError("the check failed")
    assert list(tmp_path.iterdir()) == []
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_read_without_events_keeps_every_other_record_in_order(tmp_path: Path) -> None:
    """The records a big run's other checkers read (start, faults, progress, notes) come through
    whole; sends and sink reads (of any length, across the 8 MiB read pieces) are dropped."""
    recs = [{"index": 0, "time": 0, "process": "harness", "type": "info", "f": "start", "value": {"run_id": "r"}}]
    for i in range(3000):
        recs.append({"index": len(recs), "time": i, "process": "load", "type": "invoke", "f": "send",
                     "value": {"id": f"e-{i}", "key": "k", "seq": i}})
        if i % 1000 == 0:
            recs.append({"index": len(recs), "time": i, "process": "nemesis", "type": "ok", "f": "apply",
                         "value": {"fault": f"f{i}", "kind": "kill", "targets": ["p-0"]}})
    big = [[f"e-{i}", "k", i, 0] for i in range(400_000)]  # one sink read longer than a read piece
    recs.append({"index": len(recs), "time": 5, "process": "observer", "type": "ok", "f": "final-read",
                 "value": {"full": True, "events": big}})
    recs.append({"index": len(recs), "time": 6, "process": "harness", "type": "info", "f": "quiesce-end",
                 "value": {"caught_up": True}})
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in recs))
    assert path.stat().st_size > 8 << 20
    light = partitioned.read_without_events(path)
    want = [r for r in recs if r["f"] not in ("send", "observe", "final-read")]
    assert [r["index"] for r in light] == [r["index"] for r in want]
    assert [r["f"] for r in light] == ["start", "apply", "apply", "apply", "quiesce-end"]


def test_check_refuses_a_run_with_unmerged_load_shards(tmp_path: Path, capsys: Any) -> None:
    """A run cut before it merged its load processes' shards: its history.jsonl alone would make
    every event a phantom, so `check` refuses with the command that merges them (exit 2)."""
    run = tmp_path / "run"
    (run / "logs" / "shards").mkdir(parents=True)
    (run / "history.jsonl").write_text(json.dumps({"index": 0, "time": 0, "process": "harness", "type": "info",
                                                   "f": "start", "value": {}}) + "\n")
    (run / "logs" / "shards" / "load-0.jsonl").write_text("")
    code = main(["check", str(run / "history.jsonl")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"python -m onceproof.loadprocs --merge {run}" in err and "Traceback" not in err


def test_a_run_whose_history_exceeds_checks_memory_is_checked_by_partitions(tmp_path: Path) -> None:
    """The run's own check (runner._conclude) of a history bigger than `checks.memory`: the
    partitioned path, the same exactly-once result as the in-memory check, a note saying so."""
    from onceproof.plan import validate_plan
    from onceproof.runner import _conclude
    from onceproof.stages import RunLog

    out = tmp_path / "run"
    (out / "logs").mkdir(parents=True)
    injected = _generate()(str(out / "history.jsonl"), 400_000)
    plan = validate_plan({"name": "big", "targets": {"kafka": {}, "postgres": {}}, "pipeline": {"command": ["x"]},
                          "checks": {"memory": "128MiB"}})
    assert partitioned.estimate(out / "history.jsonl") > plan.checks.memory_bytes
    whole = exactly_once.check(read_history(out / "history.jsonl"))
    res = _conclude(plan, RunLog(run_id="r", out_dir=out, started_at="2026-01-01T00:00:00Z", final_ok=True))
    got = res.results["checkers"]["exactly-once"]
    assert got["anomalies"] == whole["anomalies"] and got["anomalies"]["duplicate"] == injected["duplicates"]
    assert same(got, whole)
    assert res.valid is False
    assert any("checked by partitions" in n for n in res.results["notes"]), res.results["notes"]
