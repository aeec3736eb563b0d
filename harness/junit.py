"""junit.xml for CI systems: one testcase per checker; a failure lists anomaly counts and the
first examples. A checker that measures rather than judges (`"measurement": True`: perf) is a
passing testcase with its figures in system-out, or a skipped one when it had nothing to
measure; it is never a failure. (The plain HTML fallback report is report/fallback.py.)"""
from __future__ import annotations

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
    if result.get("error"):
        lines.append(f"error: {result['error']}")
    return "\n".join(lines)


def _measures(result: dict[str, Any]) -> bool:
    """A checker that measures (perf: `"measurement": True`) rather than looks for anomalies."""
    return result.get("measurement") is True and result.get("valid") is not False and not result.get("error")


def _measurement_text(result: dict[str, Any]) -> str:
    lat = result.get("latency_ms") or {}
    lines = ["latency ms: " + ", ".join(f"{k}={lat.get(k)}" for k in ("p50", "p90", "p99", "max"))]
    for f in result.get("faults") or []:
        back = f"recovered {f['recovery_s']} s after the heal" if f.get("recovery_s") is not None else \
            f.get("recovery_note") or "recovery unknown"
        lines.append(f"{f.get('fault')} {f.get('kind')} {','.join(f.get('targets') or [])}: {back}")
    lines += [f"note: {n}" for n in result.get("notes") or []]
    return "\n".join(lines)


def write_junit(path: Path, results: dict[str, Any]) -> None:
    """Write `path` (JUnit XML, one testsuite) from a results.json dict: one testcase per
    checker (a failure when invalid, an error when it gave no verdict), or one error testcase
    `run` when no checker ran. Raises OSError if the file cannot be written."""
    checkers = results.get("checkers") or {}
    suite = ET.Element("testsuite", name=f"onceproof.{results.get('name', 'run')}",
                       tests=str(max(1, len(checkers))), time=str(results.get("duration_s", 0)))
    failures = errors = 0
    for name, result in checkers.items():
        case = ET.SubElement(suite, "testcase", classname=f"onceproof.{results.get('name')}", name=name,
                             time=str(results.get("duration_s", 0)))
        if _measures(result):
            if result.get("valid") is True:
                ET.SubElement(case, "system-out").text = _measurement_text(result)
            else:
                ET.SubElement(case, "skipped", message="nothing to measure").text = _measurement_text(result)
        elif result.get("valid") is True:
            if result.get("notes"):  # a verdict that stands with something worth knowing (lenient faults)
                ET.SubElement(case, "system-out").text = "\n".join(f"note: {n}" for n in result["notes"])
        elif result.get("valid") is False:
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
