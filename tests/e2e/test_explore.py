"""`onceproof explore` and `onceproof run --runs N` against real targets. One deployment (Kafka
and PostgreSQL, a Session) is shared by the explores here: each example costs its load, not a
JVM start. Each broken reference pipeline is searched over the server faults that break it
(see WINDOW and the commit-before-process test; the whole default space, Kafka kills included,
is run by benchmarks/explore.py and the README's measured `explore --budget 10m`), at most 3
faults, so one of the first dense schedules fails and ddmin takes it to 1 fault in a few runs.
The CLI's `run --runs 3` of a minimal plan, on targets of its own, is run on the lost test's
(its failure does not depend on timing; see the duplicate test's docstring)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from onceproof.explore.driver import explore
from onceproof.plan import load_plan
from onceproof.session import Session

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared():
    """Kafka (1 node) and PostgreSQL, up for the whole module."""
    with Session(load_plan(ROOT / "plans/at-least-once.yaml")) as session:
        yield session


def _narrowed(tmp_path: Path, name: str, targets: tuple[str, ...] = ("pipeline-0", "pipeline-1", "postgres")) -> Path:
    """The reference plan with an `explore:` section keeping Kafka out of the space: a run
    whose only broker is killed waits out long client timeouts, too slow for a CI budget (the
    default space is covered by the unit tests)."""
    import yaml

    data = yaml.safe_load((ROOT / "plans" / f"{name}.yaml").read_text())
    data["explore"] = {"targets": list(targets)}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _check_found(result, anomaly: str) -> None:
    """The search found `anomaly` and shrank the first failing schedule (never grew it): the
    minimal plan is a plan `onceproof run` reads, with its last failing replay's report. How
    often the minimal plan fails again is chance (a kill must land in the pipeline's window);
    the issue's <= 2 faults and its reproduction are measured in benchmarks/explore.py."""
    s = result.summary
    assert result.exit_code == 1, s["ended"]
    assert s["anomaly"] == anomaly
    first = result.search.steps[0]  # the first failing schedule
    assert result.minimal is not None and 1 <= len(result.minimal) <= len(first.schedule)
    load_plan(result.minimal_plan)
    assert (result.out_dir / "minimal-run" / "report.html").is_file()
    page = (result.out_dir / "explore.html").read_text()
    assert "Shrink steps" in page and f"{s['schedules_tried']} schedules tried" in page


def _spaced(tmp_path: Path, name: str, space: dict) -> Path:
    """The reference plan with `space` as its `explore:` section."""
    import yaml

    data = yaml.safe_load((ROOT / "plans" / f"{name}.yaml").read_text())
    data["explore"] = space
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _check_runs(out: Path, proc: subprocess.CompletedProcess, n: int, anomaly: str) -> None:
    """`onceproof run PLAN --runs n --json`'s outcome: the aggregate is invalid whenever one run
    is (unknown when none is and one is unknown), the summary's catch rate per anomaly matches
    the runs' own results.json, each run has its own seed (the plan's first), and `anomaly` was
    caught at least once."""
    summary = json.loads((out / "summary.json").read_text())
    per_run = [json.loads((out / f"run-{i}" / "results.json").read_text()) for i in range(1, n + 1)]
    verdicts = [r["valid"] for r in per_run]
    expected = False if False in verdicts else True if all(v is True for v in verdicts) else "unknown"
    assert summary["valid"] == expected and json.loads(proc.stdout.splitlines()[-1])["valid"] == expected
    assert proc.returncode == {False: 1, True: 0, "unknown": 3}[expected], proc.stderr[-2000:]
    caught: dict[str, int] = {}
    for r in per_run:
        checker = r["checkers"]["exactly-once"]
        if checker["valid"] is not False:  # a checker without a verdict claims nothing
            continue
        for kind, k in (checker["anomalies"] or {}).items():
            caught[kind] = caught.get(kind, 0) + (1 if k else 0)
    assert {k: c["runs"] for k, c in summary["catch_rate"].items()} == {k: c for k, c in caught.items() if c}
    assert all(c["of"] == n for c in summary["catch_rate"].values())
    assert len({r["seed"] for r in per_run}) == n
    assert anomaly in summary["catch_rate"], f"the minimal plan never failed with {anomaly} in {n} runs: {verdicts}"
    assert anomaly in (out / "summary.html").read_text()


# What opens at-least-once's window (batches applied, their offsets never committed) within a CI
# budget, as the default space's search found it (`onceproof explore plans/at-least-once.yaml`
# ended at one `partition kafka-1 at 2.4s for 7.5s`): Kafka cut off from the replicas past the
# group's session timeout while they apply what they fetched. It needs runs of 15 s: in runs of
# 8 s the same partitions passed (too little load after the heal). Kills of a replica open the
# window only when one lands in it (~1 in 4 here), and a failure made by one had every ddmin
# candidate pass its one run (replay.py says why more replays would not save it); pauses of a
# replica past the session timeout passed 5 of 5.
WINDOW = {"kinds": ["partition"], "targets": ["kafka-1", "postgres"], "max-faults": 3,
          "from": "1s", "until": "4s", "shortest": "5s", "longest": "8s"}


@pytest.mark.timeout(600)
def test_explore_finds_duplicate_in_at_least_once_shrinks_it_and_reports_its_reproduction(shared, tmp_path):
    """At-least-once over WINDOW: the search finds `duplicate`, shrinks it to <= 2 faults, and
    reports the minimal plan's reproduction rate (1 run) in explore.html and minimal.yaml.

    Whether that run fails is chance, not asserted: the reference pipelines are static group
    members (`group.instance.id`) with the range assignor, so a steady group gets the same
    partitions back after its session times out and its next owner reads on where it was. A
    partition of Kafka duplicates only when it moves a partition between replicas, in the
    rebalance that follows the second replica's join, and how early that join happens differs
    between warm and fresh targets (CI, stop 22: the minimal plan failed 2 of 2 replays and
    1 of 1 reproduction on the shared targets, then 0 of 3 under `onceproof run` on its own).
    The CLI's `run --runs 3` of a minimal plan is asserted on the lost test below, whose
    failure does not depend on timing."""
    plan = _spaced(tmp_path, "at-least-once", WINDOW)
    # 300 s: about 1 dense schedule in 3 fails and each judgement is a run of ~26 s; the search
    # holds back one run's time for the reproduction (CI, stop 21: with 2-run judgements and
    # 240 s, one overran its estimate and the reproduction was skipped)
    result = explore(plan, budget="300s", run_duration="15s", out=tmp_path / "x", session=shared, confirm=1)
    _check_found(result, "duplicate")
    s = result.summary
    assert len(result.minimal) <= 2, s["minimal"]["faults"]
    repro = s["minimal"]["reproduction"]
    assert repro is not None and repro["runs"] == 1 and result.reproduced == (repro["failed"], 1)
    assert f"{repro['failed']} of 1</b> reproduction runs" in (result.out_dir / "explore.html").read_text()
    assert f"{repro['failed']} of 1 reproduction runs" in result.minimal_plan.read_text()


@pytest.mark.timeout(600)
def test_explore_finds_lost_in_commit_before_process_shrinks_it_and_the_minimal_plan_fails_again(shared, tmp_path):
    """Commit-before-process loses a batch when its write fails after the offsets were committed:
    a kill or a partition of PostgreSQL while the replicas write does it every time (the default
    space's search ends at one `kill postgres`, reproduced 3 of 3), while a kill of a replica must
    land in the few milliseconds between the commit and the write being sent (a sent write is
    applied even if the replica dies) and a pause shorter than the write's deadline only delays
    it. So the space here is PostgreSQL's faults while the replicas write (3-6 s): the search
    finds `lost` and shrinks it to <= 2 faults; then `onceproof run minimal.yaml --runs 3` (the
    CLI, targets of its own) fails again with `lost`, and its aggregate and catch rate agree
    with the runs' own verdicts."""
    plan = _spaced(tmp_path, "commit-before-process", {"kinds": ["kill", "pause", "partition"], "max-faults": 3,
                                                         "targets": ["postgres"], "from": "3s", "until": "6s"})
    result = explore(plan, budget="120s", run_duration="8s", out=tmp_path / "x", session=shared, confirm=0)
    _check_found(result, "lost")
    assert len(result.minimal) <= 2, result.summary["minimal"]["faults"]
    out = tmp_path / "again"
    proc = subprocess.run([sys.executable, "-m", "onceproof", "run", str(result.minimal_plan), "--runs", "3",
                           "--out", str(out), "--json"], capture_output=True, text=True, timeout=400, cwd=tmp_path)
    _check_runs(out, proc, 3, "lost")


def test_explore_of_a_correct_pipeline_spends_its_budget_and_passes(shared, tmp_path):
    result = explore(_narrowed(tmp_path, "kafka-txn-copy", ("pipeline-0", "pipeline-1")), budget="50s",
                     run_duration="8s", out=tmp_path / "x", session=shared)
    s = result.summary
    assert result.exit_code == 0 and result.minimal is None and s["ended"] == "budget"
    assert s["schedules_tried"] >= 1 and s["failures"] == 0
    assert f"No failing schedule found</b> in {s['schedules_tried']} schedules" in \
        (result.out_dir / "explore.html").read_text()


def test_bad_runs_and_budget_are_bad_input(tmp_path):
    for args in (["run", "plans/at-least-once.yaml", "--runs", "0"],
                 ["explore", "plans/at-least-once.yaml", "--budget", "soon"],
                 ["explore", "plans/at-least-once.yaml", "--need", "3", "--runs", "2"],
                 ["explore", "plans/at-least-once.yaml", "--confirm", "-1"]):
        proc = subprocess.run([sys.executable, "-m", "onceproof", *args], capture_output=True, text=True,
                              timeout=120, cwd=ROOT)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (args, proc.stderr)
