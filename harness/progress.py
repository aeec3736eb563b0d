"""The pipeline's own progress on the source, observed while the run goes on and at the end.

A quiet sink does not mean a finished pipeline: after a SIGKILL a Kafka consumer group waits
for the dead member (`session.timeout.ms`, 45 s by default), and a killed transactional
producer can leave a transaction open on a Kafka sink that hides every later effect from a
read_committed reader. So the drain after the load ends when the sink is idle AND the
pipeline has caught up with the source AND the sink has no open transaction, or at
`quiesce.max`; and the checker proves `lost` with the positions recorded here
(checkers/progress.py).

Sources of progress (each poll is one `progress` operation of the `observer`,
checkers/HISTORY.md):
- Kafka source: the committed offsets of the consumer group(s) reading the source topic
  (Kafka's consumer-group protocol: OffsetFetch with require_stable, so a transactional
  pipeline's offsets count only once its transaction committed), found with the admin API
  (ListGroups, then OffsetFetch per group) or named in the plan (`pipeline.groups`), against
  the read_committed end offsets (ListOffsets) of each partition.
- Redis stream source: each consumer group's last-delivered id, pending count and lag
  (XINFO GROUPS, XPENDING).
- a plan's `pipeline.progress` query (any source; the only way for a Postgres source, or a
  Kafka pipeline that keeps its offsets in PostgreSQL): rows (partition, next position);
  or `{redis: {hash: NAME}}` for a Kafka pipeline that keeps them in a Redis hash
  (partition -> next offset; e.g. a dedup-cache pipeline).
"""
from __future__ import annotations

import contextlib
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from onceproof.recorder import HistoryWriter as History
from onceproof.observer import Observer
from onceproof.sinks import PostgresReader, Sink
from onceproof.targets.deployment import Deployment
from onceproof.targets.kafka import clients as kafka_clients

POLL_S = 1.0  # a progress poll costs the brokers two small requests per group
REDISCOVER_S = 5.0  # how often to look for consumer groups again once some were found
OUR_GROUPS = ("onceproof-observer",)  # the harness's own sink reader


@dataclass
class GroupProgress:
    """One consumer group's position on the source: `partitions` as [partition, committed,
    end]; `committed` is the next position the group will process (-1: nothing committed),
    every position before it is claimed processed; `end` the next position to be written.
    Positions are Kafka offsets, Redis stream entry ids ("ms-seq") or Postgres `pos` values."""

    group: str
    partitions: list[list[Any]]
    lag: int
    pending: int | None = None  # Redis: delivered, not acknowledged

    def as_value(self) -> dict[str, Any]:
        out: dict[str, Any] = {"group": self.group, "partitions": self.partitions, "lag": self.lag}
        if self.pending is not None:
            out["pending"] = self.pending
        return out


class ProgressReader:
    """Reads the progress of every group of the pipeline on the source. `read()` returns the
    groups (empty: nothing observable yet) and raises on a failed read."""

    note = ""  # why nothing could be observed, when read() returned no group

    def read(self) -> list[GroupProgress]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class KafkaGroups(ProgressReader):
    """Committed offsets of consumer groups on a Kafka topic vs its read_committed end offsets."""

    def __init__(self, bootstrap: str, topic: str, groups: list[str], found: list[str] | tuple[str, ...] = ()) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin: Any = AdminClient(kafka_clients.config({"bootstrap.servers": bootstrap}))
        self.topic = topic
        self.named = list(groups)
        self.groups: list[str] = list(groups) + [g for g in found if g not in groups]  # found earlier: still tracked
        self.found_at = 0.0
        self.partitions: list[int] = []

    def _ends(self) -> dict[int, int]:
        from confluent_kafka import IsolationLevel, TopicPartition
        from confluent_kafka.admin import OffsetSpec

        if not self.partitions:
            md = self.admin.list_topics(self.topic, timeout=5).topics.get(self.topic)
            if md is None or md.error is not None:
                raise RuntimeError(f"topic {self.topic} not found")
            self.partitions = sorted(md.partitions)
        futures = self.admin.list_offsets({TopicPartition(self.topic, p): OffsetSpec.latest()
                                           for p in self.partitions},
                                          isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=5)
        return {tp.partition: f.result().offset for tp, f in futures.items()}

    def _committed(self, group: str) -> dict[int, int]:
        from confluent_kafka import ConsumerGroupTopicPartitions

        futures = self.admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                         require_stable=True, request_timeout=5)
        result = futures[group].result()
        return {tp.partition: tp.offset for tp in result.topic_partitions or []
                if tp.topic == self.topic and tp.error is None}

    def _discover(self) -> None:
        """Every group but ours that has committed offsets of the topic, or whose members are
        assigned its partitions (a pipeline stuck before its first commit is still the
        pipeline). A group once found stays tracked."""
        listed = self.admin.list_consumer_groups(request_timeout=5).result()
        candidates = sorted(x.group_id for x in listed.valid
                            if x.group_id not in OUR_GROUPS and x.group_id not in self.groups)
        found = []
        for g in candidates:
            try:
                if any(o >= 0 for o in self._committed(g).values()):
                    found.append(g)
            except Exception:  # noqa: BLE001 - a group being deleted or rebalanced: try next time
                continue
        rest = [g for g in candidates if g not in found]
        if rest:
            try:
                described = self.admin.describe_consumer_groups(rest, request_timeout=5)
                for g, future in described.items():
                    members = future.result().members or []
                    if any(tp.topic == self.topic for m in members
                           for tp in (m.assignment.topic_partitions if m.assignment else [])):
                        found.append(g)
            except Exception:  # noqa: BLE001
                pass
        self.groups = self.groups + sorted(found)
        self.found_at = time.monotonic()

    def read(self) -> list[GroupProgress]:
        if not self.named and (not self.groups or time.monotonic() - self.found_at > REDISCOVER_S):
            self._discover()
        if not self.groups:
            self.note = (f"no consumer group reads {self.topic} or has committed offsets of it: if the "
                         "pipeline never got to read (see logs/pipeline-*.log), fix that first; else name its "
                         "group in pipeline.groups, or give pipeline.progress")
            return []
        ends = self._ends()
        out = []
        for g in self.groups:
            committed = self._committed(g)
            parts = [[p, committed.get(p, -1), ends[p]] for p in self.partitions]
            out.append(GroupProgress(g, parts, sum(max(0, e - max(c, 0)) for _, c, e in parts)))
        return out

    def close(self) -> None:
        self.admin = None  # destroyed now, not when the brokers are already gone


class IsolatedKafkaGroups(ProgressReader):
    """`KafkaGroups` in a child process (`groups_worker.py`): librdkafka's admin client aborts
    its process when a coordinator request times out while the coordinator moves or is down
    (librdkafka issues #3663, #4605), which is exactly when a fault has the broker down. A crash
    is one failed read (the poll records `fail` with the reason) and the next read starts a new
    child that keeps tracking the groups found so far."""

    def __init__(self, bootstrap: str, topic: str, groups: list[str]) -> None:
        self.bootstrap, self.topic, self.named = bootstrap, topic, list(groups)
        self.groups: list[str] = list(groups)
        self._worker: Any = None
        self._lock = threading.Lock()

    def _call(self, name: str) -> Any:
        from onceproof.groups_worker import GroupsWorker, WorkerCrashed, log_file

        with self._lock:
            if self._worker is None:
                self._worker = GroupsWorker({"bootstrap": self.bootstrap, "topic": self.topic, "groups": self.named,
                                             "found": self.groups, "log": log_file()})
            try:
                reply = self._worker.call(name)
            except WorkerCrashed:
                self._worker = None
                raise
            self.note, self.groups = reply["note"], reply["groups"]
            return reply["ok"]

    def read(self) -> list[GroupProgress]:
        return [GroupProgress(g["group"], g["partitions"], g["lag"]) for g in self._call("read")]

    def ends(self) -> dict[int, int]:
        """The read_committed end offset of each partition of the topic."""
        return {int(p): int(o) for p, o in self._call("ends").items()}

    def close(self) -> None:
        with self._lock:
            if self._worker is not None:
                self._worker.close()
                self._worker = None


def _next_id(entry_id: str) -> str:
    ms, _, seq = entry_id.partition("-")
    return f"{ms}-{int(seq or 0) + 1}"


class RedisGroups(ProgressReader):
    """Consumer groups of a Redis stream: everything before the oldest pending entry, or after
    the last-delivered id when nothing is pending, is claimed processed."""

    def __init__(self, host: str, port: int, stream: str, password: str | None = None) -> None:
        from onceproof.targets.redis import client

        self.client: Any = client(host, port, timeout=5.0, password=password)
        self.stream = stream

    def read(self) -> list[GroupProgress]:
        info = self.client.xinfo_stream(self.stream)
        end = _next_id(str(info.get("last-generated-id") or "0-0"))
        length = int(info.get("length") or 0)
        out = []
        for g in self.client.xinfo_groups(self.stream):
            name = str(g["name"])
            pending = int(g.get("pending") or 0)
            last = str(g.get("last-delivered-id") or "0-0")
            committed = _next_id(last)
            if pending:
                summary = self.client.xpending(self.stream, name)
                committed = str(summary.get("min") or committed)
            lag = g.get("lag")
            undelivered = int(lag) if lag is not None else max(0, length - int(g.get("entries-read") or 0))
            out.append(GroupProgress(name, [[0, committed, end]], undelivered + pending, pending))
        if not out:
            self.note = f"the stream {self.stream} has no consumer group"
        return out


class ProgressQuery(ProgressReader):
    """The plan's `pipeline.progress` SQL: rows (partition, next position), against the end of
    the source (Kafka end offsets, or max(pos) + 1 of a Postgres source table)."""

    def __init__(self, dsn: str, query: str, ends: Callable[[], dict[int, int]],
                 closing: ProgressReader | None = None) -> None:
        self.dsn, self.query, self.ends = dsn, query, ends
        self.closing = closing  # what `ends` reads with, closed with this reader
        self.db = PostgresReader(dsn)

    def read(self) -> list[GroupProgress]:
        committed = {int(p): int(c) for p, c in self.db.rows(self.query, timeout=10.0)[1]}
        ends = self.ends()
        parts = [[p, committed.get(p, -1), e] for p, e in sorted(ends.items())]
        return [GroupProgress("pipeline.progress", parts, sum(max(0, e - max(c, 0)) for _, c, e in parts))]

    def close(self) -> None:
        self.db.close()
        if self.closing is not None:
            self.closing.close()


class RedisHashProgress(ProgressReader):
    """The plan's `pipeline.progress: {redis: {hash: NAME}}`: a hash of source partition ->
    next offset to process (HGETALL), against the Kafka source's end offsets. A field that is
    not a partition number or a value that is not an offset is skipped; none at all reads as
    "nothing processed yet" (-1 per partition)."""

    def __init__(self, host: str, port: int, name: str, ends: Callable[[], dict[int, int]],
                 password: str | None = None, closing: ProgressReader | None = None) -> None:
        from onceproof.targets.redis import client

        self.client: Any = client(host, port, timeout=5.0, password=password)
        self.name, self.ends, self.closing = name, ends, closing

    def read(self) -> list[GroupProgress]:
        committed: dict[int, int] = {}
        for part, value in (self.client.hgetall(self.name) or {}).items():
            try:
                committed[int(part)] = int(value)
            except (TypeError, ValueError):
                continue
        ends = self.ends()
        parts = [[p, committed.get(p, -1), e] for p, e in sorted(ends.items())]
        return [GroupProgress(f"pipeline.progress (redis hash {self.name})", parts,
                              sum(max(0, e - max(c, 0)) for _, c, e in parts))]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        if self.closing is not None:
            self.closing.close()


def _postgres_ends(dsn: str, table: str) -> Callable[[], dict[int, int]]:
    def ends() -> dict[int, int]:
        import psycopg

        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as c:
            return {0: int(c.execute(f"SELECT coalesce(max(pos), 0) + 1 FROM {table}").fetchone()[0])}  # type: ignore[index]
    return ends


def make_reader(source: str, deployment: Deployment, groups: list[str], query: Any) -> ProgressReader | None:
    """The progress reader for a plan's source (`kind:name`), or None when nothing can tell the
    pipeline's progress (a Postgres source without a `pipeline.progress` query). `query`: the
    plan's `pipeline.progress` (SQL, or a RedisProgress for a Kafka source), or None."""
    kind, name = source.split(":", 1)
    if kind == "kafka":
        kafka = IsolatedKafkaGroups(deployment.kafka_bootstrap(), name, groups)
        if query is not None and not isinstance(query, str):  # {redis: {hash: NAME}} (plan.RedisProgress)
            assert deployment.redis is not None  # the plan requires the redis target
            return RedisHashProgress(deployment.redis.host, deployment.redis.port, query.redis.hash, kafka.ends,
                                     deployment.redis.password, closing=kafka)
        if query:
            return ProgressQuery(deployment.postgres_dsn(), query, kafka.ends, closing=kafka)
        return kafka
    if kind == "redis":
        assert deployment.redis is not None
        return RedisGroups(deployment.redis.host, deployment.redis.port, name, deployment.redis.password)
    if kind == "postgres" and query:
        return ProgressQuery(deployment.postgres_dsn(), query, _postgres_ends(deployment.postgres_dsn(), name))
    return None


@dataclass
class Quiet:
    """How the drain ended: the sink idle, the pipeline caught up (None: its progress could
    not be observed), the Kafka sink free of open transactions (None: not a Kafka sink)."""

    idle: bool
    caught_up: bool | None
    sink_stable: bool | None
    waited_s: float
    lag: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.idle and self.caught_up is not False and self.sink_stable is not False

    def as_dict(self) -> dict[str, Any]:
        return {"idle": self.idle, "caught_up": self.caught_up, "sink_stable": self.sink_stable,
                "waited_s": round(self.waited_s, 3), "lag": self.lag}


class ProgressWatch:
    """Polls a ProgressReader every `interval_s` on its own thread and records each poll as a
    `progress` operation: `{"source", "groups": [{"group", "partitions": [[p, committed, end]],
    "lag"}], "final"?, "note"?}` (ok), or `{"error"}` (fail). `on_lag(total lag or None)` feeds
    the live display."""

    def __init__(self, reader: ProgressReader | None, source: str, history: History, interval_s: float = POLL_S,
                 on_lag: Callable[[int | None], None] | None = None) -> None:
        self.reader, self.source, self.history = reader, source, history
        self.interval_s = interval_s
        self.on_lag = on_lag or (lambda lag: None)
        self.latest: list[GroupProgress] | None = None  # groups of the latest ok poll
        self.latest_at = 0.0  # monotonic time of the latest ok poll
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # the `pipeline.progress` SQL refused by the server (a syntax error; a table or column
        # that is not there): the message, when (monotonic), and whether it can never be read
        self.broken: str | None = None
        self.broken_at = 0.0
        self.broken_for_good = False

    @property
    def note(self) -> str:
        if self.reader is None:
            return f"the pipeline's progress on {self.source} cannot be observed: give pipeline.progress"
        if self.broken is not None:
            return (f"{self.broken}: the pipeline's progress could not be read, so the drain did not wait for it "
                    "(as in a run without pipeline.progress)")
        return self.reader.note

    def _refused(self, e: Exception) -> None:
        """Note a poll the server refused as the query's fault (psycopg.ProgrammingError: a
        syntax error, an undefined table or column; SQLSTATE class 42): a syntax error can never
        be read; a missing table can be created by the pipeline later, so it counts only when
        it is still missing during the drain (caught_up)."""
        try:
            import psycopg
        except ImportError:  # pragma: no cover - a dependency of the project
            return
        if isinstance(e, psycopg.ProgrammingError):
            self.broken = f"pipeline.progress: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
            self.broken_at = time.monotonic()
            self.broken_for_good = self.broken_for_good or isinstance(e, psycopg.errors.SyntaxError)

    def poll(self, final: bool = False) -> list[GroupProgress] | None:
        """One read of the progress, recorded; the groups, or None when the read failed."""
        if self.reader is None:
            return None
        with self._lock:
            self.history.record("observer", "invoke", "progress", {"source": self.source})
            try:
                groups = self.reader.read()
            except Exception as e:  # noqa: BLE001 - a failed read is a fact, not a crash
                self.history.record("observer", "fail", "progress", {"source": self.source,
                                                                     "error": str(e)[:300]})
                self._refused(e)
                return None
            self.broken, self.broken_for_good = None, False
            value: dict[str, Any] = {"source": self.source, "groups": [g.as_value() for g in groups]}
            if final:
                value["final"] = True
            if not groups and self.reader.note:
                value["note"] = self.reader.note
            self.history.record("observer", "ok", "progress", value)
            self.latest, self.latest_at = groups, time.monotonic()
        self.on_lag(sum(g.lag for g in groups) if groups else None)
        return groups

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> "ProgressWatch":
        if self.reader is not None:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def close(self) -> None:
        self.stop()
        if self.reader is not None:
            self.reader.close()

    def caught_up(self, since: float) -> bool | None:
        """True when the latest poll made after `since` (monotonic) shows lag 0 on every
        partition of every group; None when no group can be observed."""
        if self.reader is None:
            return None
        if self.broken is not None and (self.broken_for_good or self.broken_at >= since):
            return None  # a query that cannot be read: the quiet sink alone ends the drain
        if self.latest is None or self.latest_at < since:
            return False
        if not self.latest:
            return None
        return all(g.lag == 0 for g in self.latest)

    def wait_caught_up(self, observer: Observer, sink: Sink, idle_s: float, max_s: float,
                       all_exited: Callable[[], bool] | None = None) -> Quiet:
        """The drain: until the sink has been idle for `idle_s` AND the pipeline caught up AND
        the sink has no open transaction, or `max_s` passed, or `all_exited()` says every
        replica of the pipeline has exited (nothing restarts one during the drain: nothing
        would apply more). Never raises for a slow pipeline: the returned Quiet says what was
        not reached."""
        t0 = time.monotonic()
        deadline = t0 + max_s
        observer.last_change = max(observer.last_change, t0)  # idle counts from now at the earliest
        stable: bool | None = None
        caught: bool | None = False
        idle = False
        exited = False
        asked = 0.0  # all_exited() at most once a second (a container's state is a `docker inspect`)
        while True:
            ask = all_exited is not None and time.monotonic() - asked >= 1.0
            if ask:
                asked = time.monotonic()
            if ask and all_exited is not None and all_exited():
                exited = True
                idle = time.monotonic() - observer.last_change >= idle_s
                caught = self.caught_up(t0)
                break
            now = time.monotonic()
            idle = now - observer.last_change >= idle_s
            caught = self.caught_up(t0)
            if idle and caught is not False:
                stable = _sink_stable(sink)
                if stable is not False:
                    break
            if now >= deadline:
                if stable is None and idle:
                    stable = _sink_stable(sink)
                break
            time.sleep(min(0.2, idle_s / 5))
        lag = sum(g.lag for g in self.latest) if self.latest else None
        quiet = Quiet(idle, caught, stable, time.monotonic() - t0, lag)
        if exited:
            quiet.notes.append(f"every replica of the pipeline had exited {quiet.waited_s:.1f}s into the drain and "
                               "nothing restarts one then: the drain stopped waiting for the pipeline to catch up")
        elif not idle:
            quiet.notes.append(f"the sink was still changing after quiesce.max={max_s:g}s")
        if caught is False and not exited:
            quiet.notes.append(f"the pipeline had not caught up with {self.source} after quiesce.max={max_s:g}s"
                               + (f" (lag {lag:,})" if lag is not None else ""))
            never = [g.group for g in self.latest or [] if all(c == -1 for _, c, _ in g.partitions)]
            if never:
                quiet.notes.append(f"consumer group {', '.join(never)} never committed offsets of {self.source}: "
                                   "if the pipeline keeps its positions elsewhere, give pipeline.progress")
        elif caught is None:
            quiet.notes.append(self.note + ("" if exited else "; the drain ended on a quiet sink alone"))
        if stable is False:
            quiet.notes.append(f"the sink {sink.name} still had an open transaction after quiesce.max={max_s:g}s")
        return quiet

    def final(self, sink: Sink, history: History) -> None:
        """Before the final read: the pipeline's final position (a last `progress` record with
        `final: true`; taken before the read, so a position it claims was reached before the
        read began), and a `sink-blocked` record if a read_committed read would stop early."""
        self.stop()
        if self.reader is None:  # say so in the history: the checker then cannot prove `lost`
            self.history.record("observer", "ok", "progress", {"source": self.source, "groups": [], "final": True,
                                                               "note": self.note})
        else:
            self.poll(final=True)
        record_sink_blocked(sink, history)


def _sink_stable(sink: Sink) -> bool | None:
    try:
        blocked = sink.unstable()
    except Exception:  # noqa: BLE001 - cannot tell: do not hold the drain on it
        return None
    if blocked is None:
        return None
    return not blocked


def record_sink_blocked(sink: Sink, history: History) -> list[dict[str, Any]]:
    """Partitions of a Kafka sink whose last stable offset is behind the log end (an open
    transaction hides everything after it from read_committed readers), recorded as one
    `sink-blocked` operation with the hanging transactions' producers and ages."""
    try:
        blocked = sink.unstable() or []
    except Exception:  # noqa: BLE001
        return []
    if not blocked:
        return []
    txns, note = hanging_transactions(sink, blocked)
    value: dict[str, Any] = {"sink": f"kafka:{sink.name}", "partitions": blocked, "transactions": txns}
    if note:
        value["note"] = note
    history.record("observer", "info", "sink-blocked", value)
    return blocked


def hanging_transactions(sink: Sink, blocked: list[dict[str, Any]]) -> tuple[list[dict[str, Any]] | None, str]:
    """The open transactions holding each blocked partition's last stable offset: producer id,
    epoch, the offset it started at, and its age (s since the producer's last write).

    confluent-kafka 2.12 has no transaction listing (Kafka's ListTransactions /
    DescribeProducers), so Kafka's own `kafka-transactions` tool (TransactionsCommand, from
    the installed Kafka jars) asks DescribeProducers per partition. Returns (None, why) when
    it cannot."""
    from onceproof.targets import kafka as kafka_target

    java = kafka_target.java()
    bootstrap = sink.deployment.kafka_bootstrap()
    if java is None:
        return None, "no java to run kafka-transactions: the hanging transaction's producer is not known"
    out: list[dict[str, Any]] = []
    now_ms = time.time() * 1000
    for b in blocked:
        try:
            res = subprocess.run([java, "-Xmx128m", "-XX:TieredStopAtLevel=1", "-cp", kafka_target.classpath(),
                                  "org.apache.kafka.tools.TransactionsCommand", "--bootstrap-server", bootstrap,
                                  "describe-producers", "--topic", sink.name, "--partition", str(b["partition"])],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return None, f"kafka-transactions describe-producers failed: {e}"
        rows = [line.split() for line in res.stdout.splitlines() if line.strip()]
        if res.returncode != 0 or not rows:
            return None, f"kafka-transactions describe-producers failed: {(res.stderr or res.stdout).strip()[-300:]}"
        head = rows[0]
        for row in rows[1:]:
            r = dict(zip(head, row))
            start = r.get("CurrentTransactionStartOffset", "None")
            if not start.lstrip("-").isdigit() or int(start) < 0:
                continue
            last = int(r.get("LastTimestamp", "0") or 0)
            out.append({"partition": b["partition"], "producer_id": int(r.get("ProducerId", "-1")),
                        "producer_epoch": int(r.get("ProducerEpoch", "-1")), "start_offset": int(start),
                        "age_s": round((now_ms - last) / 1000, 1) if last > 0 else None})
    return out, ""


@contextlib.contextmanager
def watching(plan: Any, deployment: Deployment, history: History,
             on_lag: Callable[[int | None], None] | None = None) -> Iterator[ProgressWatch]:
    """The progress watch of a run's plan (`workload.source`, `pipeline.groups`,
    `pipeline.progress`), polling on its own thread; stopped and its clients closed on exit."""
    reader = make_reader(plan.workload.source, deployment, plan.pipeline.groups, plan.pipeline.progress)
    watch = ProgressWatch(reader, plan.workload.source, history, max(POLL_S, plan.observe.interval), on_lag)
    watch.start()
    try:
        yield watch
    finally:
        watch.close()
