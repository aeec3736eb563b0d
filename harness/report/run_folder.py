"""What a run folder holds, read defensively: any file may be missing or broken (a crashed
run, a history checked alone), and each problem becomes a note on the page, not an error."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml  # type: ignore[import-untyped]

FILES = ("plan.yaml", "history.jsonl", "results.json", "junit.xml")
# the shape results.json and the plan are expected to have at the top; anything else is dropped
RESULT_DICTS = ("plan", "checkers", "workload", "targets", "pipeline")
RESULT_LISTS = ("faults", "errors", "notes")
PLAN_DICTS = ("targets", "pipeline", "workload", "checks", "quiesce")


def is_run_folder(path: Path) -> bool:
    return path.is_dir() and any((path / name).is_file() for name in ("history.jsonl", "results.json"))


@dataclass
class RunFolder:
    path: Path
    results: dict[str, Any] = field(default_factory=dict)
    plan: dict[str, Any] = field(default_factory=dict)
    plan_text: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def history_path(self) -> Path:
        return self.path / "history.jsonl"

    def links(self) -> list[dict[str, Any]]:
        """Files a reader may open next to the report: node logs, then the run's data files.
        Only paths inside the folder are linked (results.json is input, not trusted)."""
        out: list[dict[str, Any]] = []
        seen: set[str] = set()

        def add(rel: Any, label: str) -> None:
            if not isinstance(rel, str) or rel in seen:
                return
            target = (self.path / rel).resolve()
            try:
                target.relative_to(self.path.resolve())
            except ValueError:
                return
            seen.add(rel)
            out.append({"href": Path(rel).as_posix(), "label": label, "exists": target.is_file()})

        for name, t in (self.results.get("targets") or {}).items():
            if isinstance(t, dict):
                add(t.get("log"), f"{name} log")
        for rel in (self.results.get("pipeline") or {}).get("logs") or []:
            add(rel, f"{Path(str(rel)).stem} log")
        logs = self.path / "logs"
        if logs.is_dir():
            for p in sorted(logs.glob("*.log")):
                add(f"logs/{p.name}", f"{p.stem} log")
        for name in ("history.jsonl", "results.json", "junit.xml", "plan.yaml"):
            add(name, name)
        return out


def load(path: Path) -> RunFolder:
    run = RunFolder(Path(path))
    results_path = run.path / "results.json"
    if results_path.is_file():
        try:
            data = orjson.loads(results_path.read_bytes())
            if isinstance(data, dict):
                run.results = data
            else:
                run.notes.append("results.json is not a JSON object; it was ignored")
        except orjson.JSONDecodeError as e:
            run.notes.append(f"results.json is not valid JSON ({e}); the verdict is unknown")
    else:
        run.notes.append("no results.json: this run was not checked (it may have crashed); "
                         "everything below comes from the history")
    plan_path = run.path / "plan.yaml"
    if plan_path.is_file():
        run.plan_text = plan_path.read_text(errors="replace")
        try:
            loaded = yaml.safe_load(run.plan_text)
            run.plan = loaded if isinstance(loaded, dict) else {}
        except yaml.YAMLError:
            run.notes.append("plan.yaml is not valid YAML; shown as text")
    _drop_misshapen(run.results, RESULT_DICTS, RESULT_LISTS, "results.json", run.notes)
    _drop_misshapen(run.plan, PLAN_DICTS, (), "the plan", run.notes)
    if not run.plan and isinstance(run.results.get("plan"), dict):
        run.plan = run.results["plan"]
    if not run.plan_text and run.plan:
        run.plan_text = yaml.safe_dump(run.plan, sort_keys=False, allow_unicode=True)
    if not run.history_path.is_file():
        run.notes.append("no history.jsonl: the timeline cannot be drawn")
    return run


def _drop_misshapen(data: dict[str, Any], dicts: tuple[str, ...], lists: tuple[str, ...], what: str,
                    notes: list[str]) -> None:
    for key, kind in [(k, dict) for k in dicts] + [(k, list) for k in lists]:
        if key in data and data[key] is not None and not isinstance(data[key], kind):
            notes.append(f"{what}: `{key}` should be a{'n object' if kind is dict else ' list'}; it was ignored")
            del data[key]
