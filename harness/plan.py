"""Fault plans: YAML validated by pydantic, every default filled in.

A bad plan is bad input: `PlanError` names the file, the line, the field, what was expected
and an example; the CLI turns it into exit code 2, never a traceback."""
from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, PrivateAttr, ValidationError, create_model,
                      field_validator, model_validator)

from onceproof.faults.params import Seconds, duration
from onceproof.faults.base import known_kinds
from onceproof.faults.schedule import FaultEntry, FaultSpecError, RandomEntry, Step, expand
from onceproof.targets.kinds import Section, target_kinds
from onceproof.explore.space import ExploreSpace

from onceproof.errors import OnceproofError
from onceproof.formats import Format, TemplateError
from onceproof.mappings import SinkMapping, StateSpec

# --- durations ---------------------------------------------------------------------
# One grammar for every duration of the project (faults/params.py): `40s`, `500ms`, `2m`, `1h`,
# `250us` or a number of seconds. A plan's own durations are checked for being above zero by
# their fields (gt=0), so the grammar lets a sign through here, as it always did.
_EXAMPLE = "40s or 500ms"


def parse_duration(value: Any) -> float:
    """'40s', '500ms', '2m', '1h', '250us' or a number of seconds -> seconds (float).
    Raises ValueError (a ParamError) saying what was expected, with an example."""
    return duration(value, signed=True, example=_EXAMPLE)


Duration = Annotated[float, Seconds(signed=True, example=_EXAMPLE)]


def _hyphen(name: str) -> str:
    return name.replace("_", "-")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=_hyphen, allow_inf_nan=False)


# --- sections ----------------------------------------------------------------------
class _TargetsBase(_Model):
    """`targets:`: one optional field per target kind of the registry (targets/kinds.py),
    typed by the kind's own section model."""

    @model_validator(mode="before")
    @classmethod
    def _empty_means_defaults(cls, data: Any) -> Any:
        # `postgres: {}` and `postgres:` both mean "with defaults"
        if isinstance(data, dict):
            return {k: {} if v is None and k in target_kinds() else v for k, v in data.items()}
        return data

    def sections(self) -> dict[str, Section | None]:
        """Each target kind's section by name, in registry order (None: the plan has none)."""
        return dict(self)

    def section(self, kind: str) -> Section | None:
        """The plan's section for target `kind`, or None if it has none (or no such kind exists)."""
        return self.sections().get(kind)


def _targets_model() -> type[_TargetsBase]:
    fields: dict[str, Any] = {name: (kind.section | None, None) for name, kind in target_kinds().items()}
    return create_model("Targets", __base__=_TargetsBase, __module__=__name__, **fields)


if TYPE_CHECKING:
    Targets = _TargetsBase
else:
    Targets = _targets_model()


class RedisHash(_Model):
    """`{hash: NAME}`: one Redis hash."""

    hash: str = Field(min_length=1)


class RedisProgress(BaseModel):
    """`pipeline.progress: {redis: {hash: offsets}}`: the pipeline keeps its positions in a Redis
    hash, field = the source topic's partition (a number), value = the next offset to process
    (Kafka's committed-offset convention)."""

    redis: RedisHash


class Pipeline(_Model):
    command: list[str] = Field(default_factory=list, description=(
        "the pipeline's command line (a list, or a string split like a shell); with `image`, optional: "
        "the image's own entrypoint and command run when it is left out"))
    replicas: int = Field(1, ge=1, le=32)
    env: dict[str, str] = Field(default_factory=dict)
    secret_env: list[str] = Field(default_factory=list, description=(
        "names of `env` variables whose values are secret, besides those named like *PASSWORD*, *SECRET*, "
        "*TOKEN* or *KEY*: their values are never written into the run folder"))
    cwd: str | None = Field(None, description=(
        "the folder the pipeline runs in; relative to the plan file's folder, which is also the default"))
    image: str | None = Field(None, description=(
        "runtime docker: run each replica as a container of this image (its `command` the container's "
        "command), with the same ONCEPROOF_* environment, reaching the targets through the run's proxies"))
    groups: list[str] = Field(default_factory=list, description=(
        "Kafka consumer groups whose committed offsets are the pipeline's progress on a Kafka source "
        "(default: every group that has committed offsets of the source topic)"))
    progress: str | RedisProgress | None = Field(None, description=(
        "SQL on the postgres target returning rows (partition, next position to process) of the source: "
        "the pipeline's progress when it keeps its positions in PostgreSQL (or reads a Postgres source); "
        "or {redis: {hash: NAME}}: a hash on the redis target of source partition -> next offset to "
        "process, when it keeps them in Redis (a Kafka source)"))

    @field_validator("command", mode="before")
    @classmethod
    def _split(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = shlex.split(v)
        if isinstance(v, list) and not v:
            raise ValueError("expected a non-empty command, e.g. [python, -m, onceproof.targets.pipelines.kafka_to_postgres]")
        return v

    @field_validator("env", mode="before")
    @classmethod
    def _stringify(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): str(x) for k, x in v.items()}
        return v


REDACTED = "<redacted>"
SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL", re.IGNORECASE)


def is_secret(name: str, also: list[str] | tuple[str, ...] = ()) -> bool:
    """Whether environment variable `name` holds a secret: its name contains PASSWORD, SECRET,
    TOKEN, KEY (any case), or it is listed in `also` (the plan's `pipeline.secret-env`)."""
    return name in also or SECRET_NAME.search(name) is not None


SOURCE_KINDS = ("kafka", "redis", "postgres")
SINK_KINDS = ("postgres", "kafka", "redis-stream", "redis-set")


def _endpoint(kinds: tuple[str, ...], example: str):  # type: ignore[no-untyped-def]
    def check(v: Any) -> Any:
        if not isinstance(v, str) or ":" not in v:
            raise ValueError(f"expected KIND:NAME with KIND one of {', '.join(kinds)}, e.g. {example}; got {v!r}")
        kind, name = v.split(":", 1)
        if kind not in kinds:
            hint = difflib.get_close_matches(kind, kinds, 1)
            raise ValueError(f"unknown kind {kind!r} in {v!r}: expected one of {', '.join(kinds)}"
                             + (f" (did you mean {hint[0]}:{name}?)" if hint else ""))
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name):
            raise ValueError(f"expected a plain name after {kind}: (letters, digits, _ . -), got {name!r}")
        return v
    return check


class SourceFormat(_Model):
    """`workload.format`: what each event looks like on the wire (harness/formats.py). Kafka:
    `value` (a JSON template or a text template), `key` (text), `headers` (name -> text);
    Redis: `fields` (stream field -> text); PostgreSQL: `columns` (column -> text). Templates
    hold {id}, {key}, {seq}, {payload}. Absent: the contract's JSON (id, key, seq, payload)."""

    value: Any = None
    key: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    fields: dict[str, str] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict)
    _compiled: Format | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _compile(self) -> "SourceFormat":
        try:
            self._compiled = Format(self.model_dump())
        except TemplateError as e:
            raise PlanConsistencyError(["workload", "format", *e.path], e.message) from None
        return self

    @property
    def compiled(self) -> Format:
        assert self._compiled is not None
        return self._compiled


class Reads(_Model):
    """`workload.reads`: clients that read the per-key state the pipeline maintains during the
    load, through the pipeline's read endpoint (harness/reads.py; checked by checkers/reads.py)."""

    rate: float = Field(100, gt=0, le=10_000, description="reads per second, all clients together")
    path: Literal["primary", "standby", "cache"] = Field("standby", description=(
        "where the pipeline serves reads from: the PostgreSQL primary, its standby (needs `postgres: "
        "{standby: true}`), or the Redis cache (needs `redis`) filled from the standby"))
    keys: int | None = Field(None, ge=1, le=10_000_000, description=(
        "read the first this many of the workload's keys (default: all of them)"))
    clients: int = Field(4, ge=1, le=64, description="concurrent read clients (each one read at a time)")
    timeout: Duration = Field(2.0, gt=0, description="a read without an answer by then is unknown (info)")


class Workload(_Model):
    source: Annotated[str, BeforeValidator(_endpoint(SOURCE_KINDS, "kafka:onceproof.events"))] = "kafka:onceproof.events"
    sink: Annotated[str, BeforeValidator(_endpoint(SINK_KINDS, "postgres:onceproof_effects"))] = \
        "postgres:onceproof_effects"
    rate: float = Field(1000, gt=0, le=2_000_000, description="events per second, open loop")
    keys: int = Field(50, ge=1, le=10_000_000)
    duration: Duration = Field(30.0, gt=0)
    partitions: int = Field(3, ge=1, le=256, description="source topic partitions (kafka)")
    payload_bytes: int = Field(16, ge=0, le=1_000_000)
    processes: int = Field(1, ge=1, le=64, description=(
        "load generator processes: each sends the events of its own share of the keys at rate/processes "
        "and writes its own history shard, merged into history.jsonl by time at the end of the run "
        "(harness/loadprocs.py)"))
    also_sinks: list[Annotated[str, BeforeValidator(_endpoint(SINK_KINDS, "redis-set:onceproof_effects"))]] = Field(
        default_factory=list, description=(
            "other sinks the pipeline applies every effect to besides `sink` (e.g. a two-phase commit "
            "across two stores): each is read after quiescence, and the `partial` checker demands that "
            "every event be in all the sinks or in none"))
    format: SourceFormat | None = Field(None, description="the source's wire format (default: the contract's JSON)")
    sink_mapping: SinkMapping | None = Field(None, description=(
        "the pipeline's own store, when `sink` is given as a mapping (harness/mappings.py)"))
    reads: Reads | None = Field(None, description=(
        "a read workload during the load: clients reading the pipeline's per-key state through "
        "its read endpoint, checked for stale reads by the linearizability checker (checkers/reads.py)"))

    @model_validator(mode="before")
    @classmethod
    def _sink_as_mapping(cls, data: Any) -> Any:
        """`sink: {postgres: {query: ...}}` -> sink-mapping, with `sink` the KIND:NAME it stands for."""
        if isinstance(data, dict) and isinstance(data.get("sink"), dict):
            if data.get("sink-mapping") is not None or data.get("sink_mapping") is not None:
                raise ValueError("the sink is given twice: as a mapping in `sink` and in `sink-mapping`; "
                                 "write it once, in `sink`")
            data = dict(data)
            raw = data.pop("sink")
            data["sink-mapping"] = raw
            try:
                data["sink"] = SinkMapping.model_validate(raw).endpoint()
            except ValidationError:
                data["sink"] = "postgres:mapped"  # the mapping's own errors are reported on sink-mapping
        return data


class ExactlyOnceCheck(_Model):
    order: Literal["per-key"] | None = None


StateCheck = StateSpec  # derived state: a SQL query or a compacted topic (harness/mappings.py)


class Checks(_Model):
    exactly_once: ExactlyOnceCheck = Field(default_factory=ExactlyOnceCheck)
    state: StateCheck | None = None
    faults: Literal["strict", "lenient"] = Field(
        "strict", description="a planned fault that was not applied: strict = no verdict (unknown, with the "
        "reason); lenient = the verdict stands, with a note")
    memory: str | None = Field(None, description=(
        "memory budget of the run's own check, e.g. 512MiB or 2GiB (default 2GiB; at least 128MiB): a history that would "
        "not fit is checked by partitions spilled to disk (checkers/partitioned.py), same verdict"))

    @field_validator("memory")
    @classmethod
    def _size(cls, v: Any) -> Any:
        if v is not None:
            from onceproof.checkers.partitioned import parse_size

            parse_size(str(v))  # ValueError: the plan error names the field and what is expected
        return v

    @property
    def memory_bytes(self) -> int:
        """The budget in bytes (`memory`, else checkers.partitioned.DEFAULT_MEMORY)."""
        from onceproof.checkers.partitioned import DEFAULT_MEMORY, parse_size

        return parse_size(self.memory) if self.memory else DEFAULT_MEMORY

    @field_validator("exactly_once", mode="before")
    @classmethod
    def _empty(cls, v: Any) -> Any:
        return {} if v is None else v


class Quiesce(_Model):
    """The drain after the load: it ends when the sink has been idle for `idle` AND the pipeline
    has caught up with the source (and a Kafka sink has no open transaction), or at `max`.
    `max` covers Kafka's defaults after the last fault: a dead member's session timeout (45 s),
    and a killed transactional producer's open transaction (transaction.timeout.ms, 60 s,
    which also holds back the group's committed offsets), plus a rebalance and the catch-up."""

    idle: Duration = Field(5.0, gt=0)
    max: Duration = Field(120.0, gt=0)


class Observe(_Model):
    interval: Duration = Field(0.5, gt=0)


NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}"


def _safe_name(v: Any) -> Any:
    # the name becomes a folder name (runs/<name>-<run id>) and is printed on terminals
    if isinstance(v, str) and not re.fullmatch(NAME_PATTERN, v):
        raise ValueError(f"expected a plain name of at most 100 letters, digits, _ . + - (starting with a letter "
                         f"or digit; it names the run folder), such as kafka-to-postgres, got {v!r}")
    return v


# what each runtime's network faults are, for the message refusing a kind it cannot carry out
NETWORK_FAULTS = {
    "local": "partition and latency (through Toxiproxy)",
    "docker": "partition and latency (through Toxiproxy), and partition-isolate, partition-halves and "
              "partition-random-halves (network disconnect)",
    "netns": "partition-isolate, partition-halves, ... (iptables)",
}


class Plan(_Model):
    name: Annotated[str, BeforeValidator(_safe_name)]
    seed: int = Field(1, ge=-(2**63), le=2**63 - 1)
    runtime: Literal["local", "netns", "docker"] = "local"
    images: dict[str, str] = Field(default_factory=dict, description=(
        "runtime docker: the image of each node kind (kafka, redis, postgres, toxiproxy) instead of the "
        "default (the projects' official images; `onceproof setup --images` makes local ones under those names)"))
    targets: Targets
    pipeline: Pipeline
    workload: Workload = Field(default_factory=lambda: Workload())
    faults: list[FaultEntry] = Field(default_factory=list, description="fault steps at fixed times, and random ones")
    checks: Checks = Field(default_factory=Checks)
    quiesce: Quiesce = Field(default_factory=lambda: Quiesce())
    observe: Observe = Field(default_factory=lambda: Observe())
    explore: ExploreSpace | None = Field(None, description="the space `onceproof explore` searches (harness/explore/space.py)")
    _steps: list[Step] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> "Plan":
        for field, endpoint in (("source", self.workload.source), ("sink", self.workload.sink),
                                *(("also-sinks", e) for e in self.workload.also_sinks)):
            kind = endpoint.split(":", 1)[0].split("-")[0]
            if self.targets.section(kind) is None:
                raise PlanConsistencyError(["workload", field],
                                           f"{endpoint} needs a {kind} target: add `{kind}: {{}}` under targets")
        if self.workload.format is not None and not self.workload.format.compiled.carries_id(
                self.workload.source.split(":", 1)[0]):
            raise PlanConsistencyError(["workload", "format"], "no template of this source's format holds {id}: "
                                       "the event id must travel in the value, the key, a header, a field or a column")
        if self.workload.processes > self.workload.keys:
            raise PlanConsistencyError(["workload", "processes"], f"{self.workload.processes} load processes share "
                                       f"{self.workload.keys} keys (each process sends its own keys): give at "
                                       "most as many processes as keys")
        if self.checks.state and self.checks.state.topic and self.targets.section("kafka") is None:
            raise PlanConsistencyError(["checks", "state"], "a state topic is read from Kafka: add `kafka: {}`")
        if self.checks.state and self.checks.state.query and self.targets.section("postgres") is None:
            raise PlanConsistencyError(["checks", "state"], "a state query runs on PostgreSQL: add `postgres: {}`")
        if self.checks.state and self.checks.state.redis and self.targets.section("redis") is None:
            raise PlanConsistencyError(["checks", "state"], "a state in Redis hashes is read from Redis: add `redis: {}`")
        if self.pipeline.image and self.runtime != "docker":
            raise PlanConsistencyError(["pipeline", "image"], "a pipeline given as an image needs `runtime: docker`")
        if not self.pipeline.command and not self.pipeline.image:
            raise PlanConsistencyError(["pipeline", "command"], "expected the pipeline's command line, e.g. "
                                       "[python, -m, onceproof.targets.pipelines.kafka_to_postgres] (or an `image` "
                                       "whose own entrypoint runs it, with runtime docker)")
        unknown = sorted(set(self.images) - {"kafka", "redis", "postgres", "toxiproxy"})
        if unknown:
            raise PlanConsistencyError(["images", unknown[0]], "expected one of kafka, redis, postgres, toxiproxy")
        pg = self.targets.section("postgres")
        if getattr(pg, "standby", False) and self.runtime != "local":
            raise PlanConsistencyError(["targets", "postgres", "standby"], "a PostgreSQL standby runs on "
                                       f"`runtime: local` only; this plan runs on `{self.runtime}`")
        reads = self.workload.reads
        if reads is not None:
            if self.runtime != "local":
                raise PlanConsistencyError(["workload", "reads"], "a read workload runs on `runtime: local` only "
                                           f"(it reaches the replicas' read endpoints on 127.0.0.1); this plan runs "
                                           f"on `{self.runtime}`")
            if pg is None:
                raise PlanConsistencyError(["workload", "reads"], "reads are of the pipeline's state in "
                                           "PostgreSQL: add `postgres: {}` under targets")
            if reads.path == "standby" and not getattr(pg, "standby", False):
                raise PlanConsistencyError(["workload", "reads", "path"], "reads from the standby need one: "
                                           "`postgres: {standby: true}` under targets")
            if reads.path == "cache" and self.targets.section("redis") is None:
                raise PlanConsistencyError(["workload", "reads", "path"], "reads from the cache need Redis: add "
                                           "`redis: {}` under targets")
            if reads.keys is not None and reads.keys > self.workload.keys:
                raise PlanConsistencyError(["workload", "reads", "keys"], f"{reads.keys} read keys, but the "
                                           f"workload has {self.workload.keys} keys: give at most that many")
            if self.workload.processes > 1:
                raise PlanConsistencyError(["workload", "reads"], "a read workload needs `processes: 1` (the "
                                           "reads are checked against the events' sends in one history)")
        progress = self.pipeline.progress
        if isinstance(progress, str) and progress and self.targets.section("postgres") is None:
            raise PlanConsistencyError(["pipeline", "progress"],
                                       "a progress query runs on PostgreSQL: add `postgres: {}`")
        if isinstance(progress, RedisProgress):
            if self.targets.section("redis") is None:
                raise PlanConsistencyError(["pipeline", "progress", "redis"], "a progress hash is read from "
                                           "Redis: add `redis: {}` under targets")
            if not self.workload.source.startswith("kafka:"):
                raise PlanConsistencyError(["pipeline", "progress", "redis"], "a progress hash holds Kafka "
                                           "offsets (partition -> next offset): the source must be kafka:TOPIC")
        return self

    @model_validator(mode="after")
    def _faults_fit_the_runtime(self) -> "Plan":
        """A fault kind the plan's runtime cannot carry out is bad input now, not a fault that
        silently fails to apply in the middle of a run (which then proves nothing)."""
        for i, entry in enumerate(self.faults):
            kinds: list[tuple[str, list[str | int]]]
            if isinstance(entry, RandomEntry):
                kinds = [(k, ["faults", i, "random", "kinds", j]) for j, k in enumerate(entry.random.kinds)]
            else:
                kinds = [(type(entry).kind, ["faults", i, type(entry).kind])]
            for name, path in kinds:
                fault = known_kinds().get(name)
                if fault is not None and self.runtime not in fault.cls.runtimes:
                    raise PlanConsistencyError(
                        path, f"{name} needs `runtime: {' or '.join(fault.cls.runtimes)}`; this plan runs on "
                              f"`{self.runtime}`, where the network faults are {NETWORK_FAULTS[self.runtime]}")
            params = getattr(entry, "partition_isolate", None)
            if self.runtime == "docker" and getattr(params, "from_", None):
                # a disconnect cuts a container off from every other one (targets/docker/partition.py)
                raise PlanConsistencyError(
                    ["faults", i, "partition-isolate", "from"], "partition-isolate with `from` needs per-pair "
                    "rules (`runtime: netns`); on docker the targets are cut off from every other container "
                    "(leave `from` out), or use `partition: {target: ..., from: ...}` (through Toxiproxy)")
        return self

    @model_validator(mode="after")
    def _replication_faults_have_a_link(self) -> "Plan":
        """`from: replication` acts on a node's replication link from its primary: only a
        streaming standby (`postgres: {standby: true}`, node postgres-standby) has one. Refused
        here, not as a fault that cannot apply in the middle of the run."""
        pg = self.targets.section("postgres")
        linked = ["postgres-standby"] if getattr(pg, "standby", False) else []
        for i, entry in enumerate(self.faults):
            name = getattr(type(entry), "kind", None)
            params = getattr(entry, name.replace("-", "_"), None) if isinstance(name, str) else None
            if getattr(params, "from_", None) != "replication":
                continue
            target = getattr(params, "target", None)
            if target not in linked:
                has = (f"this plan's only node with one is {linked[0]}" if linked else
                       "this plan has none: add `standby: true` to `postgres` under targets")
                raise PlanConsistencyError(["faults", i, str(name), "from"],
                                           f"`from: replication` acts on a standby's replication link, but "
                                           f"{target!r} has none ({has})")
        return self

    @model_validator(mode="after")
    def _expand_faults(self) -> "Plan":
        """The fault schedule, drawn once from the seed (every target checked against the run's nodes)."""
        try:
            self._steps = expand(self.faults, self.seed, self.workload.duration, self.target_names())
        except FaultSpecError as e:
            raise PlanConsistencyError(["faults", *e.path], e.message) from None
        return self

    @property
    def fault_steps(self) -> list[Step]:
        """The concrete fault steps of this plan, sorted by time (random entries already drawn)."""
        return list(self._steps)

    # --- derived --------------------------------------------------------------------
    def target_names(self) -> list[str]:
        """Every name a fault may target: each target's nodes (as its kind names them), then
        the group `pipeline` and its replicas `pipeline-0`..."""
        names = []
        for name, section in self.targets.sections().items():
            if section is not None:
                names += target_kinds()[name].node_names(section)
        names += ["pipeline", *(f"pipeline-{i}" for i in range(self.pipeline.replicas))]
        return names

    def resolved(self) -> dict[str, Any]:
        """The plan with every default filled in, as written back to the run's plan.yaml (and
        into results.json, the report and junit.xml): the value of every secret variable of
        `pipeline.env` (see `is_secret`) is replaced with REDACTED."""
        out = self.model_dump(mode="json", by_alias=True)
        env = out["pipeline"]["env"]
        for name in env:
            if is_secret(name, self.pipeline.secret_env):
                env[name] = REDACTED
        # an absent target stays absent (`redis: null` would read back as "redis with defaults")
        out["targets"] = {k: v for k, v in out["targets"].items() if v is not None}
        mapping = (out["workload"].get("sink-mapping") or {}).get("postgres")
        if mapping is not None and mapping.get("query") is not None:  # a query's columns go by position
            out["workload"]["sink-mapping"]["postgres"] = {k: v for k, v in mapping.items() if v is not None}
        return out


class PlanConsistencyError(OnceproofError, ValueError):
    def __init__(self, path: list[str | int], message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


class PlanError(OnceproofError):
    """A plan that cannot be used, with where and why."""

    def __init__(self, file: str, problems: list[tuple[int | None, str, str]]) -> None:
        self.file = file
        self.problems = problems  # (line, field path, message)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.file}: invalid plan ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''})"]
        for line, field, message in self.problems:
            where = f"{self.file}:{line}" if line else self.file
            lines.append(f"  {where}: {field or '(top level)'}: {message}")
        return "\n".join(lines)


EXAMPLE = """name: kafka-to-postgres
targets: {kafka: {nodes: 1}, postgres: {}}
pipeline: {command: [python, -m, onceproof.targets.pipelines.kafka_to_postgres], replicas: 2}
workload: {source: kafka:onceproof.events, sink: postgres:onceproof_effects, rate: 2000, duration: 40s}"""


# --- loading -----------------------------------------------------------------------
def _line_map(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Path of every value in the YAML document -> its 1-based line."""
    out = {} if out is None else out
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            k = key.value
            out[(*path, k)] = key.start_mark.line + 1
            _line_map(value, (*path, k), out)
            out[(*path, k)] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*path, i), out)
    return out


def _line_for(lines: dict[tuple, int], path: tuple) -> int | None:
    path = tuple(path)
    while path:
        if path in lines:
            return lines[path]
        path = path[:-1]
    return lines.get(())


def _field_name(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (("." if out else "") + str(part))
    return out


def _explain(err: Any, known: list[str]) -> str:
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if err["type"] == "missing":
        return "required field is missing"
    if err["type"] == "extra_forbidden":
        hint = difflib.get_close_matches(str(err["loc"][-1]), known, 1)
        return "unknown field" + (f" (did you mean {hint[0]!r}?)" if hint else
                                  f"; expected one of: {', '.join(known)}" if known else "")
    msg = msg.replace("Input should be", "expected").replace("a valid ", "")
    if "got" in msg or repr(got) in msg:
        return msg
    return f"{msg}, got {got!r}"


def _known_fields(loc: tuple) -> list[str]:
    """The field names allowed next to the last part of loc (for 'did you mean')."""
    model: Any = Plan
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        field = model.model_fields.get(str(part).replace("-", "_"))
        if field is None:
            return []
        ann = field.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        model = args[0] if args else ann
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [_hyphen(n) for n in model.model_fields]
    return []


def _alias_loc(model: type[BaseModel], loc: tuple) -> tuple:
    loc = tuple(_hyphen(p) if isinstance(p, str) else p for p in loc)
    if loc[:2] == ("workload", "sink-mapping"):  # written as `sink:` in the plan
        loc = ("workload", "sink", *loc[2:])
    return loc


MAX_PLAN_BYTES = 1_000_000  # a plan is a page of YAML: a megabyte is plenty
MAX_DEPTH = 32  # mappings and lists nested at most this deep
MAX_NODES = 100_000  # values in the document once every alias is expanded
MAX_INT = 2**63 - 1  # every number of a plan fits in 64 bits


class _Limit(yaml.YAMLError):
    """The plan's YAML is too big, too deep, recursive or an alias bomb."""

    def __init__(self, problem: str, mark: Any = None) -> None:
        super().__init__(problem)
        self.problem, self.problem_mark = problem, mark


class _PlanLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing documents nested deeper than MAX_DEPTH while it composes
    (before the recursion of composing or of anything reading the result can overflow)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limit(f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_expanded(node: yaml.Node) -> None:
    """Refuse a recursive alias, and a document whose aliases expand to more than MAX_NODES
    values or deeper than MAX_DEPTH (an alias bomb is a few hundred bytes that expand to
    billions): counted on the composed graph, each shared node once, before anything walks it."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values, depth) once expanded
    on_path: set[int] = set()

    def walk(n: yaml.Node) -> tuple[int, int]:
        if id(n) in sizes:
            return sizes[id(n)]
        if id(n) in on_path:
            raise _Limit("a recursive alias (a value that contains itself)", n.start_mark)
        children: list[yaml.Node] = []
        if isinstance(n, yaml.MappingNode):
            children = [x for pair in n.value for x in pair]
        elif isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        on_path.add(id(n))
        total, depth = 1, 0
        for c in children:
            size, d = walk(c)
            total, depth = total + size, max(depth, d)
            if total > MAX_NODES or depth + 1 > MAX_DEPTH:
                raise _Limit(f"too large once its aliases are expanded (more than {MAX_NODES:,} values or "
                             f"{MAX_DEPTH} levels)", n.start_mark)
        on_path.discard(id(n))
        sizes[id(n)] = (total, depth + 1)
        return sizes[id(n)]

    walk(node)


def _check_numbers(data: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """Every number of a plan must be finite and fit in 64 bits: (path, message) of each that is not."""
    out: list[tuple[tuple, str]] = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += _check_numbers(v, (*path, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += _check_numbers(v, (*path, i))
    elif isinstance(data, float) and not math.isfinite(data):
        out.append((path, f"expected a finite number, got {data!r}"))
    elif isinstance(data, int) and not isinstance(data, bool) and abs(data) > MAX_INT:
        out.append((path, f"expected a number of at most {MAX_INT:,} in size, got one with "
                          f"{len(str(abs(data))) if abs(data).bit_length() < 10_000 else 'thousands of'} digits"))
    return out


def read_plan_text(path: str | Path) -> str:
    """The plan file's text: a regular file (a FIFO, a device or a folder is refused without
    blocking), at most MAX_PLAN_BYTES, UTF-8. Raises PlanError saying which of these it is not."""
    name = str(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise PlanError(name, [(None, "", f"cannot read the plan: {e.strerror or e}")]) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise PlanError(name, [(None, "", "cannot read the plan: not a regular file (a folder, a FIFO or a "
                                              "device); give the path of a .yaml file")])
        raw = os.read(fd, MAX_PLAN_BYTES + 1)
        while len(raw) <= MAX_PLAN_BYTES and (more := os.read(fd, MAX_PLAN_BYTES + 1 - len(raw))):
            raw += more
    except OSError as e:
        raise PlanError(name, [(None, "", f"cannot read the plan: {e.strerror or e}")]) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_PLAN_BYTES:
        raise PlanError(name, [(None, "", f"the plan is larger than {MAX_PLAN_BYTES:,} bytes")])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise PlanError(name, [(line, "", f"not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start}): "
                                          "save the plan as UTF-8")]) from None


def parse_plan_yaml(text: str, name: str = "<plan>") -> tuple[Any, yaml.Node | None]:
    """(data, node) of a plan's YAML text, with limits on depth, size once aliases are
    expanded, and recursion. Raises PlanError (with the line) on bad or oversized YAML."""
    loader = _PlanLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_expanded(node)
        return loader.construct_document(node), node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise PlanError(name, [(mark.line + 1 if mark else None, "",
                                f"not valid YAML: {getattr(e, 'problem', None) or e}")]) from None
    except ValueError as e:  # an int too long to convert, a bad timestamp, ...
        raise PlanError(name, [(None, "", f"not valid YAML: {e}")]) from None
    finally:
        loader.dispose()


def load_plan(path: str | Path, overrides: dict[str, Any] | None = None) -> Plan:
    """Read, validate and fill in a plan file. Raises PlanError (file, line, field, why).
    The pipeline's `cwd` comes back absolute: relative to the plan file's folder, as a relative
    path in a docker-compose file is (default: that folder itself)."""
    name = str(path)
    data, node = parse_plan_yaml(read_plan_text(path), name)
    if not isinstance(data, dict) or node is None:
        raise PlanError(name, [(1, "", f"expected a mapping of plan fields, e.g.:\n{EXAMPLE}")])
    lines = _line_map(node)
    apply_overrides(data, overrides or {})
    plan = validate_plan(data, name, lines)
    base = Path(path).resolve().parent
    plan.pipeline.cwd = str(base / (plan.pipeline.cwd or "."))  # an absolute cwd stays as written
    return plan


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> None:
    """Set `a.b=v` overrides in a plan's raw data, in place: {"workload.duration": 20.0} sets
    data["workload"]["duration"], creating sections that are missing (before validation)."""
    for key, value in overrides.items():
        section = data
        parts = key.split(".")
        for p in parts[:-1]:
            section = section.setdefault(p, {})
            if not isinstance(section, dict):
                break  # `workload: 5`: not a section; validation says what was expected
        else:
            section[parts[-1]] = value


def validate_plan(data: dict[str, Any], name: str = "<plan>", lines: dict[tuple, int] | None = None) -> Plan:
    """A Plan from a plan's raw data (every number finite and within range first); `lines`
    maps field paths to lines for the messages. Raises PlanError listing every problem."""
    lines = lines or {}
    problems: list[tuple[int | None, str, str]] = []
    for loc, message in _check_numbers(data):
        loc = _alias_loc(Plan, loc)
        problems.append((_line_for(lines, loc), _field_name(loc), message))
    if problems:
        raise PlanError(name, problems)
    try:
        plan = Plan.model_validate(data)
    except ValidationError as e:
        for err in e.errors():
            loc = _alias_loc(Plan, err["loc"])
            ctx_err = (err.get("ctx") or {}).get("error")
            if isinstance(ctx_err, PlanConsistencyError):
                loc = tuple(_hyphen(p) if isinstance(p, str) else p for p in ctx_err.path)
                problems.append((_line_for(lines, loc), _field_name(loc), ctx_err.message))
                continue
            if isinstance(ctx_err, FaultSpecError):  # a `faults:` entry, read by the faults package
                loc = (*err["loc"][:2], *ctx_err.path)
                problems.append((_line_for(lines, loc), _field_name(loc), ctx_err.message))
                continue
            problems.append((_line_for(lines, loc), _field_name(loc), _explain(err, _known_fields(err["loc"]))))
        raise PlanError(name, problems) from None
    return plan


def json_schema() -> dict[str, Any]:
    """The plans' JSON Schema (draft 2020-12, for editors): every section, and every fault
    kind with its fields."""
    schema = Plan.model_json_schema(by_alias=True)
    workload = schema.get("$defs", {}).get("Workload", {}).get("properties", {})
    if "sink" in workload and "SinkMapping" in schema.get("$defs", {}):  # KIND:NAME, or the user's own store
        workload["sink"] = {"anyOf": [workload["sink"], {"$ref": "#/$defs/SinkMapping"}],
                            "description": "KIND:NAME (our effects table, topic, stream or set), or a mapping "
                                           "of the pipeline's own store: {postgres: {query|table: ...}}, "
                                           "{kafka: {topic, id}}, {redis: {stream|list|set|hash: ...}}"}
    return schema
