"""junit.xml for CI systems: one testcase per checker; a failure lists anomaly counts and the
first examples. Also the plain fallback report used when the rich one cannot be rendered."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET


def _failure_text(result: dict[str, Any]) -> str:
    counts = {k: v for k, v in (result.get("anomalies") or {}).items() if v}
    lines = ["anomalies: " + (", ".join(f"{k}={v}" for k, v in counts.items()) or "none")]
    for kind, examples in (result.get("examples") or {}).items():
        for ex in examples[:3]:
            lines.append(f"  {kind}: event {ex.get('id')} key={ex.get('key')} seq={ex.get('seq')}: {ex.get('why', '')}")
    if result.get("unseen"):
        lines.append(f"unseen: {result['unseen']:,} acknowledged events never reached by the pipeline "
                     f"(not lost): {result.get('reason', '')}")
    stall = result.get("stall")
    if isinstance(stall, dict):
        lines.append("stall: " + ", ".join(f"{k}={v}" for k, v in stall.items()))
    lines += [f"note: {n}" for n in result.get("notes") or []]
    return "\n".join(lines)


def write_junit(path: Path, results: dict[str, Any]) -> None:
    checkers = results.get("checkers") or {}
    suite = ET.Element("testsuite", name=f"onceproof.{results.get('name', 'run')}",
                       tests=str(max(1, len(checkers))), time=str(results.get("duration_s", 0)))
    failures = errors = 0
    for name, result in checkers.items():
        case = ET.SubElement(suite, "testcase", classname=f"onceproof.{results.get('name')}", name=name,
                             time=str(results.get("duration_s", 0)))
        if result.get("valid") is False:
            failures += 1
            counts = {k: v for k, v in (result.get("anomalies") or {}).items() if v}
            ET.SubElement(case, "failure", message=", ".join(f"{k}={v}" for k, v in counts.items()),
                          type="anomalies").text = _failure_text(result)
        elif result.get("valid") == "unknown":
            errors += 1
            message = f"no verdict (unknown): {result['reason']}" if result.get("reason") else "no verdict (unknown)"
            ET.SubElement(case, "error", message=message, type="unknown").text = _failure_text(result)
    if not checkers:
        case = ET.SubElement(suite, "testcase", classname=f"onceproof.{results.get('name')}", name="run")
        errors += 1
        ET.SubElement(case, "error", message="no checker ran", type="infrastructure").text = "\n".join(
            results.get("errors") or [])
    for err in results.get("errors") or []:
        ET.SubElement(suite, "system-err").text = err
    suite.set("failures", str(failures))
    suite.set("errors", str(errors))
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)


def plain_report(path: Path, results: dict[str, Any], problem: str = "") -> None:
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
