"""read_replica: Kafka -> PostgreSQL primary, exactly once (kafka_to_postgres), with READS served
from the PostgreSQL streaming standby and a Redis cache, READ-YOUR-WRITES (linearizable per key)
through the primary's WAL position (LSN).

State: `onceproof_key_state(key, last_seq)`, the highest seq applied per key, upserted with
GREATEST in each batch's transaction (with its effect rows and positions: the state is never
ahead of or behind the effects).

Reads (the read contract of harness/reads.py): `GET /read?key=k` on 127.0.0.1:ONCEPROOF_READ_PORT
answers `{"value": last_seq or null}` from the path ONCEPROOF_READ_PATH names:
- `primary`: the row on the primary.
- `standby`: T = the primary's current WAL insert position (`pg_current_wal_insert_lsn()`, one
  cheap query); wait until the standby has replayed past T (`pg_last_wal_replay_lsn() >= T`,
  polling, at most ONCEPROOF_READ_WAIT_MS, default 1500; longer: answer 503, a failed read);
  then read the row on the standby. Every commit visible on the primary before the read began
  has its commit record before T, so the standby's snapshot holds it: the read is linearizable
  (PostgreSQL manual 27.4 "Hot Standby": a replayed commit is visible to new snapshots).
- `cache`: T as above; a Redis hash `onceproof:cache:<key>` {value, lsn} whose `lsn` >= T is an
  answer (it was filled from a standby snapshot that had replayed at least to lsn); otherwise the
  standby read above, with the standby's replay position R read BEFORE the row (so the snapshot
  holds everything up to R), and the cache filled with {value, R} by a Lua script that only ever
  raises `lsn` (a slow filler never puts an older snapshot over a newer one). No invalidation is
  needed: an entry is only used when it is recent enough for this read.

The writes a read must see are the pipeline's per-key state advances: each event's commit,
somewhere between its send and the observer's first sighting of its effect on the primary
(checkers/reads.py). Plan: plans/read-replica-correct.yaml (VALID), with a latency fault on the
standby's replication link.
"""
from __future__ import annotations

import http.server
import json
import os
import threading
import time
import urllib.parse
from typing import Any

import psycopg

from onceproof.targets.pipelines.common import Config, create_table, log, main, one_line
from onceproof.targets.pipelines.kafka_to_postgres import Pipeline

STATE_DDL = """CREATE TABLE IF NOT EXISTS onceproof_key_state (
    key text PRIMARY KEY, last_seq bigint NOT NULL)"""
ROW = "SELECT last_seq FROM onceproof_key_state WHERE key = %s"
INSERT_LSN = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"
REPLAY_LSN = "SELECT (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint"
CACHE = "onceproof:cache:"
# raise the entry to (value, lsn) only if lsn is above the entry's own
FILL = """local cur = redis.call('HGET', KEYS[1], 'lsn')
if (not cur) or tonumber(cur) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'lsn', ARGV[1], 'value', ARGV[2])
end
return 1"""


class Unavailable(Exception):
    """The read could not be served (the standby too far behind, a store unreachable): 503."""


class Reads:
    """The read path of one replica: thread-local connections to the primary and the standby,
    one Redis client. `read(key, path)` -> the key's last_seq or None; raises Unavailable or
    psycopg / redis errors (answered 503)."""

    def __init__(self, primary_dsn: str, standby_dsn: str, redis_url: str) -> None:
        self.primary_dsn, self.standby_dsn, self.redis_url = primary_dsn, standby_dsn, redis_url
        self.wait_s = int(os.environ.get("ONCEPROOF_READ_WAIT_MS") or 1500) / 1000
        self._local = threading.local()
        self._redis: Any = None
        self._fill: Any = None

    def conn(self, which: str) -> psycopg.Connection:
        conn = getattr(self._local, which, None)
        if conn is None or conn.closed:
            dsn = self.primary_dsn if which == "primary" else self.standby_dsn
            if not dsn:
                raise Unavailable(f"no {which} DSN in the environment")
            conn = psycopg.connect(dsn, autocommit=True, connect_timeout=2)
            setattr(self._local, which, conn)
        return conn

    def drop(self) -> None:
        """Close this thread's connections after an error (the next read opens new ones)."""
        for which in ("primary", "standby"):
            conn = getattr(self._local, which, None)
            if conn is not None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - a broken connection
                    pass
                setattr(self._local, which, None)

    def redis(self) -> Any:
        if self._redis is None:
            if not self.redis_url:
                raise Unavailable("no ONCEPROOF_REDIS_URL: the cache path needs Redis")
            from onceproof.targets.pipelines.dedup_cache import redis_client

            self._redis = redis_client(self.redis_url)
            self._fill = self._redis.register_script(FILL)
        return self._redis

    def one(self, which: str, query: str, args: tuple[Any, ...] = ()) -> Any:
        row = self.conn(which).execute(query, args).fetchone()
        return row[0] if row else None

    def primary_lsn(self) -> int:
        return int(self.one("primary", INSERT_LSN))

    def wait_replayed(self, target: int) -> int:
        """Poll the standby until it has replayed to `target`; its replay position. Raises
        Unavailable after wait_s."""
        deadline = time.monotonic() + self.wait_s
        while True:
            replayed = self.one("standby", REPLAY_LSN)
            if replayed is not None and int(replayed) >= target:
                return int(replayed)
            if time.monotonic() > deadline:
                raise Unavailable(f"the standby replayed to {replayed}, not {target}, within {self.wait_s} s")
            time.sleep(0.005)

    def read(self, key: str, path: str) -> int | None:
        if path == "primary":
            return self.one("primary", ROW, (key,))
        target = self.primary_lsn()
        if path == "cache":
            hit = self.redis().hgetall(CACHE + key)
            if hit and int(hit["lsn"]) >= target:
                return int(hit["value"]) if hit["value"] != "" else None
        replayed = self.wait_replayed(target)  # R, read before the row: the snapshot holds R
        value = self.one("standby", ROW, (key,))
        if path == "cache":
            self._fill(keys=[CACHE + key], args=[replayed, "" if value is None else value])
        return value


def serve(reads: Any, port: int, path: str) -> http.server.ThreadingHTTPServer:
    """Serve `GET /read?key=k` on 127.0.0.1:port with `reads.read(k, path)` in a daemon thread
    (one thread per client connection; HTTP/1.1 keep-alive)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - the library's name
            url = urllib.parse.urlsplit(self.path)
            key = (urllib.parse.parse_qs(url.query).get("key") or [""])[0]
            if url.path != "/read" or not key:
                return self._answer(404, {"error": "GET /read?key=<key>"})
            try:
                value = reads.read(key, path)
            except Exception as e:  # noqa: BLE001 - any failure is a read not served
                reads.drop()
                return self._answer(503, {"error": one_line(e)})
            self._answer(200, {"value": value})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="reads", daemon=True).start()
    return server


class ReadReplica(Pipeline):
    """kafka_to_postgres plus the per-key state and the read endpoint (`reads_class` serves)."""

    reads_class: type = Reads

    def setup(self) -> None:
        super().setup()
        create_table(self.pg, STATE_DDL)
        port = os.environ.get("ONCEPROOF_READ_PORT")
        if port:
            path = os.environ.get("ONCEPROOF_READ_PATH") or "standby"
            reads = self.reads_class(self.cfg.postgres_dsn, os.environ.get("ONCEPROOF_POSTGRES_STANDBY_DSN", ""),
                                     self.cfg.redis_url)
            serve(reads, int(port), path)
            log(f"serving reads from the {path} on 127.0.0.1:{port}")

    def write(self, conn: psycopg.Connection, events: list[dict[str, Any]]) -> None:
        super().write(conn, events)
        conn.execute(
            "INSERT INTO onceproof_key_state (key, last_seq) SELECT k, max(s) "
            "FROM unnest(%s::text[], %s::bigint[]) AS u(k, s) GROUP BY k ORDER BY k "
            "ON CONFLICT (key) DO UPDATE SET last_seq = GREATEST(onceproof_key_state.last_seq, excluded.last_seq)",
            ([e["key"] for e in events], [e["seq"] for e in events]))


def run(cfg: Config) -> None:
    ReadReplica(cfg).run()


if __name__ == "__main__":
    main("read_replica", "postgres", run, __doc__)
