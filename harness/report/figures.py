"""Plotly figure specs (plain dicts, drawn by the inlined plotly.js in the page).

Plotly renders its labels as pseudo-HTML, so every string that comes from the run (fault
kinds, targets, event ids, operation values) is HTML-escaped here: plotly decodes the
entities back and shows `<script>` as text."""
from __future__ import annotations

import html
from typing import Any

import orjson

from onceproof.faults.base import fault_colours, marker_symbols
from onceproof.report.anomalies import CheckerAnomalies
from onceproof.report.timeline import Timeline

# declared by each fault kind (`@kind(colour=..., marker=..., marks=...)` in faults/)
FAULT_COLOURS = fault_colours()
MARKER_SYMBOLS = marker_symbols()
MAX_LANE_OPS = 2000
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


def esc(v: Any) -> str:
    return html.escape(v if isinstance(v, str) else orjson.dumps(v, default=str).decode(), quote=False)


def fault_colour(kind: str) -> str:
    """The CSS colour of a fault kind's window (grey for a kind this version does not know)."""
    return FAULT_COLOURS.get(kind, "#7f7f7f")


def _levels(spans: list[tuple[float, float]], min_gap: float) -> list[int]:
    """A row for each label so that overlapping or close windows don't print on top of each other."""
    ends: list[float] = []
    out = []
    for start, end in spans:
        for lvl, last in enumerate(ends):
            if start >= last + min_gap:
                ends[lvl] = end
                out.append(lvl)
                break
        else:
            ends.append(end)
            out.append(len(ends) - 1)
    return out


def timeline(tl: Timeline, anomalies: list[CheckerAnomalies]) -> dict[str, Any]:
    x = tl.x
    traces: list[dict[str, Any]] = [
        _line("sent", x, tl.sent, "#1f77b4", dash="dot"),
        _line("acknowledged", x, tl.acked, "#2ca02c"),
        _line("applied", x, tl.applied, "#111111", width=2.4),
    ]
    if any(tl.failed):
        traces.append(_line("send failed", x, tl.failed, "#d62728", width=1))
    if any(tl.info):
        traces.append(_line("send unknown (info)", x, tl.info, "#ff7f0e", width=1))
    traces += [
        _line("latency p50", x, tl.latency_p50, "#17becf", yaxis="y2"),
        _line("latency p99", x, tl.latency_p99, "#9467bd", yaxis="y2", dash="dash"),
    ]

    if tl.lag_x:
        name = f"lag ({esc(tl.lag_group)})" if tl.lag_group else "lag"
        traces.append({"type": "scatter", "mode": "lines", "name": name, "x": tl.lag_x, "y": tl.lag,
                       "yaxis": "y4", "fill": "tozeroy", "line": {"color": "#e377c2", "width": 1.6, "shape": "hv"},
                       "connectgaps": False})

    # lane row: process kills/restarts per target, then the anomalies' moments per kind
    lanes: list[str] = []
    by_verb: dict[str, list[Any]] = {}
    for m in tl.markers:
        lane = esc(m.lane)
        if lane not in lanes:
            lanes.append(lane)
        by_verb.setdefault(m.what, []).append((m.time_s, lane, f"{esc(m.what)} {lane} ({esc(m.detail)})"))
    for verb, pts in by_verb.items():
        traces.append({"type": "scatter", "mode": "markers", "name": esc(verb), "yaxis": "y3",
                       "x": [p[0] for p in pts], "y": [p[1] for p in pts], "hovertext": [p[2] for p in pts],
                       "hoverinfo": "text+x",
                       "marker": {"symbol": MARKER_SYMBOLS.get(verb, "circle"), "size": 11,
                                  "color": "#d62728" if verb == "kill" else "#2ca02c",
                                  "line": {"width": 2, "color": "#d62728" if verb == "kill"
                                           else "#2ca02c"}}})
    anomaly_pts: list[tuple[float, str, str]] = []
    for checker in anomalies:
        for kind, exs in checker.examples.items():
            for ex in exs:
                if ex.moment_s is not None:
                    anomaly_pts.append((ex.moment_s, esc(kind), f"{esc(kind)}: {esc(ex.id)} key {esc(ex.key)}"))
    if anomaly_pts:
        for _, lane, _ in anomaly_pts:
            if lane not in lanes:
                lanes.append(lane)
        traces.append({"type": "scatter", "mode": "markers", "name": "anomaly (example)", "yaxis": "y3",
                       "x": [p[0] for p in anomaly_pts], "y": [p[1] for p in anomaly_pts],
                       "hovertext": [p[2] for p in anomaly_pts], "hoverinfo": "text+x",
                       "marker": {"symbol": "diamond", "size": 9, "color": "#b00020"}})

    x_end = max(tl.end_s, x[-1] + tl.bin_s if x else 0.0)
    min_width = max(x_end / 400, 0.05)
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    spans = [(w.start_s, w.end_s if w.end_s is not None else x_end) for w in tl.faults]
    levels = _levels(spans, x_end / 12)
    for w, (x0, x1), lvl in zip(tl.faults, spans, levels):
        x1 = max(x1, x0 + min_width)
        colour = fault_colour(w.kind)
        shapes.append({"type": "rect", "name": f"fault {esc(w.fault)}", "xref": "x", "yref": "paper",
                       "x0": x0, "x1": x1, "y0": 0, "y1": 1, "fillcolor": colour, "opacity": 0.16,
                       "layer": "below", "line": {"width": 1, "color": colour}})
        label = f"<b>{esc(w.fault)}</b> {esc(w.kind)} {esc(', '.join(w.targets))}"
        if w.end_s is None:
            label += " (never healed)"
        if w.outcome == "fail":
            label += " (apply failed)"
        annotations.append({"x": x0, "xref": "x", "xanchor": "left", "y": 1.0 + 0.045 * lvl, "yref": "paper",
                            "yanchor": "bottom", "text": label, "showarrow": False,
                            "font": {"size": 11, "color": colour}, "bgcolor": "rgba(255,255,255,0.8)"})
    for name, t in tl.phases:
        shapes.append({"type": "line", "name": f"phase {name}", "xref": "x", "yref": "paper", "x0": t, "x1": t,
                       "y0": 0, "y1": 1, "line": {"width": 1, "dash": "dot", "color": "#aaa"}})
    groups: list[tuple[float, list[str]]] = []  # phases close in time share one label
    for name, t in sorted(tl.phases, key=lambda p: p[1]):
        if groups and t - groups[-1][0] < x_end / 40:
            groups[-1][1].append(name)
        else:
            groups.append((t, [name]))
    if groups:
        lanes.append("harness")
        traces.append({"type": "scatter", "mode": "markers+text", "name": "harness phase", "yaxis": "y3",
                       "x": [t for t, _ in groups], "y": ["harness"] * len(groups),
                       "text": [", ".join(names) for _, names in groups], "textposition": "middle right",
                       "textfont": {"size": 9, "color": "#888"}, "hoverinfo": "text+x",
                       "hovertext": [", ".join(names) for _, names in groups], "showlegend": False,
                       "marker": {"symbol": "line-ns-open", "size": 10, "color": "#888"}})
    top = 30 + 18 * (max(levels) + 1 if levels else 0)
    lat_values = [v for v in tl.latency_p99 + tl.latency_p50 if v]
    log_latency = bool(lat_values) and max(lat_values) / max(min(lat_values), 0.01) > 30
    # heights in pixels, turned into axis domains: the lane row grows with its lanes
    rates_px, latency_px, gap_px, lane_px = 270, 130, 22, 24
    lag_px = 90 if tl.lag_x else 0
    lanes_px = lane_px * len(lanes) + (10 if lanes else 0)
    plot_px = rates_px + gap_px + latency_px + (gap_px + lag_px if lag_px else 0) + (gap_px + lanes_px if lanes else 0)
    bottom = 120
    lanes_top = lanes_px / plot_px
    lag_lo = (lanes_px + gap_px) / plot_px if lanes else 0.0
    lag_hi = lag_lo + lag_px / plot_px
    lat_lo = (lag_hi + gap_px / plot_px) if lag_px else lag_lo
    lat_hi = lat_lo + latency_px / plot_px
    layout = {
        "font": FONT, "height": plot_px + top + bottom, "margin": {"l": 120, "r": 20, "t": top, "b": bottom},
        "hovermode": "x unified", "showlegend": True, "plot_bgcolor": "#fff",
        "legend": {"orientation": "h", "y": -52 / plot_px, "yanchor": "top", "x": 0},
        "xaxis": {"title": {"text": f"seconds since {tl.origin}", "standoff": 6}, "range": [0, x_end],
                  "showgrid": True, "gridcolor": "#eee", "zeroline": False,
                  "anchor": "y3" if lanes else "y4" if lag_px else "y2"},
        "yaxis": {"title": {"text": "events / s"}, "domain": [lat_hi + gap_px / plot_px, 1.0],
                  "rangemode": "tozero", "gridcolor": "#eee"},
        "yaxis2": {"title": {"text": "latency ms"}, "domain": [lat_lo, lat_hi],
                   "type": "log" if log_latency else "linear", "gridcolor": "#eee"},
        "shapes": shapes, "annotations": annotations,
    }
    if lag_px:
        layout["yaxis4"] = {"title": {"text": "source lag"}, "domain": [lag_lo, lag_hi], "rangemode": "tozero",
                            "gridcolor": "#eee"}
    if lanes:
        layout["yaxis3"] = {"domain": [0, lanes_top], "type": "category", "categoryorder": "array",
                            "categoryarray": lanes[::-1], "tickmode": "array", "tickvals": lanes,
                            "ticktext": lanes, "range": [-0.6, len(lanes) - 0.4], "fixedrange": True,
                            "automargin": True, "gridcolor": "#eee"}
    return {"data": traces, "layout": layout}


def _line(name: str, x: list[float], y: list[Any], colour: str, *, yaxis: str = "y", width: float = 1.6,
          dash: str = "solid") -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "name": name, "x": x, "y": y, "yaxis": yaxis,
            "line": {"color": colour, "width": width, "dash": dash, "shape": "hv"}, "connectgaps": False}


def lanes(result: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """A Porcupine-like view of a linearizability result: a lane of operation bars per
    process, the longest linearizable prefix and the operations that could not be placed
    highlighted, and the smallest set that cannot be linearized (`minimal_invalid`) when the
    result has it. Returns (figure, a note on what was left out)."""
    ops = [op for op in result.get("operations") or [] if isinstance(op, dict)
           and isinstance(op.get("call"), (int, float))]
    if not ops:
        return None, "the checker listed no operations"
    prefix = {_key(i) for i in result.get("longest_prefix") or []}
    unplaced = {_key(i) for i in result.get("unplaced") or []}
    minimal = {_key(i.get("id") if isinstance(i, dict) else i) for i in result.get("minimal_invalid") or []}
    ops.sort(key=lambda op: op["call"])
    note = ""
    if len(ops) > MAX_LANE_OPS:
        first_bad = next((i for i, op in enumerate(ops) if _key(op.get("id")) in unplaced), len(ops) - 1)
        lo = max(0, min(first_bad - MAX_LANE_OPS // 2, len(ops) - MAX_LANE_OPS))
        note = f"showing operations {lo + 1}-{lo + MAX_LANE_OPS} of {len(ops)}, around the first unplaced one"
        ops = ops[lo:lo + MAX_LANE_OPS]
    end = max(op["return"] if isinstance(op.get("return"), (int, float)) else op["call"] for op in ops)
    # history times are ns since the run started; a foreign history (Porcupine, Jepsen) may use any unit
    scale, unit = (1e9, "seconds since the run started") if end > 1e6 else (1.0, "time")
    groups: dict[str, dict[str, list[Any]]] = {}
    lane_names: list[str] = []
    for op in ops:
        k = _key(op.get("id"))
        status = ("in the smallest set that cannot be linearized" if k in minimal else
                  "could not be placed" if k in unplaced else
                  "in the longest linearizable prefix" if k in prefix else "after the prefix")
        ret = op.get("return")
        pending = not isinstance(ret, (int, float))
        stop: float = end if pending else float(ret)  # type: ignore[arg-type]
        lane = f"process {esc(op.get('process'))}"
        if lane not in lane_names:
            lane_names.append(lane)
        g = groups.setdefault(status, {"y": [], "base": [], "x": [], "text": [], "hover": []})
        g["y"].append(lane)
        g["base"].append(op["call"] / scale)
        g["x"].append(max(stop - op["call"], scale / 1e6) / scale)
        g["text"].append(esc(_brief(op.get("input"))))
        g["hover"].append(f"op {esc(op.get('id'))}: {esc(op.get('input'))} → "
                          f"{'pending' if pending else esc(op.get('output'))}<br>"
                          f"{op['call'] / scale:g} → {'?' if pending else f'{stop / scale:g}'}")
    colours = {"in the longest linearizable prefix": "#2ca02c", "could not be placed": "#d62728",
               "in the smallest set that cannot be linearized": "#9467bd",
               "after the prefix": "#bbbbbb"}
    traces = [{"type": "bar", "orientation": "h", "name": status, "y": g["y"], "base": g["base"], "x": g["x"],
               "text": g["text"], "textposition": "inside", "insidetextanchor": "middle",
               "hovertext": g["hover"], "hoverinfo": "text", "marker": {"color": colours[status],
                                                                         "line": {"width": 1, "color": "#555"}}}
              for status, g in groups.items()]
    lane_names.sort(key=lambda name: (len(name), name))  # process 2 before process 10
    layout = {"font": FONT, "barmode": "overlay", "height": 120 + 42 * len(lane_names),
              "margin": {"l": 100, "r": 20, "t": 20, "b": 60}, "bargap": 0.35, "hovermode": "closest",
              "xaxis": {"title": {"text": unit}, "gridcolor": "#eee"},
              "yaxis": {"type": "category", "categoryorder": "array", "categoryarray": lane_names[::-1]},
              "legend": {"orientation": "h", "y": -0.25}, "plot_bgcolor": "#fff"}
    return {"data": traces, "layout": layout}, note


def _key(v: Any) -> str:
    return str(v)


def _brief(v: Any) -> str:
    s = v if isinstance(v, str) else orjson.dumps(v, default=str).decode()
    return s if len(s) <= 24 else s[:23] + "…"
