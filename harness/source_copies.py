"""How many times each event is in a Kafka source topic, read back at the end of a run.

Why: a correct pipeline that processes every source record once applies an event twice if the
source holds it twice, and the checker must not blame the pipeline for that. The load's
producer is idempotent (harness/sources.py), yet a record can land twice: seen on the docker
runtime while the cluster was halved, with the load producer's epoch bumped many times
(`InvalidProducerEpochException` in the broker log) and up to 1,079 events written twice,
each with one `ok` delivery report. Kafka's idempotence covers retries within one producer
epoch only (KIP-98; the epoch bump of KIP-360 starts new sequences). So the run records
`source-copies` (checkers/HISTORY.md) and the checker allows that many applications.

The id is read where the plan's format puts it: the contract's JSON value (default), a string
of a JSON value template, a header or the key whose template is exactly `{id}`; another format
cannot be read back, and
the record says so (`copies: null` with a `note`), which leaves the check as it was.
"""
from __future__ import annotations

import time
from collections import Counter
from typing import Any, Callable

import orjson

from onceproof.formats import Format
from onceproof.targets.kafka import clients as kafka_clients

SAMPLE = ("\x00id\x00", "k", 0, "")  # an event whose rendered id is recognisable


def _id_reader(fmt: Format | None) -> Callable[[Any], str | None] | None:
    """A function from a consumed message to its event id, or None when the format hides it."""
    if fmt is None or fmt.value is None and not fmt.headers and fmt.key is None:
        return lambda m: orjson.loads(m.value()).get("id") if m.value() else None
    for name, template in fmt.headers.items():
        if template.render(SAMPLE) == SAMPLE[0]:
            def from_header(m: Any, name: str = name) -> str | None:
                for n, v in m.headers() or []:
                    if n == name and v is not None:
                        return v.decode("utf-8", "replace")  # type: ignore[no-any-return]
                return None
            return from_header
    if fmt.key is not None and fmt.key.render(SAMPLE) == SAMPLE[0]:
        return lambda m: m.key().decode("utf-8", "replace") if m.key() else None
    if fmt.value is None:
        return lambda m: orjson.loads(m.value()).get("id") if m.value() else None
    path = _id_path(fmt.value.spec)
    if path is not None:  # a JSON value with a string that is exactly `{id}` (e.g. {"evt": "{id}"})
        def from_json(m: Any) -> str | None:
            try:
                v: Any = orjson.loads(m.value()) if m.value() else None
                for step in path:
                    v = v[step]
            except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
                return None
            return v if isinstance(v, str) else None
        return from_json
    return None


def _id_path(spec: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where a JSON value template holds a string that is exactly `{id}`: the keys and indexes
    to it, or None (a text template, or the id inside a longer string)."""
    if spec == "{id}" and path:
        return path
    items = spec.items() if isinstance(spec, dict) else enumerate(spec) if isinstance(spec, list) else ()
    for k, v in items:
        found = _id_path(v, (*path, k))
        if found is not None:
            return found
    return None


def kafka_copies(bootstrap: str, topic: str, fmt: Format | None, budget_s: float = 120.0) -> dict[str, Any]:
    """Read `topic` from its beginning to its current end and count each event id's records.
    Returns the value of a `source-copies` record: `{"source": "kafka:<topic>", "records": n,
    "copies": {id: count} for the ids seen more than once}`, with `copies: None` and a `note`
    when the ids cannot be read (the format, or the read did not finish within `budget_s`)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    out: dict[str, Any] = {"source": f"kafka:{topic}", "records": 0, "copies": None}
    read_id = _id_reader(fmt)
    if read_id is None:
        out["note"] = "the source's format puts the id where it cannot be read back; copies not counted"
        return out
    c = Consumer(kafka_clients.config({"bootstrap.servers": bootstrap, "group.id": "onceproof-source-copies",
                                       "enable.auto.commit": False, "enable.partition.eof": True}))
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            out["note"] = f"the source topic could not be read ({getattr(md, 'error', None) or 'no partitions'})"
            return out
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
        todo = {p for p, end in ends.items() if end > 0}
        c.assign([TopicPartition(topic, p, 0) for p in sorted(todo)])
        counts: Counter[str] = Counter()
        deadline = time.monotonic() + budget_s
        while todo and time.monotonic() < deadline:
            for m in c.consume(10000, timeout=0.5):
                p = m.partition()
                if m.error() is None:
                    out["records"] += 1
                    eid = read_id(m)
                    if eid is not None:
                        counts[eid] += 1
                    if m.offset() + 1 >= ends[p]:
                        todo.discard(p)
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    todo.discard(p)
        if todo:
            out["note"] = f"the source topic was not read to its end within {budget_s:.0f} s; copies not counted"
            return out
        out["copies"] = {eid: n for eid, n in counts.items() if n > 1}
        return out
    finally:
        c.close()
