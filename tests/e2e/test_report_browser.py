"""The report in a real headless Chromium: the report of a real run with anomalies (the
deliberately broken at-least-once pipeline under kills: it finds duplicates), and the report
of a synthetic history whose keys and payloads carry `<script>`. Screenshots are saved under
test-artifacts/ for a person to look at."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.e2e.report_browser import CHROMIUM, chromium, report_page
from tests.unit.report.synthetic_run import HOSTILE, write_run

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
PLAN = ROOT / "plans" / "at-least-once.yaml"
RUN_TRIES = 1

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real run per session: `onceproof run plans/at-least-once.yaml`, which exits 1
    because the pipeline applies some events twice (the plan's slow database under kills makes
    a kill land between a batch's write and its offset commit every time)."""
    logs = []
    for attempt in range(1, RUN_TRIES + 1):
        out = tmp_path_factory.mktemp(f"real{attempt}") / "run"
        proc = subprocess.run([sys.executable, "-m", "onceproof.cli", "run", str(PLAN), "--out", str(out),
                               "--duration", "15"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                              env=os.environ | {"PYTHONUNBUFFERED": "1"})
        logs.append(f"attempt {attempt}: exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
                    f"--- stderr\n{proc.stderr[-3000:]}")
        if proc.returncode != 0:
            break
    log = "\n".join(logs)
    assert proc.returncode in (0, 1), f"the at-least-once run ended without a verdict:\n{log}"
    assert (out / "report.html").is_file(), log
    return out


def anomalies_of(results: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {name: {k: int(v) for k, v in res["anomalies"].items()}
            for name, res in results["checkers"].items()
            if isinstance(res, dict) and isinstance(res.get("anomalies"), dict)}


@pytest.fixture(scope="module")
def browser() -> Any:
    with chromium() as b:
        yield b


def open_report(page: Any, run: Path) -> None:
    page.goto((run / "report.html").as_uri(), wait_until="load")
    page.wait_for_selector("#timeline .main-svg", timeout=15_000)


def shaded_windows(page: Any) -> dict[str, int]:
    return page.evaluate("""() => {
        const gd = document.getElementById('timeline');
        return {
            layout: gd._fullLayout.shapes.filter(s => (s.name || '').startsWith('fault ')).length,
            drawn: gd.querySelectorAll('.layer-below .shapelayer path').length,
            labels: gd.querySelectorAll('.annotation-text').length,
        };
    }""")


def table_counts(page: Any, checker: str) -> dict[str, int]:
    rows = page.locator(f'table.counts[data-checker="{checker}"] tbody tr')
    out = {}
    for i in range(rows.count()):
        cells = rows.nth(i).locator("td")
        out[cells.nth(0).inner_text().strip()] = int(cells.nth(1).inner_text().replace(",", ""))
    return out


def expand_first_example(page: Any) -> Any:
    example = page.locator("details.example").first
    assert not example.locator("table.history").is_visible()
    example.locator("summary").click()
    assert example.evaluate("d => d.open")
    table = example.locator("table.history")
    assert table.is_visible()
    assert table.locator("tbody tr").count() >= 1
    return example


def test_report_of_a_real_run_with_anomalies(real_run: Path, browser: Any) -> None:
    results = orjson.loads((real_run / "results.json").read_bytes())
    with report_page(browser) as (page, seen):
        open_report(page, real_run)
        verdict = {True: "valid", False: "anomalies"}.get(results["valid"], "unknown")
        assert page.locator("#verdict").get_attribute("data-verdict") == verdict
        windows = shaded_windows(page)
        assert windows["layout"] == windows["drawn"] == len(results["faults"]) > 0, windows
        for name, counts in anomalies_of(results).items():
            assert table_counts(page, name) == counts
        assert seen["console"] == [] and seen["pageerror"] == []
        assert seen["requests"] == []  # opened from disk, it fetched nothing
        ARTIFACTS.mkdir(exist_ok=True)
        assert results["valid"] is False, "the at-least-once plan must be caught (duplicates)"
        assert results["checkers"]["exactly-once"]["anomalies"]["duplicate"] > 0
        lag = page.evaluate("""() => {
            const gd = document.getElementById('timeline');
            return {traces: gd.data.filter(t => (t.name || '').startsWith('lag')).length,
                    axis: !!gd._fullLayout.yaxis4};
        }""")
        assert lag == {"traces": 1, "axis": True}, lag  # the source-lag lane of the timeline
        assert page.locator("#progress #unseen").inner_text().strip() == "0"
        example = expand_first_example(page)
        assert "send" in example.locator("table.history").inner_text()
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(ARTIFACTS / "report-real-run.png"), full_page=True)
        assert seen["console"] == [] and seen["pageerror"] == []


def test_script_in_the_history_shows_as_text_in_the_browser(tmp_path: Path, browser: Any) -> None:
    results = write_run(tmp_path, rate=200, duration_s=20.0, linearizable=True)
    from onceproof.report import render

    render(tmp_path)
    with report_page(browser) as (page, seen):
        open_report(page, tmp_path)
        assert page.locator("script").count() == 3  # the page's own; none from the history
        assert shaded_windows(page)["drawn"] == len(results["faults"])
        assert table_counts(page, "exactly-once") == results["checkers"]["exactly-once"]["anomalies"]
        hostile = page.locator("details.example", has_text=HOSTILE).first
        hostile.locator("summary").click()
        assert HOSTILE in hostile.inner_text()  # shown as text, not run
        page.locator("#linearizability .main-svg").first.wait_for()
        page.evaluate("window.scrollTo(0, 0)")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "report-synthetic.png"), full_page=True)
        assert seen["dialog"] == [], "a script from the history ran"
        assert seen["console"] == [] and seen["pageerror"] == []
        assert seen["requests"] == []
