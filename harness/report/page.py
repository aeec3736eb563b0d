"""Assembles the report page: reads the run folder, computes the sections, renders the
jinja2 template (autoescaping on) with the styles, scripts and plotly.js inlined."""
from __future__ import annotations

import shlex
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import orjson
from markupsafe import Markup

from onceproof.checkers import merge_valid
from onceproof.checkers.history import History, HistoryError, read_history
from onceproof.report import anomalies as anomalies_mod
from onceproof.report import figures, run_folder
from onceproof.report import timeline as timeline_mod

HERE = Path(__file__).resolve().parent
PLOTLY_BASIC = HERE / "plotly-basic.min.js"


@lru_cache(maxsize=1)
def plotly_js() -> str:
    """plotly.js to inline: the basic bundle kept beside this module (scatter and bar charts,
    a fifth of the full bundle's size), else the full bundle of the plotly package."""
    if PLOTLY_BASIC.is_file():
        js = PLOTLY_BASIC.read_text(encoding="utf-8")
    else:
        from plotly.offline import get_plotlyjs

        js = get_plotlyjs()
    return _script_safe(js)


def _script_safe(text: str) -> str:
    """Text that cannot end the <script> element it is inlined in."""
    return text.replace("</script", "<\\/script").replace("</SCRIPT", "<\\/SCRIPT").replace("<!--", "<\\!--")


def json_for_script(data: Any) -> Markup:
    """JSON that is safe inside <script type="application/json">: every <, > and & is a
    \\u escape (they only occur inside JSON strings, where the escape means the same)."""
    raw = orjson.dumps(data, option=orjson.OPT_SERIALIZE_NUMPY, default=str).decode()
    return Markup(raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE)), autoescape=True,
                             undefined=jinja2.ChainableUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["secs"] = _secs
    env.filters["num"] = _num
    return env


def _dict(v: Any) -> dict[Any, Any]:
    """`v` if it is a mapping, else {}: a run folder's JSON and YAML are read as given, and a
    section that is not a mapping (`targets: true`) is shown as absent, never a traceback."""
    return v if isinstance(v, dict) else {}


def _secs(v: Any, digits: int = 3) -> str:
    return f"{v:.{digits}f} s" if isinstance(v, (int, float)) else "–"


def _num(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


def _verdict(results: dict[str, Any], checks: list[anomalies_mod.CheckerAnomalies]) -> tuple[str, str]:
    valid = results.get("valid")
    if valid is None and results.get("checkers"):
        vals = [c.get("valid") for c in results["checkers"].values() if isinstance(c, dict)]
        valid = merge_valid(vals) if vals else "unknown"
    if valid is True:
        return "valid", "The pipeline held: every event was applied exactly once."
    if valid is False:
        parts = [f"{n:,} {kind}" for c in checks for kind, n in c.counts if n]
        return "anomalies", "The pipeline did not hold: " + (", ".join(parts) or "see the checkers") + "."
    reasons = [str(c["reason"]) for c in _dict(results.get("checkers")).values()
               if isinstance(c, dict) and c.get("reason")]
    why = "; ".join([str(e) for e in results.get("errors") or []] + reasons) or (
        "the run was not checked" if not results else "the checkers could not decide (nothing was "
        "acknowledged or read, or the harness failed)")
    return "unknown", f"No verdict: {why}."


def _targets(results: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    for name, t in _dict(results.get("targets")).items():
        out.append({"name": str(name), "address": str(t.get("address", "")) if isinstance(t, dict) else ""})
    if not out:
        for name, spec in _dict(plan.get("targets")).items():
            out.append({"name": str(name), "address": "" if spec in (None, {}) else _compact(spec)})
    return out


def _compact(v: Any) -> str:
    return orjson.dumps(v, default=str).decode()


def _command(results: dict[str, Any], plan: dict[str, Any]) -> str:
    cmd = _dict(results.get("pipeline")).get("command") or _dict(plan.get("pipeline")).get("command")
    if isinstance(cmd, list):
        return shlex.join(str(c) for c in cmd)
    return str(cmd) if cmd else ""


def _rates(results: dict[str, Any], plan: dict[str, Any], tl: timeline_mod.Timeline,
           history: History | None) -> dict[str, Any]:
    w = results.get("workload") or {}
    asked = w.get("asked_rate") or _dict(plan.get("workload")).get("rate") or (
        (history.start or {}).get("rate") if history is not None else None)
    achieved = w.get("achieved_rate")
    if achieved is None and tl.n_sent and tl.load_start_s is not None:
        span = (tl.load_end_s or tl.end_s) - tl.load_start_s
        achieved = round(tl.n_sent / span, 1) if span > 0 else None
    ratio = achieved / asked if isinstance(achieved, (int, float)) and isinstance(asked, (int, float)) and asked \
        else None
    return {"asked": asked, "achieved": achieved, "ratio": ratio}


def _sends(results: dict[str, Any], tl: timeline_mod.Timeline) -> dict[str, Any]:
    w = results.get("workload") or {}
    if all(k in w for k in ("ok", "fail", "info")):
        return {"ok": w["ok"], "fail": w["fail"], "info": w["info"], "sent": w.get("sent")}
    for c in _dict(results.get("checkers")).values():
        s = _dict(c.get("stats")).get("sends") if isinstance(c, dict) else None
        if isinstance(s, dict):
            return {**s, "sent": sum(v for v in s.values() if isinstance(v, int))}
    if tl.n_sent:
        return {**tl.sends, "sent": tl.n_sent}
    return {}


def _latency(results: dict[str, Any], tl: timeline_mod.Timeline) -> dict[str, Any]:
    """What the perf checker said in results.json, else perf's answer from the history."""
    perf = _dict(results.get("checkers")).get("perf")
    lat = perf.get("latency_ms") if isinstance(perf, dict) else None
    if not isinstance(lat, dict) or not lat:
        lat = tl.latency_ms
    return {k: lat[k] for k in ("p50", "p90", "p99", "max") if k in lat}


LATENCY_TO = {
    "visible": "from the send's acknowledgement to when the effect became visible in the sink (its commit time, "
               "or the message's timestamp, as the sink recorded it): the observer's polling is not counted",
    "read": "from the send's acknowledgement to when the observer's read returned the effect (read time, not "
            "commit time: it includes up to one observe interval of polling)",
}


def _latency_to(results: dict[str, Any]) -> str:
    """Where the end-to-end latency ends, in words, from results.json's `perf.latency_to`
    (checkers/perf.py): commit/visibility time or the observer's read time."""
    perf = _dict(results.get("checkers")).get("perf")
    to = perf.get("latency_to") if isinstance(perf, dict) else None
    return LATENCY_TO.get(str(to), "from the send's acknowledgement to the effect's first sighting in the sink")


def _linearizability(results: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for name, res in _dict(results.get("checkers")).items():
        if not isinstance(res, dict) or not ("operations" in res or "longest_prefix" in res):
            continue
        fig, note = figures.lanes(res)
        out.append({"name": str(name), "valid": res.get("valid"), "partitions": res.get("partitions"),
                    "n_ops": len(res.get("operations") or []), "n_prefix": len(res.get("longest_prefix") or []),
                    "unplaced": [str(u) for u in (res.get("unplaced") or [])][:50],
                    "n_unplaced": len(res.get("unplaced") or []),
                    "minimal": [str(m.get("id") if isinstance(m, dict) else m)
                                for m in (res.get("minimal_invalid") or [])][:50], "figure": fig, "note": note,
                    "fig_id": f"lanes-{len(out)}"})
    return out


def _progress(results: dict[str, Any], tl: timeline_mod.Timeline) -> dict[str, Any]:
    """The pipeline's progress card: events unseen (not lost, not proven applied), the stall
    figure and the reason, from the exactly-once checker's result."""
    for c in _dict(results.get("checkers")).values():
        if isinstance(c, dict) and ("unseen" in c or c.get("stall")):
            stall = c.get("stall") if isinstance(c.get("stall"), dict) else {}
            return {"unseen": c.get("unseen"), "stall": stall, "reason": c.get("reason") or "",
                    "examples": [e for e in c.get("unseen_examples") or [] if isinstance(e, dict)][:10]}
    if tl.lag_x:
        return {"unseen": None, "stall": {}, "reason": "", "examples": []}
    return {}


def build_page(run_dir: Path) -> str:
    run = run_folder.load(run_dir)
    results, plan = run.results, run.plan
    notes = list(run.notes)
    history: History | None = None
    tl = timeline_mod.Timeline()
    if run.history_path.is_file():
        try:
            history = read_history(str(run.history_path))
            notes += history.warnings
            tl = timeline_mod.build(history)
        except HistoryError as e:
            notes.append(f"the history could not be read: {e}")
    if not tl.faults and results.get("faults"):
        timeline_mod.faults_from_results(results, tl)
    checks = anomalies_mod.collect(results, tl, history)
    for c in checks:
        notes += [f"{c.checker}: {n}" for n in c.notes]
    notes += [str(n) for n in results.get("notes") or []]
    verdict, headline = _verdict(results, checks)
    lin = _linearizability(results)
    figs: dict[str, Any] = {}
    if tl.x or tl.faults:
        figs["timeline"] = figures.timeline(tl, checks)
    for section in lin:
        if section["figure"]:
            figs[section["fig_id"]] = section.pop("figure")
    start = (history.start if history is not None else None) or {}
    duration = results.get("duration_s") if isinstance(results.get("duration_s"), (int, float)) else (
        tl.end_s or None)
    context = {
        "verdict": verdict, "headline": headline,
        "name": results.get("name") or plan.get("name") or start.get("plan") or run.path.name,
        "run_id": results.get("run_id") or start.get("run_id") or "",
        "seed": results.get("seed", plan.get("seed", start.get("seed"))),
        "started_at": results.get("started_at") or "",
        "duration": duration, "exit_code": results.get("exit_code"),
        "targets": _targets(results, plan), "command": _command(results, plan),
        "replicas": _dict(results.get("pipeline")).get("replicas") or _dict(plan.get("pipeline")).get("replicas"),
        "plan_text": run.plan_text, "errors": [str(e) for e in results.get("errors") or []], "notes": notes,
        "timeline": tl, "checks": checks, "lin": lin,
        "sends": _sends(results, tl), "rates": _rates(results, plan, tl, history),
        "latency": _latency(results, tl), "latency_to": _latency_to(results), "progress": _progress(results, tl), "faults": tl.faults, "links": run.links(),
        "recovery_level": int(timeline_mod.RECOVERY_LEVEL * 100),
        "figures_json": json_for_script(figs), "has_timeline": "timeline" in figs,
        "plotly_js": Markup(plotly_js()),
        "css": Markup(_script_safe((HERE / "report.css").read_text(encoding="utf-8"))),
        "js": Markup(_script_safe((HERE / "report.js").read_text(encoding="utf-8"))),
        "fault_colour": figures.fault_colour,
    }
    return _env().get_template("report.html.j2").render(context)
