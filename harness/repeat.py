"""`onceproof run PLAN --runs N`: the same plan N times (Jepsen's test count, ducktape's
repeat), because a chaos run is timing-dependent: a bug a plan can catch is caught in some
runs and not in others, and one run passes it by luck.

Seeds: run 1 uses the plan's own seed (so `--runs 1` is `run`); run i (i >= 2) uses
`derive_seed(seed, i)`: the first 8 bytes of SHA-256("onceproof-runs:<seed>:<i>") as a
signed 64-bit integer. The same plan and N give the same seeds, and two plans whose seeds
differ by one do not share runs. Each run redraws the plan's random faults and workload
from its own seed (its plan.yaml says which).

The aggregate verdict (`aggregate`): any invalid run makes it invalid (exit 1); else any
unknown run makes it unknown (exit 3); else valid (exit 0), DESIGN.md's exit codes. The
summary (summary.json, summary.html in the out folder) gives each run's verdict and folder,
and the catch rate per anomaly: in how many runs the exactly-once checker reported it."""
from __future__ import annotations

import hashlib
import html
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from onceproof.errors import ExitCode
from onceproof.plan import Plan, validate_plan

__all__ = ["RepeatResult", "aggregate", "anomalies_of", "derive_plan", "derive_seed", "run_many", "write_summary"]

SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def derive_seed(seed: int, i: int) -> int:
    """The seed of run `i` (1-based) of a repeat of a plan with `seed`: the plan's own for
    i = 1, else SHA-256("onceproof-runs:<seed>:<i>")'s first 8 bytes as a signed integer."""
    if i <= 1:
        return seed
    digest = hashlib.sha256(f"onceproof-runs:{seed}:{i}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def plan_data(plan: Plan) -> dict[str, Any]:
    """The plan's raw data (secrets included, unlike `Plan.resolved`), ready for `derive_plan`."""
    data = plan.model_dump(mode="json", by_alias=True, exclude_none=False)
    data["targets"] = {k: v for k, v in data["targets"].items() if v is not None}
    return data


def derive_plan(plan: Plan, changes: dict[str, Any], name: str = "<derived plan>") -> Plan:
    """A copy of `plan` with `changes` applied ({"seed": 3, "workload.duration": 10.0,
    "faults": [...]}: dotted paths into the raw plan), validated again (its random faults
    redrawn from the new seed). Raises PlanError if the result is not a valid plan."""
    from onceproof.plan import apply_overrides

    data = plan_data(plan)
    apply_overrides(data, changes)
    return validate_plan(data, name)


def anomalies_of(results: dict[str, Any]) -> dict[str, int]:
    """The anomaly kinds every checker that found the run INVALID reported in its results.json
    (count > 0): the exactly-once checker's, and those of the others that report anomalies
    (`reads`: stale-read..., `partial`), summed by kind. A checker without a verdict claims
    nothing: a vacuous run's `lost` count is no catch (it was printed beside UNKNOWN, and
    counted in the catch rate, for a sink whose rows were all there)."""
    out: dict[str, int] = {}
    for checker in (results.get("checkers") or {}).values():
        if not isinstance(checker, dict) or checker.get("valid", False) is not False:
            continue
        found = checker.get("anomalies")
        for k, n in (found or {}).items():
            if isinstance(n, (int, float)) and n:
                out[k] = out.get(k, 0) + int(n)
    return out


def aggregate(verdicts: list[Any]) -> Any:
    """True | False | "unknown" of several runs: any False -> False; else any "unknown" (or no
    run at all) -> "unknown"; else True."""
    if any(v is False for v in verdicts):
        return False
    if not verdicts or any(v is not True for v in verdicts):
        return "unknown"
    return True


@dataclass
class RepeatResult:
    """What run_many returns: the out folder, each run's RunResult, the aggregate verdict, its
    exit code, and summary.json's dict."""

    out_dir: Path
    runs: list[Any] = field(default_factory=list)
    valid: Any = "unknown"
    exit_code: int = int(ExitCode.UNKNOWN)
    summary: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


def run_many(plan: Plan, n: int, out_dir: Path, *, reuse: bool = True,
             on_progress: Callable[[Any], None] | None = None,
             on_run: Callable[[int, Any], None] | None = None, session: Any = None,
             may_start: Callable[[int], bool] | None = None) -> RepeatResult:
    """Run `plan` `n` times (seeds: `derive_seed`), run i into `out_dir/run-<i>`, then write the
    summary. `reuse`: one Session for all runs (targets started once, data reset between runs);
    else each run starts and stops its own targets. `on_run(i, result)` after each run. Ctrl-C
    during a run ends that run as interrupted (the runner's own handling) and no further run
    starts; the summary covers the runs done. `session`: a Session already up to run on (it
    must fit the plan). `may_start(i)`: asked before run i (1..n); False starts no more runs
    (e.g. a time budget spent: explore's reproduction runs). Raises RunFolderError (bad input)
    for an unusable `out_dir`."""
    from onceproof.runner import execute
    from onceproof.session import Session
    from onceproof.stages import RunFolderError, check_out_dir

    if n < 1:
        raise ValueError("--runs: expected at least 1")
    out_dir = Path(out_dir)
    _check_repeat_dir(out_dir, check_out_dir, RunFolderError)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = RepeatResult(out_dir)
    t0 = time.monotonic()
    import contextlib

    shared = session is not None
    with contextlib.nullcontext(session) if shared or not reuse else Session(plan, out_dir / "targets-logs") \
            as session:
        for i in range(1, n + 1):
            if may_start is not None and not may_start(i):
                break
            variant = plan if i == 1 else derive_plan(plan, {"seed": derive_seed(plan.seed, i)})
            run_dir = out_dir / f"run-{i}"
            if session is not None:
                r = session.execute(variant, run_dir, on_progress=on_progress)
            else:
                r = execute(variant, run_dir, on_progress=on_progress)
            result.runs.append(r)
            if on_run:
                on_run(i, r)
            if r.results.get("interrupted"):
                result.interrupted = True
                break
    result.valid = aggregate([r.valid for r in result.runs])
    result.exit_code = int(ExitCode.of(result.valid))
    result.summary = summarize(plan, result.runs, result.valid, n, reuse or shared, time.monotonic() - t0, result.interrupted)
    write_summary(out_dir, result.summary)
    return result


def _check_repeat_dir(out: Path, check_out_dir: Callable[[Path], None], error: type[Exception]) -> None:
    """The out folder of a repeat: new, empty, or a previous repeat's (its summary.json and
    run-<i> folders, each one checked like a run folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise error(f"--out {out}: not a folder; give a new or empty folder")
    for e in os.scandir(out):
        if e.name in ("summary.json", "summary.html", "targets-logs"):
            continue
        if e.name.startswith("run-") and e.is_dir(follow_symlinks=False):
            check_out_dir(Path(e.path))
            continue
        raise error(f"--out {out}: the folder holds {e.name!r}, which a repeat did not write; give a new or "
                    "empty folder")


def summarize(plan: Plan, runs: list[Any], valid: Any, asked: int, reuse: bool, wall_s: float,
              interrupted: bool) -> dict[str, Any]:
    """summary.json's dict: each run (index, seed, verdict, anomalies, folder, seconds), the
    catch rate per anomaly (runs reporting it / runs done), the aggregate verdict."""
    rows = []
    counts: dict[str, int] = {}
    for i, r in enumerate(runs, 1):
        found = anomalies_of(r.results)
        for k in found:
            counts[k] = counts.get(k, 0) + 1
        rows.append({"run": i, "seed": r.results.get("seed"), "valid": r.valid, "exit_code": r.exit_code,
                     "anomalies": found, "folder": f"run-{i}", "duration_s": r.results.get("duration_s"),
                     "errors": r.results.get("errors") or []})
    done = len(runs)
    return {"name": plan.name, "seed": plan.seed, "runs_asked": asked, "runs_done": done, "valid": valid,
            "exit_code": int(ExitCode.of(valid)), "targets_reused": reuse, "wall_s": round(wall_s, 3),
            "interrupted": interrupted,
            "verdicts": {"valid": sum(r.valid is True for r in runs), "invalid": sum(r.valid is False for r in runs),
                         "unknown": sum(r.valid not in (True, False) for r in runs)},
            "catch_rate": {k: {"runs": c, "of": done, "rate": round(c / done, 4)} for k, c in sorted(counts.items())},
            "runs": rows}


def write_summary(out_dir: Path, summary: dict[str, Any]) -> None:
    """summary.json and summary.html (self-contained, every text escaped) into `out_dir`."""
    _atomic(out_dir / "summary.json", orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    _atomic(out_dir / "summary.html", summary_html(summary).encode())


def _verdict_text(v: Any) -> str:
    return "valid" if v is True else "INVALID" if v is False else "unknown"


def summary_html(s: dict[str, Any]) -> str:
    """The repeat's summary page: aggregate verdict, catch rate per anomaly, one row per run
    linking to its report. Plain HTML, no script; every value escaped."""
    e = html.escape
    rates = "".join(f"<tr><td>{e(k)}</td><td>{c['runs']} / {c['of']}</td><td>{c['rate'] * 100:.0f}%</td></tr>"
                    for k, c in s["catch_rate"].items()) or "<tr><td colspan=3>no anomaly in any run</td></tr>"
    rows = "".join(
        f"<tr class='{e(_verdict_text(r['valid']).lower())}'><td>{r['run']}</td><td>{e(str(r['seed']))}</td>"
        f"<td>{e(_verdict_text(r['valid']))}</td>"
        f"<td>{e(', '.join(f'{k}={n}' for k, n in r['anomalies'].items()) or '-')}</td>"
        f"<td>{e(str(r['duration_s']))}</td>"
        f"<td><a href='{e(r['folder'])}/report.html'>{e(r['folder'])}/report.html</a></td></tr>"
        for r in s["runs"])
    v = s["verdicts"]
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(s['name'])}: {s['runs_done']} runs</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.3em .6em;text-align:left}}.invalid td{{background:#fde2e2}}
.unknown td{{background:#fff4cc}}h1 span{{font-weight:normal}}</style></head><body>
<h1>{e(s['name'])}: <span>{e(_verdict_text(s['valid']))}</span></h1>
<p>{s['runs_done']} of {s['runs_asked']} runs{' (interrupted)' if s['interrupted'] else ''}: {v['valid']} valid,
{v['invalid']} invalid, {v['unknown']} unknown; plan seed {e(str(s['seed']))}; targets
{'kept up between runs' if s['targets_reused'] else 'started for each run'}; {s['wall_s']:.0f} s.</p>
<h2>Catch rate per anomaly</h2><table><tr><th>anomaly</th><th>runs</th><th>rate</th></tr>{rates}</table>
<h2>Runs</h2><table><tr><th>run</th><th>seed</th><th>verdict</th><th>anomalies</th><th>seconds</th><th>report</th></tr>
{rows}</table></body></html>
"""


def _atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
