"""What a run folder holds, read defensively: any file may be missing or broken (a crashed
run, a history checked alone), and each problem becomes a note on the page, not an error."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import orjson
import yaml  # type: ignore[import-untyped]

FILES = ("plan.yaml", "history.jsonl", "results.json", "junit.xml")
# the shape results.json and the plan are expected to have at the top; anything else is dropped
RESULT_DICTS = ("plan", "checkers", "workload", "targets", "pipeline")
RESULT_LISTS = ("faults", "errors", "notes")
PLAN_DICTS = ("targets", "pipeline", "workload", "checks", "quiesce")


PLAN_MAX_BYTES = 1 << 20
PLAN_MAX_DEPTH = 64
PLAN_MAX_NODES = 100_000


class PlanTooComplex(ValueError):
    """A YAML document the report will not expand: recursive, too deep or too big once its
    aliases are expanded."""


class _LimitedLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader that refuses recursive aliases, nesting deeper than PLAN_MAX_DEPTH and
    documents of more than PLAN_MAX_NODES nodes with aliases expanded (an alias bomb)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._open: list[Any] = []
        self._sizes: dict[int, int] = {}
        self._total = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            anchor = self.peek_event().anchor
            node = self.anchors.get(anchor)
            if node is not None and any(node is n for n in self._open):
                raise PlanTooComplex(f"has a recursive alias (*{anchor})")
            self._grow(self._sizes.get(id(node), 1))
            return super().compose_node(parent, index)
        if len(self._open) >= PLAN_MAX_DEPTH:
            raise PlanTooComplex(f"is nested more than {PLAN_MAX_DEPTH} deep")
        self._open.append(None)
        before = self._total
        try:
            node = super().compose_node(parent, index)
        finally:
            self._open.pop()
        self._grow(1)
        self._sizes[id(node)] = self._total - before
        return node

    def compose_sequence_node(self, anchor: Any) -> Any:
        return self._opened(super().compose_sequence_node, anchor)

    def compose_mapping_node(self, anchor: Any) -> Any:
        return self._opened(super().compose_mapping_node, anchor)

    def _opened(self, compose: Any, anchor: Any) -> Any:
        # the node is registered under its anchor before its children are composed: remember it
        # as open so that an alias to it from inside is seen as recursion
        real = self.anchors.__class__.__setitem__
        loader = self

        class _Anchors(dict):  # type: ignore[type-arg]
            def __setitem__(self, key: Any, value: Any) -> None:
                real(self, key, value)
                if key == anchor:
                    loader._open[-1] = value

        if anchor is not None and not isinstance(self.anchors, _Anchors):
            self.anchors = _Anchors(self.anchors)
        return compose(anchor)

    def _grow(self, n: int) -> None:
        self._total += n
        if self._total > PLAN_MAX_NODES:
            raise PlanTooComplex(f"expands to more than {PLAN_MAX_NODES:,} nodes (aliases expanded)")


def load_yaml(text: str) -> Any:
    """`text` as YAML (safe types only), refusing recursion, deep nesting and alias bombs with
    PlanTooComplex (a yaml.YAMLError for bad YAML)."""
    loader = _LimitedLoader(text)
    try:
        return loader.get_single_data()
    except RecursionError:
        raise PlanTooComplex(f"is nested more than {PLAN_MAX_DEPTH} deep") from None
    finally:
        loader.dispose()


def _relative_href(rel: str) -> str | None:
    """A link to the file `rel` of the run folder that a browser can only read as a relative
    path ("./" + percent-encoded: `javascript:x` becomes ./javascript%3Ax); None for an absolute
    path, a parent step, or a name with control characters."""
    if not rel or "\\" in rel or any(ord(c) < 32 or ord(c) == 127 for c in rel):
        return None
    p = PurePosixPath(rel)
    if p.is_absolute() or ".." in p.parts:
        return None
    return "./" + quote(p.as_posix(), safe="/")


def is_run_folder(path: Path) -> bool:
    """Whether `path` is a folder holding a run's history.jsonl or results.json."""
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
            href = _relative_href(rel)
            if href is None:
                return
            seen.add(rel)
            out.append({"href": href, "label": label, "exists": target.is_file()})

        for name, t in (self.results.get("targets") or {}).items():
            if isinstance(t, dict):
                add(t.get("log"), f"{name} log")
        pipeline_logs = (self.results.get("pipeline") or {}).get("logs")
        for rel in pipeline_logs if isinstance(pipeline_logs, list) else []:
            if isinstance(rel, str):
                add(rel, f"{Path(rel).stem} log")
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
        with plan_path.open("rb") as fh:
            raw = fh.read(PLAN_MAX_BYTES + 1)
        if len(raw) > PLAN_MAX_BYTES:
            run.notes.append(f"plan.yaml is over {PLAN_MAX_BYTES >> 10} KiB; it was not read")
        else:
            run.plan_text = raw.decode(errors="replace")
            try:
                loaded = load_yaml(run.plan_text)
                run.plan = loaded if isinstance(loaded, dict) else {}
            except PlanTooComplex as e:
                run.notes.append(f"plan.yaml {e}; shown as text")
            except yaml.YAMLError:
                run.notes.append("plan.yaml is not valid YAML; shown as text")
    _drop_misshapen(run.results, RESULT_DICTS, RESULT_LISTS, "results.json", run.notes)
    _drop_misshapen(run.plan, PLAN_DICTS, (), "the plan", run.notes)
    if not run.plan and isinstance(run.results.get("plan"), dict):
        run.plan = run.results["plan"]
    if not run.plan_text and run.plan:
        try:
            run.plan_text = yaml.safe_dump(run.plan, sort_keys=False, allow_unicode=True)
        except (RecursionError, yaml.YAMLError):
            run.plan, run.plan_text = {}, ""
            run.notes.append("results.json: the plan is nested too deep to show; it was ignored")
    if not run.history_path.is_file():
        run.notes.append("no history.jsonl: the timeline cannot be drawn")
    return run


def _drop_misshapen(data: dict[str, Any], dicts: tuple[str, ...], lists: tuple[str, ...], what: str,
                    notes: list[str]) -> None:
    for key, kind in [(k, dict) for k in dicts] + [(k, list) for k in lists]:
        if key in data and data[key] is not None and not isinstance(data[key], kind):
            notes.append(f"{what}: `{key}` should be a{'n object' if kind is dict else ' list'}; it was ignored")
            del data[key]
