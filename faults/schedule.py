"""Schedules: when which fault is applied and healed.

A plan's `faults:` list holds entries of two shapes:

    {at: 8s, kill: pipeline-0, restart-after: 2s}
    {at: 15s, for: 8s, partition: {target: kafka-1, from: pipeline}}
    {random: {from: 5s, until: 35s, every: 6s, for: 3s, kinds: [kill, pause], targets: [pipeline-0]}}

`read_entry` validates one entry (errors point at the field and show an example) into a
typed value: one `<Kind>Step` model per registered kind (`KillStep`, `LatencyStep`, ..., built
from the kind's own parameter model) or a `RandomEntry`; `FaultEntry` is their union, the type
of a plan's `faults:` items, so the plan's JSON Schema describes every kind and its fields.
`expand` turns the list into concrete `Step`s (random specs drawn from the seed: the same
seed gives the same steps, byte for byte), `make_fault` builds the fault a step describes."""
from __future__ import annotations

import difflib
import math
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Callable, ClassVar, Iterable, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, SerializerFunctionWrapHandler, create_model,
                      model_serializer)

from onceproof.errors import OnceproofError
from onceproof.faults import params as p
from onceproof.faults import selectors
from onceproof.faults.base import Context, Fault, FaultError, FaultKind, ParamError, known_kinds
from onceproof.faults.params import Seconds

TARGET_KEYS = ("target", "select", "topic", "partition")
MAX_RANDOM_STEPS = 10_000  # the most faults one random entry may draw (counted before drawing)
MIN_EVERY_S = 0.001  # random faults at most once a millisecond


class FaultSpecError(OnceproofError, ValueError):
    """A bad `faults:` entry: `path` leads to the offending field, `message` says what was
    expected, with an example."""

    def __init__(self, path: list[str | int], message: str) -> None:
        self.path = list(path)
        self.message = message
        where = ".".join(str(x) for x in self.path)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True)
class Step:
    """One fault of a schedule: applied at `at_s` seconds after the start, healed `for_s`
    later (None: healed by heal_all at the end; a graceful restart is over when it returns)."""

    at_s: float
    for_s: float | None
    kind: str
    params: dict[str, Any] = field(default_factory=dict, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"at_s": self.at_s, "for_s": self.for_s, "kind": self.kind, "params": self.params}


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    return value


def _kind_names(schema: dict[str, Any]) -> None:
    schema["items"] = {"enum": sorted(known_kinds())}


class RandomSpec(BaseModel):
    """Faults drawn from a seed: one every `every_s` from `from_s` until `until_s` (None = the
    end of the run), each lasting `for_s` (seconds), its kind and target picked among
    `kinds`/`targets` (none: any node of the run). `params` (`with:` in a plan) overrides a
    kind's random defaults: `{latency: {ms: 300}}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    every_s: Annotated[float, Seconds(allow_zero=False)] = Field(alias="every", description="one fault this often")
    for_s: Annotated[float, Seconds(allow_zero=False)] = Field(alias="for", description="each fault lasts this long")
    kinds: tuple[str, ...] = Field(description="the kinds drawn from", min_length=1, json_schema_extra=_kind_names)
    targets: tuple[str, ...] = Field((), description="the nodes drawn from (default: any node of the run)")
    from_s: Annotated[float, Seconds()] = Field(0.0, alias="from", description="the first fault at this time")
    until_s: Annotated[float, Seconds()] | None = Field(None, alias="until", description="no fault from this time")
    params: dict[str, dict[str, Any]] = Field(default_factory=dict, alias="with",
                                              description="per-kind parameters, such as {latency: {ms: 300}}")

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = _without_none(handler(self))
        for key in ("targets", "with"):  # empty: the default (and `targets: []` is not a valid plan)
            if key in out and not out[key]:
                del out[key]
        return out


class RandomEntry(BaseModel):
    """`{random: {...}}`: faults drawn from the plan's seed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    random: RandomSpec


class Target(BaseModel):
    """Where a fault acts: `target` (a node, a group such as `kafka`, a Kafka role such as
    `kafka-leader`, or a list of them), `select` (which of them), and the topic and partition
    of a `kafka-leader`."""

    target: str | list[str] = Field(description="a node (kafka-1, redis, postgres, pipeline-0), a group (kafka, "
                                    "pipeline), a role (kafka-leader, kafka-controller) or a list of them")
    select: Literal["all", "one", "majority", "minority"] | None = Field(
        None, description="which of the matching nodes (default all), drawn from the seed")
    topic: str | None = Field(None, description="the topic of a kafka-leader target")
    partition: int | None = Field(None, ge=0, description="the partition of a kafka-leader target (default 0)")


class FixedStep(BaseModel):
    """One fault at a fixed time: `{at: 8s, for: 2s, <kind>: <target or {target: ..., params}>}`.
    A kind's parameters may also be written beside it (`{at: 8s, kill: pipeline-0,
    restart-after: 2s}`). Each kind has its own subclass (`KillStep`, ...) from `step_model`."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)

    kind: ClassVar[str] = "?"
    at: Annotated[float, Seconds()] = Field(description="applied at this time after the start of the run")
    for_: Annotated[float, Seconds(allow_zero=False)] | None = Field(
        None, alias="for", description="healed this long later (default: when the load ends)")

    def body(self) -> BaseModel:
        """The kind's own field: its target and parameters."""
        return getattr(self, self.kind.replace("-", "_"))  # type: ignore[no-any-return]

    def step(self) -> Step:
        """The concrete step: durations in seconds, parameters and target keys in one dict."""
        params = self.body().model_dump(by_alias=True, exclude_none=True)
        for_s = self.for_
        if self.kind == "kill" and "restart-after" in params:
            for_s = params["restart-after"] or None
        return Step(self.at, for_s, self.kind, params)

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return _without_none(handler(self))  # type: ignore[no-any-return]


def _target_or_body(schema: dict[str, Any]) -> None:
    ref = schema.pop("$ref", None) or (schema.pop("allOf", None) or [{}])[0].get("$ref")
    schema["anyOf"] = [{"$ref": ref}, {"type": "string"}, {"type": "array", "items": {"type": "string"}}]


def step_model(kind: FaultKind) -> type[FixedStep]:
    """The typed plan entry of a fixed fault of `kind`: its field named after the kind holds a
    `Target` plus the kind's parameters (in a plan, also a bare target: `kill: pipeline-0`)."""
    body = create_model(f"{kind.cls.__name__}Fault", __base__=kind.params, __doc__=kind.summary,
                        **{n: (f.annotation, f) for n, f in Target.model_fields.items()})  # type: ignore[call-overload]
    model = create_model(f"{kind.cls.__name__}Step", __base__=FixedStep, __doc__=f"{kind.name}: {kind.summary}",
                         **{kind.name.replace("-", "_"): (body, Field(alias=kind.name, description=kind.summary,
                                                                       json_schema_extra=_target_or_body))})  # type: ignore[call-overload]
    model.kind = kind.name
    model.model_config["json_schema_extra"] = _siblings_schema(kind)
    model.model_rebuild(force=True)
    return model


def _siblings_schema(kind: FaultKind) -> Callable[[dict[str, Any]], None]:
    """The step's JSON Schema as the reader accepts it: the kind's parameters may also stand
    beside the kind (`{at: 8s, kill: pipeline-0, restart-after: 2s}`), and nothing else may, so
    an editor flags an unknown key as `onceproof run` does (the model itself allows extra keys
    only for `read_entry` to sort them)."""
    params = kind.params.model_json_schema(by_alias=True).get("properties", {})

    def extra(schema: dict[str, Any]) -> None:
        schema["properties"].update({name: p for name, p in params.items() if name not in schema["properties"]})
        schema["additionalProperties"] = False
    return extra


STEP_MODELS: dict[str, type[FixedStep]] = {name: step_model(k) for name, k in known_kinds().items()}


def _as_entry(value: Any) -> Any:
    return value if isinstance(value, (FixedStep, RandomEntry)) else read_entry(value)


if TYPE_CHECKING:
    FaultEntry = Union[FixedStep, RandomEntry]
else:
    # a plan's `faults:` item: read (and checked) by read_entry, stored typed
    FaultEntry = Annotated[Union[tuple([*STEP_MODELS.values(), RandomEntry])], BeforeValidator(_as_entry)]

Entry = Union[list[Step], RandomSpec]  # what parse_entry returns


# --- parsing one entry --------------------------------------------------------------
def _unknown_kind(key: str, path: list[str | int]) -> FaultSpecError:
    kinds = sorted(known_kinds())
    close = difflib.get_close_matches(key, kinds, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return FaultSpecError(path, f"unknown fault kind {key!r}: known kinds are {', '.join(kinds)}{hint}")


def _kind_params(kind_name: str, raw: dict[str, Any], path: list[str | int]) -> dict[str, Any]:
    """Validate a kind's own parameters and its target spec; returns them normalised."""
    kind = known_kinds()[kind_name]
    own = {k: v for k, v in raw.items() if k not in TARGET_KEYS}
    try:
        out = kind.decode(own)
    except ParamError as e:
        raise FaultSpecError(path + ([e.field] if e.field else []), e.message) from None
    if "target" not in raw:
        raise FaultSpecError(path, f"{kind_name} needs a target, such as "
                             f"{{{kind_name}: {{target: {'redis' if kind.targets == 'server' else 'pipeline-0'}}}}}")
    target = raw["target"]
    names = target if isinstance(target, list) else [target]
    for i, t in enumerate(names):
        where = path + ["target"] + ([i] if isinstance(target, list) else [])
        if not isinstance(t, str) or not t:
            raise FaultSpecError(where, f"expected a node name such as kafka-1, redis, postgres or pipeline-0, "
                                 f"got {t!r}")
        if kind.targets == "server" and (t == "pipeline" or t.startswith("pipeline-")):
            raise FaultSpecError(where, f"{kind_name} acts on the network in front of a server (kafka-N, redis, "
                                 f"postgres); {t!r} is a pipeline replica, a client: partition what it talks "
                                 f"to instead, e.g. {{{kind_name}: {{target: kafka-1, from: pipeline}}}}")
    out["target"] = target
    if "select" in raw:
        out["select"] = p_choice(raw["select"], path + ["select"], selectors.SELECTS)
    if "topic" in raw or "partition" in raw or "kafka-leader" in names:
        if "kafka-leader" not in names:
            raise FaultSpecError(path + ["topic" if "topic" in raw else "partition"],
                                 "topic and partition only go with target: kafka-leader")
        if not isinstance(raw.get("topic"), str):
            raise FaultSpecError(path + ["topic"], "kafka-leader needs the topic, such as topic: onceproof.events")
        out["topic"] = raw["topic"]
        part = raw.get("partition", 0)
        if isinstance(part, bool) or not isinstance(part, int) or part < 0:
            raise FaultSpecError(path + ["partition"], f"expected a partition number such as 0, got {part!r}")
        out["partition"] = part
    return out


def p_choice(value: Any, path: list[str | int], choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise FaultSpecError(path, f"expected one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _duration(entry: dict[str, Any], key: str, path: list[str | int], required: bool = False,
              allow_zero: bool = True) -> float | None:
    if key not in entry:
        if required:
            raise FaultSpecError(path + [key], f"is missing: expected a duration such as {key}: 5s")
        return None
    try:
        return p.duration(entry[key], key, allow_zero=allow_zero)
    except ParamError as e:
        raise FaultSpecError(path + [key], e.message) from None


def parse_entry(entry: Any, path: list[str | int] | None = None) -> Entry:
    """Validate one entry of a plan's `faults:` list. Returns its steps (a fixed entry) or a
    RandomSpec. Raises FaultSpecError pointing at the offending field."""
    typed = read_entry(entry, path)
    return typed.random if isinstance(typed, RandomEntry) else [typed.step()]


def read_entry(entry: Any, path: list[str | int] | None = None) -> FixedStep | RandomEntry:
    """Validate one entry of a plan's `faults:` list (a mapping as written in YAML) into its
    typed value: the kind's `<Kind>Step` (durations in seconds, the kind's defaults filled in)
    or a `RandomEntry`. Raises FaultSpecError: `path` (below `path`) leads to the offending
    field, the message says what was expected, with an example."""
    path = list(path or [])
    if not isinstance(entry, dict):
        raise FaultSpecError(path, f"expected a fault such as {{at: 8s, kill: pipeline-0}} or "
                             f"{{random: {{every: 6s, for: 3s, kinds: [kill], targets: [pipeline-0]}}}}, got {entry!r}")
    if "random" in entry:
        extra = [k for k in entry if k != "random"]
        if extra:
            raise FaultSpecError(path + [extra[0]], "a random entry holds only `random: {...}`")
        return RandomEntry(random=_parse_random(entry["random"], path + ["random"]))
    kinds = known_kinds()
    kind_keys = [k for k in entry if k in kinds]
    if not kind_keys:
        others = [k for k in entry if k not in ("at", "for")]
        if others:
            raise _unknown_kind(str(others[0]), path + [others[0]])
        raise FaultSpecError(path, "expected a fault kind in the entry, such as {at: 8s, kill: pipeline-0}; "
                             f"known kinds are {', '.join(sorted(kinds))}")
    if len(kind_keys) > 1:
        raise FaultSpecError(path + [kind_keys[1]], f"one fault per entry: this one has {' and '.join(kind_keys)}; "
                             "write a second entry with the same `at`")
    kind_name = kind_keys[0]
    at = _duration(entry, "at", path, required=True)
    for_s = _duration(entry, "for", path, allow_zero=False)
    body = entry[kind_name]
    extras = {k: v for k, v in entry.items() if k not in ("at", "for", kind_name)}
    if isinstance(body, dict):
        raw = dict(body)
        for k, v in extras.items():
            if k in raw:
                raise FaultSpecError(path + [k], f"given twice: inside {kind_name} and beside it")
            raw[k] = v
        kpath = path + [kind_name]
    else:
        raw = {"target": body, **extras}
        kpath = path + [kind_name] if not extras else path
    # a misspelt parameter beside the kind reads best as an unknown parameter of that kind
    params = _kind_params(kind_name, raw, kpath)
    if kind_name == "kill" and "restart-after" in params and for_s is not None:
        raise FaultSpecError(path + ["restart-after"], "give either `for` or `restart-after` for a kill, not both")
    if known_kinds()[kind_name].cls.instant and for_s is not None:
        raise FaultSpecError(path + ["for"], f"{kind_name} is over as soon as it is done: it takes no `for`")
    return STEP_MODELS[kind_name].model_validate({"at": at, "for": for_s, kind_name: params})


def _parse_random(spec: Any, path: list[str | int]) -> RandomSpec:
    example = "{random: {from: 5s, until: 35s, every: 6s, for: 3s, kinds: [kill, pause], targets: [pipeline-0]}}"
    if not isinstance(spec, dict):
        raise FaultSpecError(path, f"expected a mapping such as {example}")
    allowed = {"from", "until", "every", "for", "kinds", "targets", "with"}
    for k in spec:
        if k not in allowed:
            close = difflib.get_close_matches(str(k), sorted(allowed), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FaultSpecError(path + [k], f"is not a field of random (fields: {', '.join(sorted(allowed))}){hint}")
    every = _duration(spec, "every", path, required=True, allow_zero=False)
    for_s = _duration(spec, "for", path, required=True, allow_zero=False)
    from_s = _duration(spec, "from", path) or 0.0
    until_s = _duration(spec, "until", path)
    if until_s is not None and until_s <= from_s:
        raise FaultSpecError(path + ["until"], f"expected a time after from ({from_s:g}s), such as until: 35s")
    kinds = spec.get("kinds")
    if not isinstance(kinds, list) or not kinds:
        raise FaultSpecError(path + ["kinds"], "expected a list of fault kinds such as [kill, pause, partition]")
    known = known_kinds()
    for i, k in enumerate(kinds):
        if k not in known:
            raise _unknown_kind(str(k), path + ["kinds", i])
        if known[k].cls.instant:
            continue
    targets = spec.get("targets")
    if targets is None:
        targets = []  # any node of the run (each pipeline replica and each server), drawn per step
    elif not isinstance(targets, list) or not targets or not all(isinstance(t, str) for t in targets):
        raise FaultSpecError(path + ["targets"], "expected a list of node names such as [pipeline-0, kafka-1]")
    with_ = spec.get("with", {}) or {}
    if not isinstance(with_, dict):
        raise FaultSpecError(path + ["with"], "expected per-kind parameters such as {latency: {ms: 300}}")
    overrides: dict[str, dict[str, Any]] = {}
    for k, v in with_.items():
        if k not in kinds:
            raise FaultSpecError(path + ["with", k], f"{k!r} is not one of this random entry's kinds ({', '.join(kinds)})")
        if not isinstance(v, dict):
            raise FaultSpecError(path + ["with", k], f"expected parameters such as {{{k}: {{...}}}}")
        overrides[k] = dict(v)
    # every kind must be able to act on at least one of the targets, with its parameters
    for i, k in enumerate(kinds):
        usable = [t for t in targets if _fits(k, t)] if targets else [
            "pipeline-0" if known[k].targets != "server" else "kafka-1"]
        if not usable:
            raise FaultSpecError(path + ["kinds", i], f"{k} cannot act on any of {targets} (network faults act on "
                                 "servers, not on pipeline replicas)")
        raw = {**_first_choice(known[k].random_defaults), **overrides.get(k, {}), "target": usable[0]}
        _kind_params(k, raw, path + ["with", k])
    assert every is not None and for_s is not None  # required above
    return RandomSpec(every_s=every, for_s=for_s, kinds=tuple(kinds), targets=tuple(targets),
                      from_s=from_s, until_s=until_s, params=overrides)


def _fits(kind_name: str, target: str) -> bool:
    return not (known_kinds()[kind_name].targets == "server" and (target == "pipeline" or target.startswith("pipeline-")))


def _first_choice(defaults: dict[str, Any]) -> dict[str, Any]:
    return {k: (v[0] if isinstance(v, list) else v) for k, v in defaults.items()}


# --- expanding a plan's list ---------------------------------------------------------
def expand(entries: Iterable[Any], seed: int, duration_s: float | None, target_names: Iterable[str]) -> list[Step]:
    """Concrete steps, sorted by time, from a plan's `faults:` entries (typed, as `read_entry`
    returns them, or raw mappings, read here). Random entries are drawn from `seed`: the same
    seed, entries and duration give the same list, byte for byte. Every target must exist in
    `target_names`, every step must start within `duration_s` seconds (None: no limit).
    Raises FaultSpecError whose path starts with the entry's index."""
    names = sorted(target_names)
    steps: list[Step] = []
    late: list[tuple[int, Step]] = []  # fixed steps starting after the run's end: all named at once
    for i, entry in enumerate(entries):
        typed = entry if isinstance(entry, (list, RandomSpec, FixedStep, RandomEntry)) else read_entry(entry, [i])
        parsed = typed.random if isinstance(typed, RandomEntry) else [typed.step()] if isinstance(
            typed, FixedStep) else typed
        if isinstance(parsed, RandomSpec):
            # one generator per entry, so adding an entry does not reshuffle the others
            rng = random.Random(f"onceproof-faults:{seed}:{i}")
            steps += _draw(parsed, rng, duration_s, names, [i, "random"])
        else:
            for step in parsed:
                _check_step(step, names, [i])
                if duration_s is not None and step.at_s >= duration_s:
                    late.append((i, step))
                steps.append(step)
    if late and duration_s is not None:
        (i, first), more = late[0], late[1:]
        others = f"; so do {', '.join(f'faults[{j}] (at {s.at_s:g}s)' for j, s in more)}" if more else ""
        raise FaultSpecError([i, "at"], f"at {first.at_s:g}s is not within the run ({duration_s:g}s long){others}: "
                             f"a duration of more than {max(s.at_s for _, s in late):g}s runs them all")
    return sorted(steps, key=lambda s: s.at_s)  # stable: entries at the same time keep their order


def _check_step(step: Step, names: list[str], path: list[str | int]) -> None:
    try:
        selectors.expand_names(step.params["target"], names)
    except ParamError as e:
        sub = [] if e.field == "target" else [int(e.field.split("[")[1].rstrip("]"))] if e.field else []
        raise FaultSpecError(path + [step.kind, "target", *sub], e.message) from None


def _draw(spec: RandomSpec, rng: random.Random, duration_s: float | None, names: list[str],
          path: list[str | int]) -> list[Step]:
    for j, t in enumerate(spec.targets):
        try:
            selectors.expand_names(t, names)
        except ParamError as e:
            raise FaultSpecError(path + ["targets", j], e.message) from None
    candidates = list(spec.targets) or [n for n in names if n != "pipeline"]
    until = spec.until_s if spec.until_s is not None else duration_s
    if until is None:
        raise FaultSpecError(path + ["until"], "a random entry needs `until` when the run has no duration")
    if duration_s is not None:
        until = min(until, duration_s)
    # the schedule's size is known before it is drawn: refuse one that would not end
    if spec.every_s < MIN_EVERY_S:
        raise FaultSpecError(path + ["every"], f"expected at least {MIN_EVERY_S * 1000:g}ms between two faults, "
                             f"such as every: 6s, got {spec.every_s:g}s")
    count = math.ceil(max(0.0, until - spec.from_s) / spec.every_s)
    if count > MAX_RANDOM_STEPS:
        raise FaultSpecError(path + ["every"], f"this entry would draw {count:,} faults, more than "
                             f"{MAX_RANDOM_STEPS:,}: draw them less often (every: 6s) or over less time")
    out: list[Step] = []
    k = 0
    while True:
        at = round(spec.from_s + k * spec.every_s, 6)
        if at >= until:
            break
        k += 1
        kind_name = rng.choice(spec.kinds)
        usable = [t for t in candidates if _fits(kind_name, t)]
        if not usable:
            raise FaultSpecError(path + ["kinds"], f"{kind_name} has no node to act on in this run")
        target = rng.choice(usable)
        raw: dict[str, Any] = {}
        for key, v in {**known_kinds()[kind_name].random_defaults, **spec.params.get(kind_name, {})}.items():
            raw[key] = rng.choice(v) if isinstance(v, list) else v
        raw["target"] = target
        params = _kind_params(kind_name, raw, path + ["with", kind_name])
        lasts: float | None = min(spec.for_s, round(until - at, 6))
        if known_kinds()[kind_name].cls.instant:
            lasts = None
        out.append(Step(at, lasts, kind_name, params))
    return out


# --- building faults -----------------------------------------------------------------
def make_fault(step: Step, context: Context, fault_id: str) -> Fault:
    """The fault a step describes, its targets resolved on `context` (selectors use its rng;
    Kafka roles are looked up when the fault is applied)."""
    kinds = known_kinds()
    if step.kind not in kinds:
        raise _unknown_kind(step.kind, [step.kind])
    kind = kinds[step.kind]
    try:
        names = selectors.expand_names(step.params["target"], context.nodes)
    except ParamError as e:
        raise FaultSpecError([step.kind, "target"], e.message) from None
    for n in names:
        if kind.targets == "server" and not selectors.is_role(n) and not any(
                px.node == n for px in context.proxies.values()):
            raise FaultSpecError([step.kind, "target"], f"{step.kind} acts through the proxy in front of a server; "
                                 f"{n!r} has no proxy (it is a client or the proxy itself)")
    how = step.params.get("select", "all")
    if not any(selectors.is_role(n) for n in names):
        names = selectors.select(names, how, context.rng)
    own = {k: v for k, v in step.params.items() if k not in TARGET_KEYS}
    fault = kind.cls(fault_id, context, names, own)
    fault.role = {"topic": step.params.get("topic"), "partition": step.params.get("partition", 0)}
    return fault


__all__ = ["FaultSpecError", "Step", "RandomSpec", "RandomEntry", "FixedStep", "FaultEntry", "STEP_MODELS", "read_entry",
           "parse_entry", "expand", "make_fault", "FaultError"]
