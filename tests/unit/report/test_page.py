from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import orjson
import pytest

from onceproof.cli import main
from onceproof.report import render, render_html
from tests.unit.report.synthetic_run import HOSTILE, write_run

FIGURES = re.compile(r'<script type="application/json" id="figures">(.*?)</script>', re.S)


def figures_of(html: str) -> dict:
    return json.loads(FIGURES.search(html).group(1))


def copy_run(run_dir: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    return out


def test_render_writes_report_html_into_the_run_folder(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    path = render(run)
    assert path == run / "report.html"
    assert path.read_text().startswith("<!DOCTYPE html>")
    assert not list(run.glob("*.tmp"))


def test_report_needs_no_network(run_dir: Path) -> None:
    html = render_html(run_dir)
    assert not re.search(r"<script[^>]*\ssrc=", html)
    markup = re.sub(r"<script\b.*?</script>", "", html, flags=re.S)  # plotly.js names its website
    assert "<link" not in markup
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", markup)
    assert "Content-Security-Policy" in html  # and the page forbids fetching anything


def test_script_from_the_history_shows_as_text_and_never_runs(run_dir: Path) -> None:
    html = render_html(run_dir)
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # keys in examples, plan env, logs
    # exactly our three script elements: the figures' JSON, plotly.js, the page's own script
    assert len(re.findall(r"<script\b", html, re.I)) == 3
    figs = figures_of(html)  # hostile text inside the chart data is escaped for plotly too
    assert "<script>" not in json.dumps(figs)


def test_payload_with_a_script_in_an_example_is_escaped(tmp_path: Path) -> None:
    results = write_run(tmp_path, rate=50, duration_s=6.0)
    ex = results["checkers"]["exactly-once"]["examples"]["duplicate"][0]
    ex["records"][0]["value"]["payload"] = HOSTILE
    ex["why"] = "why " + HOSTILE
    results["errors"] = [HOSTILE]
    results["targets"][HOSTILE] = {"address": HOSTILE, "log": f"logs/{HOSTILE}.log"}
    (tmp_path / "results.json").write_bytes(orjson.dumps(results))
    html = render_html(tmp_path)
    assert HOSTILE not in html
    assert html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4


def test_anomaly_table_counts_are_those_of_results_json(run_dir: Path) -> None:
    html = render_html(run_dir)
    results = orjson.loads((run_dir / "results.json").read_bytes())
    for kind, n in results["checkers"]["exactly-once"]["anomalies"].items():
        assert f'data-kind="{kind}" data-count="{n}"' in html
    assert 'data-verdict="anomalies"' in html


def test_timeline_has_one_shaded_window_per_fault(run_dir: Path) -> None:
    fig = figures_of(render_html(run_dir))["timeline"]
    windows = [s for s in fig["layout"]["shapes"] if s["name"].startswith("fault ")]
    results = orjson.loads((run_dir / "results.json").read_bytes())
    assert [w["name"] for w in windows] == [f"fault {f['fault']}" for f in results["faults"]]
    for w, f in zip(windows, results["faults"]):
        assert w["x0"] == pytest.approx(f["applied_s"], abs=0.01)
        assert w["x1"] == pytest.approx(f["healed_s"], abs=0.01)
    names = [t["name"] for t in fig["data"]]
    assert {"sent", "acknowledged", "applied", "latency p50", "latency p99", "kill", "restart"} <= set(names)


def test_examples_are_capped_per_kind(tmp_path: Path) -> None:
    results = write_run(tmp_path, rate=100, duration_s=10.0, examples=1000)
    assert len(results["checkers"]["exactly-once"]["examples"]["duplicate"]) > 20
    html = render_html(tmp_path)
    assert html.count('<details class="example" data-kind="duplicate"') == 20


def test_linearizability_lanes_highlight_prefix_and_unplaced(run_dir: Path) -> None:
    html = render_html(run_dir)
    assert 'id="linearizability"' in html
    fig = figures_of(html)["lanes-0"]
    by_name = {t["name"]: t for t in fig["data"]}
    assert len(by_name["could not be placed"]["y"]) == 2
    assert len(by_name["in the longest linearizable prefix"]["y"]) == 48
    assert set(by_name["could not be placed"]["y"]) <= {f"process {p}" for p in range(4)}


def test_crashed_run_without_results_still_renders_from_the_history(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    (run / "results.json").unlink()
    (run / "junit.xml").unlink()
    data = (run / "history.jsonl").read_bytes()
    (run / "history.jsonl").write_bytes(data[: len(data) // 2] + b'{"index": 99999, "ti')  # SIGKILLed mid-line
    html = render_html(run)
    assert 'data-verdict="unknown"' in html
    assert "no results.json" in html
    assert "the last line is incomplete" in html
    fig = figures_of(html)["timeline"]
    assert sum(fig["data"][0]["y"]) > 0  # sends drawn
    assert "junit.xml (missing)" in html


def test_results_alone_still_render_verdict_and_faults(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    (run / "history.jsonl").unlink()
    html = render_html(run)
    assert 'data-verdict="anomalies"' in html
    assert "no history.jsonl" in html
    shapes = figures_of(html)["timeline"]["layout"]["shapes"]
    assert len([s for s in shapes if s["name"].startswith("fault ")]) == 3


@pytest.mark.parametrize("results", [{}, {"valid": "unknown", "errors": ["kafka-1 did not start"]},
                                     {"checkers": {"exactly-once": {"valid": True}}}])
def test_sparse_results_render(tmp_path: Path, results: dict) -> None:
    (tmp_path / "results.json").write_bytes(orjson.dumps(results))
    html = render_html(tmp_path)
    assert "<!DOCTYPE html>" in html
    if results.get("errors"):
        assert "kafka-1 did not start" in html and 'data-verdict="unknown"' in html


def test_broken_history_is_a_note_not_a_crash(tmp_path: Path) -> None:
    (tmp_path / "history.jsonl").write_text('{"index": 0}\n{"index": 1}\n')
    html = render_html(tmp_path)
    assert "the history could not be read" in html


def test_cli_rerenders_a_report(run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = copy_run(run_dir, tmp_path)
    assert main(["report", str(run)]) == 0
    assert (run / "report.html").is_file()
    assert str(run / "report.html") in capsys.readouterr().out


def test_cli_refuses_a_folder_that_is_not_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_misshapen_results_render_with_a_note(run_dir: Path, tmp_path: Path) -> None:
    run = copy_run(run_dir, tmp_path)
    (run / "results.json").write_bytes(orjson.dumps({
        "valid": False, "checkers": ["exactly-once"], "targets": "kafka", "pipeline": {"logs": "x", "command": 3},
        "workload": None, "faults": {"f1": 1}, "errors": "boom", "plan": [1]}))
    html = render_html(run)
    assert "`checkers` should be an object; it was ignored" in html
    assert 'data-verdict="anomalies"' in html
    assert len([s for s in figures_of(html)["timeline"]["layout"]["shapes"] if s["name"].startswith("fault ")]) == 3


def test_report_size_does_not_grow_with_the_number_of_events(tmp_path: Path) -> None:
    small, big = tmp_path / "small", tmp_path / "big"
    write_run(small, rate=100, duration_s=50.0, observe_every_s=0.5)  # 5k events
    write_run(big, rate=1000, duration_s=50.0, observe_every_s=0.5)  # 50k events
    size_small, size_big = (len(render_html(d).encode()) for d in (small, big))
    assert size_big < 1.5e6
    assert size_big - size_small < 50_000  # series are per bin, examples capped
