"""Benchmark: the report of a 1M-event run: its size, the time to render it, and the time
headless Chromium takes to load it (navigation start to the load event, then to the
timeline drawn). Goal: <= 5 MB, load < 3 s.

A synthetic run folder (tests/unit/report/synthetic_run.py: 1M sends at 2000/s for 500 s,
their acknowledgements, incremental sink observations every 0.5 s, a final read, three
faults, ~1000 duplicates and 2 lost events) is written once; side by side, the same report
with plotly's full bundle (what the plotly package ships) instead of the basic one kept in
harness/report/.

    .venv/bin/python benchmarks/report_size.py                 # 1M events
    .venv/bin/python benchmarks/report_size.py --events 200000
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from onceproof.report import page, render  # noqa: E402
from tests.e2e.report_browser import chromium, report_page  # noqa: E402
from tests.unit.report.synthetic_run import write_run  # noqa: E402

RATE = 2000


def load_times(browser: object, path: Path) -> tuple[float, float, list[str]]:
    """(navigation start -> load event, navigation start -> timeline drawn) in seconds, errors."""
    with report_page(browser) as (pg, seen):
        pg.goto(path.as_uri(), wait_until="load")
        load = pg.evaluate("performance.getEntriesByType('navigation')[0].loadEventEnd") / 1000
        pg.wait_for_selector("#timeline .main-svg")
        drawn = pg.evaluate("performance.now()") / 1000
        return load, drawn, seen["console"] + seen["pageerror"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--keep", type=Path, help="write the run folder here (default: a temporary one)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="report-bench-") as tmp:
        run = args.keep or Path(tmp) / "run"
        t = time.perf_counter()
        results = write_run(run, rate=RATE, duration_s=args.events / RATE, observe_every_s=0.5)
        gen_s = time.perf_counter() - t
        n_records = sum(1 for _ in open(run / "history.jsonl", "rb"))
        history_mb = (run / "history.jsonl").stat().st_size / 1e6
        print(f"run: {args.events:,} events, {n_records:,} history records ({history_mb:.0f} MB), "
              f"anomalies {results['checkers']['exactly-once']['anomalies']}; generated in {gen_s:.1f} s")

        rows = []
        for label, bundle in (("plotly basic (kept)", page.PLOTLY_BASIC), ("plotly full (peer)", None)):
            page.plotly_js.cache_clear()
            page.PLOTLY_BASIC = bundle if bundle is not None else Path("/nonexistent")
            t = time.perf_counter()
            out = render(run)
            render_s = time.perf_counter() - t
            target = run / f"report-{'basic' if bundle else 'full'}.html"
            out.replace(target)
            with chromium() as browser:
                load, drawn, errors = min((load_times(browser, target) for _ in range(3)),
                                          key=lambda r: r[0])
            rows.append((label, target.stat().st_size / 1e6, render_s, load, drawn, len(errors)))
        page.PLOTLY_BASIC = Path(page.__file__).resolve().parent / "plotly-basic.min.js"
        page.plotly_js.cache_clear()

    print(f"{'report':22} {'size MB':>8} {'render s':>9} {'load s':>7} {'drawn s':>8} {'errors':>7}")
    for label, size, render_s, load, drawn, errors in rows:
        print(f"{label:22} {size:8.2f} {render_s:9.2f} {load:7.2f} {drawn:8.2f} {errors:7d}")
    print("goal: <= 5 MB, load < 3 s (best of 3 loads in Debian's headless Chromium)")


if __name__ == "__main__":
    main()
