"""Sink mappings: the user's own store read back as applications `(event_id, key?, seq?)`, and
derived state read back as per-key counts.

A plan names the store where the pipeline already writes (`workload.sink` as a mapping):

    sink: {postgres: {query: "SELECT order_id, customer, n FROM orders"}}          # any query
    sink: {postgres: {table: orders, id: order_id, key: customer, seq: n, applied: xmin}}
    sink: {kafka: {topic: orders-out, id: "json:/order/id", key: key, seq: "json:/n"}}
    sink: {redis: {stream: out, id: order_id}}   # or list: / set: / hash: "customer:*"

A `query` is read in full on each pass (nothing can follow an arbitrary query); a `table` is
followed by logical decoding (harness/pgdecode.py), so each pass costs what changed. Derived
state (`checks.state`) is a SQL query of rows (key, count[, sum of seq]) or a compacted Kafka
topic of key -> count (text or an 8-byte big-endian long, as Kafka Streams' LongSerializer
writes), compared by the checker with the fold of the events applied once."""
from __future__ import annotations

import re
from typing import Any, Callable, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from onceproof.pgdecode import Columns, MappingError, int_or_none
from onceproof.sinks import Effect, KafkaSink, PostgresReader, RedisStreamSink, Sink, redis_client
from onceproof.targets.deadline import SocketDeadline
from onceproof.targets.deployment import Deployment
from onceproof.targets.kafka import clients as kafka_clients

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, alias_generator=lambda n: n.replace("_", "-"))


# --- where a value sits in a message ------------------------------------------------------
def _pointer(doc: Any, pointer: str) -> Any:
    """RFC 6901 JSON pointer `pointer` ("/order/id") into `doc`; None when absent."""
    if pointer == "":
        return doc
    for part in pointer[1:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict):
            doc = doc.get(part)
        elif isinstance(doc, list) and part.isdigit() and int(part) < len(doc):
            doc = doc[int(part)]
        else:
            return None
    return doc


def check_locator(v: str) -> str:
    """A location of a value in a message: `json:/a/b` (RFC 6901 pointer into a JSON value),
    `header:NAME`, `key` (the message key), `value` (the whole value as text) or `regex:PATTERN`
    (on the value as text; group `v` if named so, else group 1, else the whole match).
    Raises ValueError saying what was expected."""
    kind, _, arg = v.partition(":")
    if kind == "json" and (arg == "" or arg.startswith("/")):
        return v
    if kind == "header" and arg:
        return v
    if v in ("key", "value"):
        return v
    if kind == "regex":
        try:
            re.compile(arg)
        except re.error as e:
            raise ValueError(f"not a regular expression ({e}) in {v!r}") from None
        return v
    raise ValueError(f"expected json:/pointer/to/field, header:NAME, key, value or regex:PATTERN, got {v!r}")


class Locator:
    """A compiled `check_locator` string: `get(value, key, headers)` -> str or None."""

    def __init__(self, spec: str) -> None:
        kind, _, arg = spec.partition(":")
        self.kind = kind if spec not in ("key", "value") else spec
        self.arg = arg
        if self.kind == "regex":
            rx = re.compile(arg)
            group: int | str = "v" if "v" in rx.groupindex else (1 if rx.groups else 0)
            self.rx, self.group = rx, group

    def get(self, value: bytes | str | None, key: bytes | None, headers: list[tuple[str, bytes]] | None,
            doc: Any = None) -> str | None:
        if self.kind == "json":
            if doc is None:
                return None
            got = _pointer(doc, self.arg)
            return None if got is None or isinstance(got, (dict, list)) else str(got)
        if self.kind == "header":
            for n, v in headers or ():
                if n == self.arg and v is not None:
                    return v.decode(errors="replace")
            return None
        if self.kind == "key":
            return key.decode(errors="replace") if key is not None else None
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if text is None:
            return None
        if self.kind == "value":
            return text
        m = self.rx.search(text)
        return m.group(self.group) if m else None


class MessageMapping:
    """id / key / seq locators applied to one message -> an Effect [id, key, seq, None]."""

    def __init__(self, id: str, key: str | None, seq: str | None) -> None:
        self.locs = [Locator(id), Locator(key) if key else None, Locator(seq) if seq else None]
        self.json = any(loc is not None and loc.kind == "json" for loc in self.locs)

    def effect(self, value: bytes | str | None, key: bytes | None = None,
               headers: list[tuple[str, bytes]] | None = None) -> Effect:
        doc = None
        if self.json and value:
            try:
                doc = orjson.loads(value)
            except orjson.JSONDecodeError:
                doc = None
        got = [loc.get(value, key, headers, doc) if loc is not None else None for loc in self.locs]
        return [got[0], got[1], int_or_none(got[2]), None]


# --- plan sections -------------------------------------------------------------------------
class PostgresMapping(_M):
    """`sink: {postgres: ...}`: exactly one of `query` (read in full each pass; its columns are
    id, key, seq in that order, key and seq optional) or `table` (followed by logical decoding;
    `id`, `key`, `seq` name its columns). `applied`: a column holding how many times the row was
    applied (a version or applied_count an upsert bumps), or `xmin` (table only: every UPDATE
    of a row is one more application) - so duplicates stay visible in an upserted table."""

    query: str | None = None
    table: str | None = None
    schema_: str | None = Field(None, alias="schema")  # table only; default public
    id: str | None = None  # table only; default event_id
    key: str | None = None
    seq: str | None = None
    applied: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "PostgresMapping":
        if (self.query is None) == (self.table is None):
            raise ValueError("expected exactly one of `query` (SQL returning id, key, seq) or `table` "
                             "(followed by logical decoding), e.g. {query: \"SELECT order_id, customer, n FROM orders\"}")
        if self.query is not None:
            named = [n for n in ("id", "key", "seq", "schema") if getattr(self, n.replace("schema", "schema_"))]
            if named:  # else silently unused (the resolved plan showed `id: event_id` for a query)
                raise ValueError(f"{', '.join(named)}: only for a `table`; a query's columns are taken by "
                                 "position: SELECT <id>, <key>, <seq> (key and seq optional), e.g. "
                                 "{query: \"SELECT order_id, customer, n FROM orders\"}")
        else:
            self.schema_ = self.schema_ or "public"
            self.id = self.id or "event_id"
        for name in ("table", "schema_", "id", "key", "seq", "applied"):
            v = getattr(self, name)
            if v is not None and not re.fullmatch(IDENT, v):
                raise ValueError(f"{name.rstrip('_')}: expected a plain SQL name (letters, digits, _), got {v!r}")
        if self.applied == "xmin" and self.query is not None:
            raise ValueError("applied: xmin needs `table` (row versions are seen by logical decoding)")
        return self


class KafkaMapping(_M):
    """`sink: {kafka: ...}`: a topic read with read_committed; `id`, `key`, `seq` say where each
    sits in a message (see `check_locator`)."""

    topic: str
    id: str = "json:/id"
    key: str | None = "json:/key"
    seq: str | None = "json:/seq"

    @field_validator("id", "key", "seq")
    @classmethod
    def _loc(cls, v: Any) -> Any:
        return check_locator(v) if isinstance(v, str) else v


class RedisMapping(_M):
    """`sink: {redis: ...}`: exactly one of `stream`, `list`, `set` (a key name) or `hash` (a
    key pattern such as `order:*`: one hash per effect). Stream and hash: `id`, `key`, `seq` are
    field names (`id` or `key` of a hash may also be `@name`: what the pattern's `*` matched in
    the hash's own name, `order:*` and `order:e-7` give `e-7`). List and set: `id`,
    `key`, `seq` are locations in each element (see `check_locator`; default the whole value)."""

    stream: str | None = None
    list_: str | None = Field(None, alias="list")
    set_: str | None = Field(None, alias="set")
    hash: str | None = None
    id: str | None = None
    key: str | None = None
    seq: str | None = None

    @model_validator(mode="after")
    def _one(self) -> "RedisMapping":
        given = [n for n in ("stream", "list_", "set_", "hash") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("expected exactly one of stream, list, set or hash, e.g. {stream: orders-out, id: order_id}")
        if given[0] in ("list_", "set_"):
            for n in ("id", "key", "seq"):
                v = getattr(self, n)
                if v is not None:
                    check_locator(v)
        return self

    @property
    def kind(self) -> str:
        return next(n.rstrip("_") for n in ("stream", "list_", "set_", "hash") if getattr(self, n) is not None)

    @property
    def name(self) -> str:
        return str(getattr(self, self.kind + ("_" if self.kind in ("list", "set") else "")))


class SinkMapping(_M):
    """`workload.sink` given as a mapping: exactly one of postgres, kafka, redis."""

    postgres: PostgresMapping | None = None
    kafka: KafkaMapping | None = None
    redis: RedisMapping | None = None

    @model_validator(mode="after")
    def _one(self) -> "SinkMapping":
        if sum(x is not None for x in (self.postgres, self.kafka, self.redis)) != 1:
            raise ValueError("expected exactly one of postgres, kafka or redis, e.g. "
                             "{postgres: {query: \"SELECT order_id, customer, n FROM orders\"}}")
        return self

    def endpoint(self) -> str:
        """The plain KIND:NAME this mapping stands for (ONCEPROOF_SINK, the target check)."""
        if self.postgres is not None:
            name = self.postgres.table or "query"
            return f"postgres:{name}"
        if self.kafka is not None:
            return f"kafka:{self.kafka.topic}"
        assert self.redis is not None
        return "redis-stream:" + re.sub(r"[^A-Za-z0-9_.\-]", "_", self.redis.name)


class RedisState(_M):
    """`checks.state: {redis: ...}`: `hash` is either a key pattern with one `*` (`count:*`: one
    hash per key, the key being what `*` matched, its `count` field and optional `sum` field),
    or one hash's name (`counts`: a field per key holding its count, as HINCRBY counts words)."""

    hash: str
    count: str = "count"
    sum: str | None = None

    @model_validator(mode="after")
    def _pattern(self) -> "RedisState":
        if self.hash.count("*") > 1 or any(c in self.hash for c in "?[]"):
            raise ValueError(f"hash: expected a key name or a pattern with one `*` such as `count:*`, got {self.hash!r}")
        if "*" not in self.hash and self.sum is not None:
            raise ValueError("sum: only for one hash per key (`hash: \"count:*\"`); a single hash holds counts only")
        return self


class StateSpec(_M):
    """`checks.state`: a SQL `query` on the postgres target returning rows (key, count[, sum of
    seq]), a compacted Kafka `topic` of key -> count whose values are `text` (decimal) or
    `long` (8-byte big-endian, Kafka's LongSerializer; the last value of each key counts, a
    null value (tombstone) deletes the key), or Redis hashes (`redis`, RedisState)."""

    query: str | None = None
    topic: str | None = None
    value: Literal["text", "long"] = "text"
    redis: RedisState | None = None

    @model_validator(mode="after")
    def _one(self) -> "StateSpec":
        if sum(x is not None for x in (self.query, self.topic, self.redis)) != 1:
            raise ValueError("expected exactly one of `query` (SQL returning key, count[, sum]), `topic` "
                             "(a compacted topic of key -> count) or `redis` ({hash: \"count:*\"})")
        return self


# --- sinks ---------------------------------------------------------------------------------
class Applications:
    """The applications a sink read in full held at the last read, counted by event id.
    `diff(now)` (the whole content now, in order) -> (the applications beyond those counts,
    False), or (all of `now`, True) when an id has fewer applications than before (one
    vanished: the checker then sees the flicker).

    Such a sink's row order is no order of application (a query without ORDER BY returns rows
    in heap order, which an UPDATE changes; a set or a SCAN has none): taking it for one gave a
    correct pipeline thousands of false `reorder`s (found by a new user). `in_order(content)`
    orders a content by the read each id was first seen in, and by seq within one read: an
    effect first visible in a later snapshot was committed after one visible in an earlier
    snapshot, so a `reorder` is claimed only across reads, never within one."""

    def __init__(self) -> None:
        self.counts: dict[Any, int] = {}
        self.first: dict[Any, int] = {}  # id -> the number of the read that first saw it
        self.reads = 0

    def diff(self, now: list[Effect]) -> tuple[list[Effect], bool]:
        self.reads += 1
        before: dict[Any, int] = self.counts
        counts: dict[Any, int] = {}
        new: list[Effect] = []
        first = self.first
        for e in now:
            k = counts[e[0]] = counts.get(e[0], 0) + 1
            if k > before.get(e[0], 0):
                new.append(e)
                if k == 1 and e[0] not in first:
                    first[e[0]] = self.reads
        self.counts = counts
        if any(counts.get(i, 0) < n for i, n in before.items()):
            return now, True
        return new, False

    def in_order(self, content: list[Effect], snapshots: bool = True) -> list[Effect]:
        """`content` (a full read) sorted by (the read that first saw its id, seq): ids no read
        saw come last; a missing seq sorts first (the checker orders only effects with one).
        `snapshots=False`: the sink's reads are not snapshots (a SCAN may miss a key made while
        it runs and return a later one), so no read order is proven: by seq alone, no
        `reorder` can come of it."""
        last = self.reads + 1

        def seq(e: Effect) -> int:
            return e[2] if isinstance(e[2], int) else -1
        if not snapshots:
            return sorted(content, key=seq)
        return sorted(content, key=lambda e: (self.first.get(e[0], last), seq(e)))


class PostgresQuerySink(Sink):
    """A user's query read in full each pass; the read returns only what is new unless an
    application vanished (then the whole content, so the checker sees the flicker)."""

    id_field = "workload.sink.postgres.query (its first column)"

    def __init__(self, deployment: Deployment, spec: PostgresMapping) -> None:
        super().__init__(deployment, spec.table or "query")
        self.spec = spec
        self.db = PostgresReader(deployment.postgres_dsn())
        self.applications = Applications()

    def _rows(self, timeout: float, final: bool = False) -> list[Effect]:
        """The query's rows as effects. A missing table is "nothing applied yet" during the run
        (the pipeline creates its table itself), but at the final read (`final`) it is an error:
        MappingError naming the plan's field and the server's message (a misspelt table name
        was a silent "vacuous run"). Other server errors raise psycopg.Error."""
        import psycopg

        applied = self.spec.applied
        try:
            names, rows = self.db.rows(self.spec.query or "", timeout=timeout)  # the plan's own SQL, run as written
        except psycopg.errors.UndefinedTable as e:
            if final:
                raise MappingError(f"workload.sink.postgres.query: at the final read the query still fails: "
                                   f"{str(e).splitlines()[0]} (is the table's name right? query: "
                                   f"{(self.spec.query or '')[:200]})") from None
            return []  # the pipeline creates its table itself: nothing applied yet
        if applied is not None and applied not in names:  # else silently one application a row: duplicates unseen
            raise MappingError(f"workload.sink.postgres.applied: {applied!r} is not a column of the query's result "
                               f"(its columns: {', '.join(names)}); add it to the SELECT, e.g. "
                               f"SELECT <id>, <key>, <seq>, {applied} FROM ...")
        at = names.index(applied) if applied is not None else None
        out: list[Effect] = []
        for r in rows:
            eff = [None if r[0] is None else str(r[0]), None if len(r) < 2 or r[1] is None else str(r[1]),
                   int_or_none(r[2]) if len(r) > 2 else None, None]
            n = max(int_or_none(r[at]) or 1, 1) if at is not None else 1
            out.extend([eff] * n)
        return out

    def read(self) -> tuple[list[Effect], bool]:
        return self.applications.diff(self._rows(10.0))

    def final_read(self) -> list[Effect]:
        """The query's rows in an order of application (`Applications.in_order`)."""
        return self.applications.in_order(self._rows(60.0, final=True))

    def close(self) -> None:
        self.db.close()


def reapplied(table: list[Effect], decoded: list[Effect]) -> list[Effect]:
    """The table's rows (one effect each), each id given as many applications as the decoded
    history counted for it (`applied: xmin`: its insert and every UPDATE) when that is more;
    an id decoding never saw keeps its rows (a table renamed into place), one decoding saw
    that is not in the table is gone (a DROP)."""
    counts: dict[Any, int] = {}
    for e in decoded:
        counts[e[0]] = counts.get(e[0], 0) + 1
    rows: dict[Any, list[Effect]] = {}
    for e in table:
        rows.setdefault(e[0], []).append(e)
    out: list[Effect] = []
    for i, effs in rows.items():
        out.extend(effs)
        out.extend([effs[-1]] * max(0, counts.get(i, 0) - len(effs)))
    return out


def in_read_order(content: list[Effect], first: dict[Any, int]) -> list[Effect]:
    """`content` ordered by the read that first saw each id (`first`), by seq within one read.
    An id no read saw (decoding did not follow it: a table renamed into place) has no proven
    place, so it goes right after the effect of its key with the highest seq not above its
    own (first of all when there is none): it can be claimed in no `reorder`, and the
    effects that were seen keep theirs."""
    import bisect

    def seq(e: Effect) -> int:
        return e[2] if isinstance(e[2], int) else -1
    placed: list[tuple[tuple[int, int, int, int], Effect]] = []
    unseen: list[Effect] = []
    for e in content:
        if e[0] in first:
            placed.append(((first[e[0]], seq(e), 0, 0), e))
        else:
            unseen.append(e)
    if unseen:
        by_key: dict[Any, list[tuple[int, tuple[int, int, int, int]]]] = {}
        for at, e in placed:
            by_key.setdefault(e[1], []).append((seq(e), at))
        seqs: dict[Any, list[int]] = {}
        for k, seen in by_key.items():
            seen.sort()
            seqs[k] = [s for s, _ in seen]
        for e in unseen:
            i = bisect.bisect_right(seqs.get(e[1], []), seq(e))
            anchor = by_key[e[1]][i - 1][1] if i else (-1, 0, 0, 0)
            placed.append(((anchor[0], anchor[1], 1, seq(e)), e))
    placed.sort(key=lambda p: p[0])
    return [e for _, e in placed]


def _quoted(name: str) -> str:
    """`name` as an SQL identifier, exactly as written (the decoded names are case-sensitive)."""
    return '"' + name.replace('"', '""') + '"'


class PostgresTableSink(Sink):
    """A user's table followed by logical decoding (harness/pgdecode.py) during the run; its
    final read is the table itself.

    Decoding follows what changes under the table's name. It does not see a table renamed into
    that name (a copy-and-swap migration), a DROP and re-CREATE, or an UNLOGGED table (no
    WAL), and it keeps the order rows went in within one transaction: taking the decoded
    content for the final one gave a correct pipeline a false `lost` for every row of a
    renamed table, missed a loss by DROP, and gave false `reorder`s for rows inserted in no
    particular order in one transaction (all found by a new user). So the final read SELECTs
    the table (`applied: xmin` keeps the re-applications only decoding saw, for the ids still
    there), and, as for a query (`Applications.in_order`), the content is ordered by the read
    that first saw each id and by seq within one read: a `reorder` is claimed only across
    reads, never within one."""

    id_field = "workload.sink.postgres.id"

    def __init__(self, deployment: Deployment, spec: PostgresMapping) -> None:
        super().__init__(deployment, spec.table or "")
        self.spec = spec

    def setup(self) -> None:
        from onceproof.pgdecode import Follower, Rows

        s = self.spec
        rows = self.rows = Rows(s.id or "event_id", s.key, s.seq, None, s.applied, where="workload.sink.postgres")
        self.follower = Follower(self.deployment.postgres_dsn(), s.table or "", rows, s.schema_ or "public")
        self.follower.create()
        column = s.applied if s.applied != "xmin" else None
        cols = ", ".join(_quoted(c) if c else "NULL" for c in (s.id, s.key, s.seq, column))
        table = f"{_quoted(s.schema_ or 'public')}.{_quoted(s.table or '')}"
        self.query = PostgresQuerySink(self.deployment, PostgresMapping(query=f"SELECT {cols} FROM {table}",
                                                                        applied=column))
        self.first: dict[Any, int] = {}  # id -> the number of the read that first saw it
        self.reads = 0

    def read(self) -> tuple[list[Effect], bool]:
        try:
            effects, full = self.follower.read()
        except MappingError as e:  # kept: the changes it was raised on are gone from the slot
            self.mapping_error = e
            raise
        self._saw(self.follower.passing + effects if full else effects)
        return effects, full

    def _saw(self, effects: list[Effect]) -> None:
        """One more read, which saw `effects` (each id's first read is kept)."""
        self.reads += 1
        first, n = self.first, self.reads
        for e in effects:
            if e[0] not in first:
                first[e[0]] = n

    def visible(self) -> tuple[list[list[int]], str] | None:
        return (self.follower.visible, "commit") if self.follower.visible else None

    def passing(self) -> list[Effect]:
        return self.follower.passing

    def _columns(self) -> list[str]:
        """The table's columns in order ([] when there is no such table yet)."""
        _, rows = self.query.db.rows("SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                                     "AND table_name = %s ORDER BY ordinal_position",
                                     (self.spec.schema_ or "public", self.spec.table or ""), timeout=60.0)
        return [str(r[0]) for r in rows]

    def final_read(self) -> list[Effect]:
        """The content at the end; raises MappingError when the plan names a column the table
        does not have (an observe already found it, or the table as it is now says so): the
        decoded content would be a false "empty", every event lost."""
        if getattr(self, "mapping_error", None) is not None:
            raise self.mapping_error  # type: ignore[misc]
        decoded = self.follower.final_read()  # the rest of the slot (an error if the server cannot send it)
        self._saw(decoded)
        columns = self._columns()
        if not columns:
            return []  # no such table (never created, or gone): nothing of it is applied
        self.rows.check_columns(columns)
        table = self.query._rows(60.0, final=True)
        if self.spec.applied == "xmin":  # the re-applications are in the decoded history only
            table = reapplied(table, decoded)
        return in_read_order(table, self.first)

    def close(self) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.close()
        query = getattr(self, "query", None)
        if query is not None:
            query.close()


class MappedKafkaSink(KafkaSink):
    """A topic of the user's own messages; where the id, key and seq sit comes from the plan."""

    id_field = "workload.sink.kafka.id"

    def __init__(self, deployment: Deployment, spec: KafkaMapping) -> None:
        super().__init__(deployment, spec.topic)
        self.mapping = MessageMapping(spec.id, spec.key, spec.seq)

    def effect_of(self, msg: Any) -> Effect:
        return self.mapping.effect(msg.value(), msg.key(), msg.headers())


class _RedisBase(Sink):
    id_field = "workload.sink.redis.id"

    def __init__(self, deployment: Deployment, spec: RedisMapping) -> None:
        super().__init__(deployment, spec.name)
        self.spec = spec

    def setup(self) -> None:
        self.client: Any = redis_client(self.deployment)
        self.applications = Applications()

    ordered = False  # whether _all()'s order is the order of application (a list's is; a set's is not)
    snapshots = True  # whether one _all() is a snapshot (SMEMBERS, LRANGE are; a SCAN is not)

    def final_read(self) -> list[Effect]:
        content = self._all()
        return content if self.ordered else self.applications.in_order(content, self.snapshots)

    def _all(self) -> list[Effect]:
        raise NotImplementedError

    def read(self) -> tuple[list[Effect], bool]:
        return self.applications.diff(self._all())


class RedisMappedStream(RedisStreamSink):
    """A stream of the user's entries (read as harness/sinks.py reads ours; never deleted)."""

    id_field = "workload.sink.redis.id"

    def __init__(self, deployment: Deployment, spec: RedisMapping) -> None:
        super().__init__(deployment, spec.name)
        self.fields = Columns(spec.id or "id", spec.key, spec.seq)

    def setup(self) -> None:
        self.connect()

    def effect_of(self, fields: dict) -> Effect:
        return self.fields.effect(fields)


class RedisMappedList(_RedisBase):
    """A list (RPUSH order) of elements; a shorter list than before is read in full."""

    ordered = True

    def setup(self) -> None:
        super().setup()
        self.mapping = MessageMapping(self.spec.id or "value", self.spec.key, self.spec.seq)
        self.length = 0

    def read(self) -> tuple[list[Effect], bool]:
        n = self.client.llen(self.name)
        if n < self.length:
            self.length = n
            return self._all(), True
        items = self.client.lrange(self.name, self.length, n - 1) if n > self.length else []
        self.length += len(items)
        return [self.mapping.effect(v) for v in items], False

    def _all(self) -> list[Effect]:
        return [self.mapping.effect(v) for v in self.client.lrange(self.name, 0, -1)]


class RedisMappedSet(_RedisBase):
    """A set of members (one application each at most: a set cannot show duplicates)."""

    def setup(self) -> None:
        super().setup()
        self.mapping = MessageMapping(self.spec.id or "value", self.spec.key, self.spec.seq)

    def _all(self) -> list[Effect]:
        return [self.mapping.effect(v) for v in sorted(self.client.smembers(self.name))]


class RedisMappedHash(_RedisBase):
    """One hash per effect, keys matching a pattern (SCAN); `id` etc. are field names, or
    `@name`: the part of the hash's own name the pattern's `*` matched. A SCAN is no snapshot (a key made while it
    runs may be missed while a later one is returned: a correct pipeline got `reorder` 3 runs
    in 4, found by a new user), so no order of application is claimed."""

    snapshots = False

    def _all(self) -> list[Effect]:
        s = self.spec
        head, star, tail = self.name.partition("*")
        out = []
        for name in sorted(self.client.scan_iter(match=self.name, count=1000)):
            h = self.client.hgetall(name)
            if not h:
                continue
            # `@name`: what the pattern's `*` matched (order:* and order:e-7 -> e-7), else the whole name
            own = name[len(head):len(name) - len(tail)] if star and "*" not in tail else name

            def field(f: str | None) -> Any:
                return own if f == "@name" else (h.get(f) if f else None)
            out.append([field(s.id or "id"), field(s.key), int_or_none(field(s.seq)) if s.seq else None, None])
        return out


def make_mapped_sink(mapping: SinkMapping, deployment: Deployment) -> Sink:
    """The Sink reading `mapping` (raises nothing: errors come at setup/read)."""
    if mapping.postgres is not None:
        if mapping.postgres.table is not None:
            return PostgresTableSink(deployment, mapping.postgres)
        return PostgresQuerySink(deployment, mapping.postgres)
    if mapping.kafka is not None:
        return MappedKafkaSink(deployment, mapping.kafka)
    assert mapping.redis is not None
    cls = {"stream": RedisMappedStream, "list": RedisMappedList, "set": RedisMappedSet,
           "hash": RedisMappedHash}[mapping.redis.kind]
    return cls(deployment, mapping.redis)


# --- derived state -------------------------------------------------------------------------
def decode_count(value: bytes | None, fmt: str) -> int | None:
    """A state topic's value -> the count: decimal text, or an 8-byte big-endian signed long
    (Kafka's LongSerializer). None for a tombstone. Raises ValueError on anything else."""
    if value is None:
        return None
    if fmt == "long":
        if len(value) != 8:
            raise ValueError(f"expected an 8-byte big-endian long, got {len(value)} bytes")
        return int.from_bytes(value, "big", signed=True)
    return int(value.decode().strip())


def state_reader(spec: StateSpec, deployment: Deployment) -> Callable[[], dict[str, dict[str, int]]]:
    """A function reading the declared state now: {key: {"count": n[, "sum": s]}}. Raises what
    the client raises (the observer records a failed `state`)."""
    if spec.redis is not None:
        return _redis_state(spec.redis, deployment)
    if spec.query is not None:
        query = spec.query

        def from_sql() -> dict[str, dict[str, int]]:
            import psycopg

            with psycopg.connect(deployment.postgres_dsn(), autocommit=True, connect_timeout=5) as conn:
                with SocketDeadline(conn, 30.0):
                    rows = conn.execute(query).fetchall()  # the plan's own SQL
            out: dict[str, dict[str, int]] = {}
            for r in rows:
                d = {"count": int(r[1])}
                if len(r) > 2 and r[2] is not None:
                    d["sum"] = int(r[2])
                out[str(r[0])] = d
            return out
        return from_sql
    topic, fmt = spec.topic or "", spec.value

    def from_topic() -> dict[str, dict[str, int]]:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        c = Consumer(kafka_clients.config({
            "bootstrap.servers": deployment.kafka_bootstrap(), "group.id": "onceproof-state",
            "isolation.level": "read_committed", "enable.auto.commit": False}))
        try:
            md = c.list_topics(topic, timeout=10).topics[topic]
            parts = sorted(md.partitions)
            ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts}
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
            latest: dict[str, int | None] = {}
            import time

            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                for m in c.consume(10000, timeout=0.5):
                    if m.error() is None and m.key() is not None:
                        latest[m.key().decode(errors="replace")] = decode_count(m.value(), fmt)
                pos = {tp.partition: tp.offset for tp in c.position([TopicPartition(topic, p) for p in parts])}
                if all(ends[p] <= 0 or pos.get(p, -1) >= ends[p] for p in parts):
                    break
            return {k: {"count": v} for k, v in latest.items() if v is not None}
        finally:
            c.close()
    return from_topic


def _redis_state(spec: RedisState, deployment: Deployment) -> Callable[[], dict[str, dict[str, int]]]:
    """The reader of `checks.state: {redis: ...}` (RedisState): SCAN for the pattern's keys, or
    HGETALL of the one hash. A value that is not an integer raises ValueError naming the key."""
    def read() -> dict[str, dict[str, int]]:
        from onceproof.targets.redis import client

        r = deployment.redis
        assert r is not None
        c: Any = client(r.host, r.port, timeout=10.0, password=r.password)
        try:
            if "*" not in spec.hash:
                return {k: {"count": _count(v, f"{spec.hash} field {k}")} for k, v in c.hgetall(spec.hash).items()}
            head, tail = spec.hash.split("*")
            out: dict[str, dict[str, int]] = {}
            for name in c.scan_iter(match=spec.hash.replace("\\", "\\\\"), count=1000):
                fields = c.hgetall(name)
                if spec.count not in fields:
                    continue
                d = {"count": _count(fields[spec.count], f"{name} field {spec.count}")}
                if spec.sum is not None and spec.sum in fields:
                    d["sum"] = _count(fields[spec.sum], f"{name} field {spec.sum}")
                out[name[len(head):len(name) - len(tail)]] = d
            return out
        finally:
            c.close()
    return read


def _count(value: Any, where: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"checks.state: {where}: expected an integer, got {str(value)[:40]!r}") from None
