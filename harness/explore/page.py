"""explore.html: one self-contained page (no script, no outside resource) with what an explore
did: the outcome, the minimal plan, the shrink steps from the first failure to the minimal
one, and every schedule tried with its replays' verdicts and links to their run folders.
Every text that came from a plan or a run is escaped."""
from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

__all__ = ["render_page", "write_page"]

CSS = """body{font:14px system-ui,sans-serif;margin:2em;max-width:72em}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}tr.fails td{background:#fde2e2}
pre{background:#f6f6f6;padding:1em;overflow:auto}ul{margin:0;padding-left:1.2em}"""


def _verdict(v: Any) -> str:
    return "valid" if v is True else "invalid" if v is False else "unknown"


def _faults(labels: list[str]) -> str:
    return "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in labels) + "</ul>"


def _disk(s: dict[str, Any]) -> str:
    d = s.get("disk") or {}
    if not d.get("removed_runs"):
        return ""
    return (f"<p>Run folders kept: {d['kept_runs']} (the failing runs'); removed: {d['removed_runs']} runs that did not "
            f"fail ({d['removed_mb']:g} MB), summarised below.</p>")


def render_page(s: dict[str, Any]) -> str:
    """The page for explore.json's dict `s`."""
    e = html.escape
    by_index = {x["index"]: x for x in s["examples"]}
    if s["minimal"]:
        rep = s["minimal"]["reproduced"]
        repro = s["minimal"].get("reproduction")
        how = (f"then failed again in <b>{rep[0]} of {rep[1]}</b> reproduction runs of minimal.yaml "
               f"(<a href='reproduction/summary.html'>reproduction/summary.html</a>)" if repro and repro.get("runs")
               else f"failed in {rep[0]} of {rep[1]} replay(s) (no reproduction runs)")
        if repro and repro.get("skipped"):
            how += f"; {int(repro['skipped'])} reproduction run(s) not started: the budget was spent"
        outcome = (f"<p><b>Fails with {e(str(s['anomaly']))}</b>: the smallest failing schedule has "
                   f"{len(s['minimal']['faults'])} fault(s) and {how}. "
                   f"<a href='minimal.yaml'>minimal.yaml</a> is a normal plan (<code>onceproof run minimal.yaml</code>); "
                   f"its last failing run: <a href='minimal-run/report.html'>minimal-run/report.html</a>.</p>"
                   f"<pre>{e(yaml.safe_dump({'faults': s['minimal']['faults']}, sort_keys=False))}</pre>")
    else:
        outcome = (f"<p><b>No failing schedule found</b> in {s['schedules_tried']} schedules ({s['runs']} runs); "
                   f"the search ended: {e(s['ended'])}.</p>")
    steps = "".join(
        f"<tr><td>{n}</td><td>#{i}</td><td>{e(by_index[i]['phase'])}</td><td>{len(by_index[i]['faults'])}</td>"
        f"<td>{_faults(by_index[i]['faults'])}</td></tr>"
        for n, i in enumerate(s["steps"], 1) if i in by_index) or "<tr><td colspan=5>no failure, nothing to shrink</td></tr>"
    rows = []
    for x in s["examples"]:
        reps = "<br>".join((f"<a href='{e(r['folder'])}/report.html'>{e(_verdict(r['valid']))}</a> " if r.get("folder")
                            else f"{e(_verdict(r['valid']))} (folder removed) ")
                           + e(', '.join(f'{k}={n}' for k, n in (r.get('anomalies') or {}).items()))
                           + "".join(f"<br><small>{e(m)}</small>" for m in r.get("errors") or [])
                           for r in x["replays"])
        rows.append(f"<tr class='{'fails' if x['fails'] else ''}'><td>{x['index']}</td><td>{e(x['phase'])}</td>"
                    f"<td>{'fails: ' + e(str(x['anomaly'])) if x['fails'] else 'passes'}</td><td>{_faults(x['faults'])}</td>"
                    f"<td>{reps}</td><td>{x['seconds']:.0f}</td></tr>")
    sp = s["space"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(s['name'])}: explore</title>
<style>{CSS}</style></head><body><h1>explore {e(s['name'])}</h1>
<p>{s['schedules_tried']} schedules tried ({s['runs']} runs of {s['run_duration_s']:g}s of load), {s['failures']} failing;
budget {s['budget_s']:g}s, spent {s['seconds']:.0f}s, ended: {e(s['ended'])}. A schedule fails when {s['need']} of up to
{s['replays']} replays end invalid with the same anomaly. Seed {e(str(s['seed']))}.</p>
<p>Space: {e(', '.join(sp['kinds']))} on {e(', '.join(sp['nodes']))}; up to {sp['max_faults']} faults starting in
[{sp['from_s']:g}s, {sp['until_s']:g}s), each {sp['shortest_s']:g}s to {sp['longest_s']:g}s.</p>
<h2>Outcome</h2>{outcome}{_disk(s)}
<h2>Shrink steps</h2><p>Each failing schedule kept, first failure first: dense / generate (found), ddmin
(faults dropped), simplify (a fault earlier, shorter or simpler), shrink (Hypothesis).</p>
<table><tr><th>step</th><th>example</th><th>by</th><th>faults</th><th>schedule</th></tr>{steps}</table>
<h2>Schedules tried</h2><table><tr><th>#</th><th>phase</th><th>judged</th><th>schedule</th><th>replays</th><th>s</th></tr>
{''.join(rows)}</table></body></html>
"""


def write_page(path: Path, s: dict[str, Any]) -> None:
    """Write render_page(s) to `path` (atomically)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(render_page(s))
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
