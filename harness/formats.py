"""Source formats (`workload.format`): what each event looks like on the wire, so a pipeline
that already exists reads its own shape.

A template is either text (`"{key},{seq},{id}"`: Python format fields, `{{`/`}}` for a
literal brace) or a JSON value (object, list, string, number) whose strings may hold the
fields. The fields are `{id}`, `{key}`, `{seq}` and `{payload}` of the generated event (ids,
keys and payloads are letters and digits, so they never need escaping). In a JSON template a
string that is exactly `"{seq}"` renders as a JSON number; any other string renders as a JSON
string. A template compiles once into one `str.format` string, so rendering costs one call."""
from __future__ import annotations

import json
import string
from typing import Any, Callable

FIELDS = ("id", "key", "seq", "payload")
Event = tuple[str, str, int, str]  # id, key, seq, payload (sources.Event)


class TemplateError(ValueError):
    """A template that cannot be used: `path` is the field's path inside `workload.format`
    (e.g. ["value", "order", "id"]), `message` what was expected."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        self.path, self.message = list(path), message
        super().__init__(f"{_dotted(path)}: {message}")


def _dotted(path: tuple[str | int, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + p
    return out


def _check_text(text: str, where: tuple[str | int, ...]) -> None:
    """Every replacement field of `text` is one of FIELDS, without conversion or index."""
    try:
        parts = list(string.Formatter().parse(text))
    except ValueError as e:
        raise TemplateError(where, f"{e} in {text!r} (write {{{{ and }}}} for a literal brace)") from None
    for _, name, spec, conv in parts:
        if name is None:
            continue
        if name not in FIELDS:
            raise TemplateError(where, f"unknown field {{{name}}} in {text!r}: expected "
                                + ", ".join("{%s}" % f for f in FIELDS))
        if conv:
            raise TemplateError(where, f"a conversion (!{conv}) is not allowed in {text!r}")
        if spec and name != "seq":
            raise TemplateError(where, f"a format spec is only allowed on {{seq}}, not in {text!r}")


def _escape(literal: str) -> str:
    return literal.replace("{", "{{").replace("}", "}}")


def _json_format(value: Any, where: tuple[str | int, ...]) -> str:
    """A JSON template value -> a str.format string rendering that JSON."""
    if isinstance(value, str):
        if value == "{seq}":
            return "{seq}"
        _check_text(value, where)
        out = []
        for literal, name, spec, _ in string.Formatter().parse(value):
            out.append(_escape(json.dumps(literal, ensure_ascii=False)[1:-1]))
            if name is not None:
                out.append("{%s%s}" % (name, ":" + spec if spec else ""))
        return '"' + "".join(out) + '"'
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise TemplateError(where, f"a JSON object's keys are strings, got {k!r}")
            items.append(_escape(json.dumps(k, ensure_ascii=False)) + ":" + _json_format(v, (*where, k)))
        return "{{" + ",".join(items) + "}}"
    if isinstance(value, list):
        return "[" + ",".join(_json_format(v, (*where, i)) for i, v in enumerate(value)) + "]"
    if value is None or isinstance(value, (bool, int, float)):
        return _escape(json.dumps(value))
    raise TemplateError(where, f"expected a JSON value or a text template, got {type(value).__name__}")


class Template:
    """A compiled template. `render(event) -> str`; `fields` are the event fields it uses;
    `whole_seq` is True when the template is exactly `{seq}` (a number column or field)."""

    def __init__(self, spec: Any, where: tuple[str | int, ...]) -> None:
        self.spec = spec
        if isinstance(spec, str):
            _check_text(spec, where)
            self.fmt = spec
        else:
            self.fmt = _json_format(spec, where)
        self.fields = {n for _, n, _, _ in string.Formatter().parse(self.fmt) if n}
        self.whole_seq = spec == "{seq}"
        fmt = self.fmt.format
        self.render: Callable[[Event], str] = lambda e: fmt(id=e[0], key=e[1], seq=e[2], payload=e[3])


def compile_text(spec: Any, where: tuple[str | int, ...]) -> Template:
    """A text-only template (a Kafka key, a header, a Redis field, a table column)."""
    if not isinstance(spec, str):
        raise TemplateError(where, f"expected a text template such as \"{{id}}\", got {spec!r}")
    return Template(spec, where)


class Format:
    """`workload.format` compiled. Kafka: `value` (text or JSON template; default the contract's
    JSON), `key` (text, default `{key}`), `headers` (name -> text). Redis: `fields` (stream
    field -> text). PostgreSQL: `columns` (source-table column -> text; exactly `{seq}` makes a
    bigint column). The event id must travel somewhere the format writes (value, key, a header,
    a field or a column), else no pipeline could ever carry it: checked here.
    Raises TemplateError naming the field."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.value = Template(spec["value"], ("value",)) if spec.get("value") is not None else None
        self.key = compile_text(spec["key"], ("key",)) if spec.get("key") is not None else None
        self.headers = {str(n): compile_text(t, ("headers", n)) for n, t in (spec.get("headers") or {}).items()}
        self.fields = {str(n): compile_text(t, ("fields", n)) for n, t in (spec.get("fields") or {}).items()}
        self.columns = {str(n): compile_text(t, ("columns", n)) for n, t in (spec.get("columns") or {}).items()}
        for n in self.columns:
            if not n.isidentifier() or n.lower() == "pos":
                raise TemplateError(("columns", n), "expected a plain column name (letters, digits, _; not `pos`, "
                                    "which the source keeps for its own order)")

    def carries_id(self, kind: str) -> bool:
        """Whether the format for a source of `kind` puts the event id somewhere."""
        if kind == "kafka":
            parts = [self.value, self.key, *self.headers.values()]
            return self.value is None or any(t is not None and "id" in t.fields for t in parts)
        group = self.fields if kind == "redis" else self.columns
        return not group or any("id" in t.fields for t in group.values())
