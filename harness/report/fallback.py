"""The plain report: a few lines of HTML (verdict, one row per checker, links to the run's
files), written when the rich report cannot be rendered, so a run folder always has a page."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any


def plain_report(path: Path, results: dict[str, Any], problem: str = "") -> None:
    """Write `path` (HTML) from a results.json dict; `problem` says why the rich report is
    missing. Raises OSError if the file cannot be written."""
    verdict = {True: "VALID", False: "ANOMALIES FOUND", "unknown": "UNKNOWN"}.get(results.get("valid"), "UNKNOWN")
    rows = []
    for name, r in (results.get("checkers") or {}).items():
        counts = ", ".join(f"{k}={v}" for k, v in (r.get("anomalies") or {}).items())
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(str(r.get('valid')))}</td>"
                    f"<td>{html.escape(counts)}</td></tr>")
    path.write_text(
        "<!doctype html><meta charset=utf-8><title>onceproof report</title>"
        f"<h1>{html.escape(verdict)}: {html.escape(str(results.get('name')))}</h1>"
        f"<p>{html.escape(problem)}</p><table>{''.join(rows)}</table>"
        "<p><a href=results.json>results.json</a> <a href=history.jsonl>history.jsonl</a> "
        "<a href=junit.xml>junit.xml</a></p>")
