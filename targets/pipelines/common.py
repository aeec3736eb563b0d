"""Plumbing shared by the reference pipelines: the contract's environment, one-line logging,
Kafka client settings, and a PostgreSQL connection that reconnects and never hangs.

Every pipeline treats every runtime error as transient (log, back off, carry on); only a bad
configuration ends the process (exit code 2)."""
from __future__ import annotations

import json
import os
import re
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import psycopg
from psycopg import sql
from confluent_kafka import KafkaError, Message, TopicPartition

from onceproof.errors import OnceproofError
from onceproof.targets.deadline import SocketDeadline

T = TypeVar("T")
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
BATCH_MAX = 500
BATCH_WAIT = 0.1  # seconds


class BadConfig(OnceproofError):
    """The pipeline's environment (ONCEPROOF_* variables, flags) cannot be used."""


@dataclass
class Config:
    pipeline: str
    bootstrap: str
    postgres_dsn: str
    redis_url: str
    source_topic: str
    sink_kind: str
    sink_name: str
    replica: int
    replicas: int
    run_id: str
    session_timeout_ms: int

    @property
    def group(self) -> str:
        return f"onceproof-{self.run_id}"

    @property
    def instance(self) -> str:
        """Static group membership: a restarted replica takes its old place without a rebalance,
        so a kill costs its own partitions a restart, not the whole group a rebalance."""
        return f"onceproof-{self.run_id}-{self.replica}"


def load_config(pipeline: str, sink_kind: str) -> Config:
    env = os.environ

    def need(name: str) -> str:
        value = env.get(name, "").strip()
        if not value:
            raise BadConfig(f"{name} is not set")
        return value

    source = need("ONCEPROOF_SOURCE")
    sink = need("ONCEPROOF_SINK")
    s_kind, _, s_name = source.partition(":")
    k_kind, _, k_name = sink.partition(":")
    if s_kind != "kafka" or not TOPIC.match(s_name):
        raise BadConfig(f"ONCEPROOF_SOURCE={source!r}: {pipeline} reads kafka:<topic>")
    if k_kind != sink_kind or not (TOPIC if sink_kind == "kafka" else NAME).match(k_name):
        raise BadConfig(f"ONCEPROOF_SINK={sink!r}: {pipeline} writes {sink_kind}:<name>")
    try:
        replica = int(env.get("ONCEPROOF_REPLICA", "0"))
        replicas = int(env.get("ONCEPROOF_REPLICAS", "1"))
        session = int(env.get("ONCEPROOF_SESSION_TIMEOUT_MS", "6000"))
    except ValueError as e:
        raise BadConfig(f"bad integer in the environment: {e}") from e
    run_id = need("ONCEPROOF_RUN_ID")
    if not re.match(r"^[A-Za-z0-9._-]+$", run_id):
        raise BadConfig(f"ONCEPROOF_RUN_ID={run_id!r}: letters, digits, '.', '_', '-' only")
    return Config(pipeline, need("ONCEPROOF_KAFKA_BOOTSTRAP"),
                  need("ONCEPROOF_POSTGRES_DSN") if sink_kind == "postgres" else env.get(
                      "ONCEPROOF_POSTGRES_DSN", ""),
                  env.get("ONCEPROOF_REDIS_URL", ""), s_name, k_kind, k_name, replica, replicas, run_id,
                  session)


_prefix = "pipeline"
_replica = -1


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d} {_prefix}: {msg}\n")
    sys.stderr.flush()


ENVIRONMENT = """environment (set by onceproof for each replica):
  ONCEPROOF_KAFKA_BOOTSTRAP   host:port[,host:port] of the brokers
  ONCEPROOF_POSTGRES_DSN      postgresql://user:password@host:port/db (postgres sinks)
  ONCEPROOF_REDIS_URL         redis://host:port/0
  ONCEPROOF_SOURCE            kafka:<topic> to read the events from
  ONCEPROOF_SINK              <kind>:<name> to apply their effects to
  ONCEPROOF_REPLICA           this copy's index; ONCEPROOF_REPLICAS how many there are
  ONCEPROOF_RUN_ID            the run's id (names the consumer group)"""


def main(pipeline: str, sink_kind: str, run: Callable[[Config], None], doc: str | None = None) -> None:
    """Entry point: `--help` prints the contract; otherwise read the environment (exit 2 when it
    is wrong), then run forever."""
    global _prefix, _replica
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"python -m onceproof.targets.pipelines.{pipeline}",
        description=(doc or "").strip().splitlines()[0] if doc else f"onceproof reference pipeline {pipeline}",
        epilog=ENVIRONMENT, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    try:
        cfg = load_config(pipeline, sink_kind)
    except BadConfig as e:
        sys.stderr.write(f"{pipeline}: bad configuration: {e}\n")
        sys.exit(2)
    _replica = cfg.replica
    _prefix = f"{pipeline}[{cfg.replica}] pid {os.getpid()}"
    log(f"start: {cfg.source_topic} -> {cfg.sink_kind}:{cfg.sink_name}, group {cfg.group}")
    try:
        run(cfg)
    except KeyboardInterrupt:
        log("interrupted")


# --- Kafka ----------------------------------------------------------------------------------

_errors: dict[int, list[float]] = {}  # error code -> [last logged at, suppressed since]


def error_cb(err: KafkaError) -> None:
    """librdkafka's client-level errors (all brokers down, ...): one line per kind per 5 s."""
    now = time.monotonic()
    last = _errors.setdefault(err.code(), [0.0, 0])
    if now - last[0] < 5:
        last[1] += 1
        return
    more = f" (and {int(last[1])} more like it)" if last[1] else ""
    _errors[err.code()] = [now, 0]
    log(f"kafka: {err.str()}{more}")


def consumer_config(cfg: Config, **extra: Any) -> dict[str, Any]:
    return {
        "bootstrap.servers": cfg.bootstrap,
        "group.id": cfg.group,
        "group.instance.id": cfg.instance,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": max(300, cfg.session_timeout_ms // 4),
        "max.poll.interval.ms": max(60000, cfg.session_timeout_ms),
        "socket.timeout.ms": 10000,
        "reconnect.backoff.max.ms": 1000,
        "log.connection.close": False,
        "error_cb": error_cb,
        **extra,
    }


def subscribe_logged(consumer: Any, topic: str) -> None:
    """Subscribe to `topic`, logging each assignment and revocation (partition numbers)."""
    consumer.subscribe([topic], on_assign=lambda c, ps: log(f"assigned {sorted(tp.partition for tp in ps)}"),
                       on_revoke=lambda c, ps: log(f"revoked {sorted(tp.partition for tp in ps)}"))


def batch(consumer: Any) -> list[Message]:
    """Up to BATCH_MAX messages or BATCH_WAIT seconds; errors are logged and dropped."""
    out = []
    for m in consumer.consume(BATCH_MAX, BATCH_WAIT):
        if m.error():
            if m.error().fatal():
                # a consumer's only fatal error: another live consumer took our group.instance.id
                log(f"fatal: {m.error().str()}: two replicas run with ONCEPROOF_REPLICA={_replica}?")
                sys.exit(2)
            if m.error().code() != KafkaError._PARTITION_EOF:
                log(f"consume: {m.error()}")
        else:
            out.append(m)
    return out


def event(m: Message) -> dict[str, Any] | None:
    """The event a message carries, or None (logged) when it is not one."""
    try:
        ev = json.loads(m.value())
        return {"id": str(ev["id"]), "key": str(ev["key"]), "seq": int(ev["seq"])}
    except (ValueError, TypeError, KeyError) as e:
        log(f"skipping malformed message at {m.topic()}[{m.partition()}]@{m.offset()}: {e!r}")
        return None


def next_offsets(msgs: list[Message]) -> dict[int, tuple[int, int]]:
    """partition -> (first offset, last offset + 1) of a batch."""
    out: dict[int, tuple[int, int]] = {}
    for m in msgs:
        first, _ = out.get(m.partition(), (m.offset(), 0))
        out[m.partition()] = (first, m.offset() + 1)
    return out


def rewind(consumer: Any, topic: str, offsets: dict[int, int]) -> bool:
    """Seek partitions back; False when a seek failed (the caller must not trust positions)."""
    ok = True
    for p, off in offsets.items():
        try:
            consumer.seek(TopicPartition(topic, p, off))
        except Exception as e:  # noqa: BLE001 - e.g. the partition was revoked meanwhile
            log(f"seek {topic}[{p}] to {off}: {e}")
            ok = False
    return ok


# --- PostgreSQL -----------------------------------------------------------------------------

# Server-side limits: a replica that is paused or cut off inside a transaction releases its
# locks within seconds instead of blocking the others forever.
PG_OPTIONS = ("-c idle_in_transaction_session_timeout=5000 -c statement_timeout=8000 "
              "-c lock_timeout=8000")


class Postgres:
    """One connection, opened on demand. `transaction(fn)` runs fn(conn) in one transaction
    under a client-side deadline (a cut network can hold a socket open forever); on any error
    the connection is dropped and the error re-raised for the caller to decide."""

    def __init__(self, dsn: str, deadline: float = 10.0) -> None:
        self.dsn = dsn
        self.deadline = deadline
        self.conn: psycopg.Connection | None = None

    def connect(self) -> psycopg.Connection:
        delay = 0.1
        while self.conn is None or self.conn.closed:
            try:
                self.conn = psycopg.connect(self.dsn, connect_timeout=3, options=PG_OPTIONS,
                                            keepalives=1, keepalives_idle=5, keepalives_interval=2,
                                            keepalives_count=3)
            except psycopg.Error as e:
                log(f"postgres connect: {one_line(e)}")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        return self.conn

    def close(self) -> None:
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:  # noqa: BLE001
                pass
        self.conn = None

    def transaction(self, fn: Callable[[psycopg.Connection], T], autocommit: bool = False) -> T:
        conn = self.connect()
        conn.autocommit = autocommit
        with SocketDeadline(conn, self.deadline, on_shut=_log_shut):
            try:
                if autocommit:
                    return fn(conn)
                with conn.transaction():
                    return fn(conn)
            except psycopg.Error:
                self.close()  # a rollback on a healthy connection would do, but the fate is unsure
                raise

    def retry(self, what: str, fn: Callable[[psycopg.Connection], T], autocommit: bool = False) -> T:
        """transaction(fn) until it succeeds; only for idempotent work."""
        delay = 0.1
        while True:
            try:
                return self.transaction(fn, autocommit)
            except psycopg.Error as e:
                log(f"{what}: {one_line(e)}")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)


def _log_shut() -> None:
    log("postgres: operation over its deadline, connection shut down")


def one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def create_table(pg: Postgres, ddl: sql.Composed | sql.SQL | str) -> None:
    """CREATE TABLE IF NOT EXISTS is not race-safe (two creators collide on pg_type): serialize
    the creators with a transaction-scoped advisory lock."""
    def go(conn: psycopg.Connection) -> None:
        conn.execute("SELECT pg_advisory_xact_lock(hashtext('onceproof-ddl'))")
        conn.execute(ddl)
    pg.retry("create table", go)


def insert_effects(conn: psycopg.Connection, table: str, events: list[dict[str, Any]], replica: int) -> None:
    """One statement per batch: the arrays are sent as parameters and unnested server-side."""
    conn.execute(
        sql.SQL("INSERT INTO {} (event_id, key, seq, replica, applied_at) "
                        "SELECT e, k, s, %s, clock_timestamp() "
                        "FROM unnest(%s::text[], %s::text[], %s::bigint[]) AS u(e, k, s)"
                        ).format(sql.Identifier(table)),
        (replica, [e["id"] for e in events], [e["key"] for e in events], [e["seq"] for e in events]))
