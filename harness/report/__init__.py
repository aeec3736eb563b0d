"""The run report: one self-contained `report.html` (styles, scripts and plotly.js inlined,
nothing fetched) that says whether the pipeline held, and if not what broke, when and under
which fault.

`render(run_dir)` reads the run folder (plan.yaml, history.jsonl, results.json, junit.xml,
logs/), aggregates the history per time bin, and writes `run_dir/report.html`. Any of the
files may be missing: the report shows what there is and says what is not.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from onceproof.report.page import build_page
from onceproof.report.run_folder import is_run_folder

REPORT_NAME = "report.html"

__all__ = ["render", "render_html", "is_run_folder", "REPORT_NAME"]


def render_html(run_dir: Path) -> str:
    """The report of a run folder, as HTML text."""
    return build_page(Path(run_dir))


def render(run_dir: Path) -> Path:
    """Write `run_dir/report.html` and return its path."""
    run_dir = Path(run_dir)
    out = run_dir / REPORT_NAME
    fd, tmp = tempfile.mkstemp(dir=run_dir, prefix=f".{REPORT_NAME}.")  # O_EXCL: never through a symlink
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render_html(run_dir))
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)  # a reader never sees half a report
    return out
