"""Incremental observation of a PostgreSQL table by logical decoding.

A logical replication slot gives every INSERT, UPDATE and DELETE committed in the database, in
commit order, each with its row (PostgreSQL docs, "Logical Decoding"; `pg_logical_slot_get_*
changes`). Following it costs what changed since the last read, never a re-read of the table:
the observer's cost grows with the rate, not with the size of the sink. The server must run
with `wal_level = logical` (targets/postgres.py sets it).

Two output plugins, one chosen per table by `Follower.create()`:
- `pgoutput` (harness/pgoutput.py: binary messages, only the published table's changes sent,
  read as a replication stream, harness/pgstream.py, its INSERTs read by a compiled scanner):
  the path for our effects table and for a user's
  table that exists when the run starts and has a replica identity. It needs a publication of
  the table (all columns: a column list with REPLICA IDENTITY FULL would refuse the
  pipeline's UPDATEs), named as the slot.
- `test_decoding` (text lines), kept for the tables pgoutput cannot follow without harm: one
  without a replica identity (a publication would make the server refuse the pipeline's
  UPDATE and DELETE of it). It needs no publication.
Both feed the same content logic (`_inserted`, `_updated`, `_deleted`, `_truncated`).

A table the pipeline creates after the run started (most pipelines create their own) cannot
be named in a publication yet, and FOR ALL TABLES would publish, and so block, every table of
the user's without a replica identity. So the Follower starts "pending", with both: an empty
publication and its pgoutput slot, an event trigger (`ddl_command_end`, PostgreSQL docs,
"Event Triggers") that adds the table to the publication in the very transaction that creates
it when it has a replica identity by then (a primary key in its CREATE TABLE, or an ALTER
TABLE in the same transaction before any row went in), and a spare test_decoding slot. Both slots are made before the pipeline
starts, so each has every change. The first read that finds the table created keeps one: the
stream when the table was published, else the spare slot; the other is dropped.

The slot (and publication) is created before the pipeline starts (setup) and dropped by
`close()`; a slot left behind would hold back the server's WAL for ever, so `close()` is called
by the run's `clients_closed` scope even after a crash or Ctrl-C; both are named
`onceproof_<random>` so a leftover one is recognisable (a session's data reset drops them:
harness/session.py; `onceproof cleanup` removes the server of a dead run with them).

What a row counts for (`Rows`): one application per row (an insert-only effects table); with
`applied: <column>`, the column's value (a counter or version the pipeline bumps on each
re-application of an upsert); with `applied: xmin`, one application per row version, i.e.
the insert and every later UPDATE of the row. A DELETE removes the row's applications: the
read then returns the whole content (a `full` observe, so the checker sees the flicker).

When each effect became visible: every transaction's commit time, the server's wall clock
(pgoutput's Commit message; test_decoding's `include-timestamp`, `COMMIT (at <time>)`). `read()`
leaves in `visible` how many of the
new effects each commit made visible and when, in this process's monotonic clock: the server's
clock is read right after the changes (`clock_timestamp()`), and a commit `a` seconds before that
reading is placed `a` seconds before the local moment of the reading. A server whose clock is
skewed by a constant (a clock fault) thus gives the right times; a commit made before the clock
jumped (a clock fault applied or healed between two reads) is placed by the reading of the read
before (`visibility_runs`); whatever remains off is bounded by the observer (never later than the
read, never before the run started; harness/observer.py) and by the checker (never before the
event's send: the read's own time then).

Changes seen twice, or never (PostgreSQL docs, "Logical Decoding Concepts": a slot's confirmed
position is written to disk at checkpoints, so "a slot may return to an earlier LSN after a
crash, and the changes since then will be sent again"). After a SIGKILL of the server every
transaction committed since its last checkpoint is decoded again: a follower that applied them
twice recorded each such effect twice, a false `duplicate` on a correct pipeline (a run with two
`kill postgres` faults gave 7,501 of them; tests/integration/test_pg_redelivery.py). So the
follower remembers the commit LSN of the last transaction it applied (`applied_lsn`) and drops
any transaction whose commit LSN is not above it; decoding is in commit order, so they are a
prefix of a call's changes. The other way round (test_decoding; pgoutput's stream moves the
slot on only as far as the follower confirms what it applied, so it loses nothing this way), a
`pg_logical_slot_get_changes` call advances
the slot on the server before its rows reach us: a call that fails after that (a deadline that
fires mid-transfer, e.g. while the server was paused) lost changes the slot will not give again.
So the follower keeps the slot's confirmed position after each call it received (`_position`),
and after a failed call compares it with the server's: a slot that moved on without us makes the
follower `blind` (its final read reads the table in full rather than answer from what it
decoded); a slot that did not move (the call never ran) or moved back (a crash) loses nothing.

Speed (benchmarks/observer.py measures each step): with test_decoding a batch of changes is
joined into one text and the INSERTs of an effects table are parsed with one regex over the
whole batch (`_fast_inserts`); with pgoutput the stream decodes each change once, on the
server's walsender, while we parse (slot calls decoded again from the slot's restart point on
every call), the compiled library drains it, and the compiled scanner reads runs of INSERTs
and commits (`_apply_pgoutput`), Python the rest."""
from __future__ import annotations

import re
import secrets
from typing import Any, Callable

from onceproof import pgoutput
from onceproof.pgstream import ReplicationStream, stream_error
from onceproof.targets.deadline import SocketDeadline

Effect = list[Any]  # [id, key, seq, replica]

# `name[type]:value`: value is 'text with '' doubled', null, or a bare token (numbers, booleans)
_VALUE = r"('[^']*(?:''[^']*)*'|\S+)"  # a quoted text value (quotes doubled inside), or a bare token
_COLUMN = re.compile(r"""("(?:[^"]|"")+"|[^\s\[]+)\[([^\]]*(?:\[\])?)\]:""" + _VALUE)
BATCH = 50_000  # changes per pg_logical_slot_get_changes call (it stops at a transaction's end)
# after the stream ran dry, how long to let messages gather before draining again: the server
# sends each message on its own, so draining as each arrives costs a pass of our loop per
# message, on the cores the server decodes with (benchmarks/observer.py)
GATHER_S = 0.01
WORK_MEM = "64MB"  # a slot call keeps its changes in memory up to work_mem, else on disk
_COMMIT = re.compile(r"^COMMIT(?: \d+)? \(at ([^)\n]*)\)$", re.MULTILINE)
_COPY_ESCAPES = re.compile(r"\\(.)")
_UNESCAPED = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unescape(line: str) -> str:
    """A line of COPY's text format back to the text it stands for (`\\n` -> newline, ...)."""
    return _COPY_ESCAPES.sub(lambda m: _UNESCAPED.get(m[1], m[1]), line) if "\\" in line else line


def _epoch(ts: str) -> float | None:
    """test_decoding's commit time (ISO, the session's time zone: UTC here) -> seconds since the epoch."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(ts).timestamp()
    except ValueError:
        return None


def _value(raw: str) -> str | None:
    if raw[:1] == "'":
        return raw[1:-1].replace("''", "'")
    if raw == "null":
        return None
    return raw


def parse_row(text: str) -> dict[str, str | None]:
    """`col[type]:value ...` of test_decoding -> {col: text value or None}."""
    return {(n[1:-1].replace('""', '"') if n[:1] == '"' else n): _value(v) for n, _, v in _COLUMN.findall(text)}


def int_or_none(v: Any) -> int | None:
    """A column's or field's value as an int; None when it is null or not a whole number."""
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


JUMP_SLACK_NS = 2_000_000_000  # a commit may show up this long after the clock reading of the read before


def visibility_runs(commits: list[list[Any]], server_now_s: float, local_now_ns: int,
                    previous: tuple[float, int] | None = None) -> list[list[int]]:
    """Commits [[n, commit time (s since the epoch, the server's clock)], ...] -> [[n, t], ...]
    with t in the local monotonic clock (ns): a commit `a` s before the server's clock read
    `server_now_s` is placed `a` s before `local_now_ns`, the local moment of that reading. A
    constant offset of the server's clock (skew) cancels out; adjacent equal times are merged.
    `previous`: the reading of the read before, (server s, local ns). A commit this reading
    places outside the time between the two readings (less JUMP_SLACK_NS) is placed by the
    previous reading when that lands it there: the server's clock jumped between the readings
    (a clock fault applied or healed) and the commit was made on the other side of the jump."""
    def place(at: float, reading: tuple[float, int]) -> int:
        return reading[1] - int(round((reading[0] - at) * 1e9))

    runs: list[list[int]] = []
    for k, at in commits:
        t = place(at, (server_now_s, local_now_ns))
        if previous is not None and not previous[1] - JUMP_SLACK_NS <= t <= local_now_ns:
            u = place(at, previous)
            if previous[1] - JUMP_SLACK_NS <= u <= local_now_ns:
                t = u
        if runs and runs[-1][1] == t:
            runs[-1][0] += k
        else:
            runs.append([k, t])
    return runs


LEFTOVER = r"^onceproof_[0-9a-f]{12}$"  # how Follower names its slots, publication and event trigger

# The event trigger's function (see the module's doc): {name} is the slot's (and publication's,
# trigger's) name, {table} the table's qualified name as a literal. A member that loses its
# replica identity (a migration drops the primary key) leaves the publication, which would
# make the server refuse the pipeline's UPDATEs of it (found by a new user: a pipeline stalled
# on "cannot update table ... because it does not have a replica identity and publishes
# updates"; the final read reads the table). A table the command did not create is left
# alone; one created earlier in the transaction is
# added once an ALTER TABLE gives it a replica identity (a custom setting, local to the
# transaction, remembers what the CREATE made), unless rows went in before: those were decoded
# unpublished, so only the spare slot has them. CREATE TABLE AS and SELECT INTO are not
# watched (their rows go in before the trigger runs). Any error is a warning: the user's DDL
# never fails because of the observer (the table is then followed by the spare slot).
PUBLISH_CREATED = """
CREATE FUNCTION public.{name}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog AS $f$
DECLARE rel regclass; keyed boolean;
BEGIN
  rel := to_regclass({table});
  IF rel IS NULL THEN RETURN; END IF;
  keyed := EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = rel::oid AND c.relkind IN ('r', 'p')
             AND (c.relreplident IN ('f', 'i') OR c.relreplident = 'd' AND EXISTS (
               SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)));
  IF EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid
             WHERE p.pubname = '{name}' AND r.prrelid = rel::oid) THEN
    IF NOT keyed THEN  -- its replica identity is gone: published, every UPDATE would fail
      EXECUTE format('ALTER PUBLICATION %I DROP TABLE %s', '{name}', rel);
    END IF;
    RETURN;
  END IF;
  IF tg_tag = 'ALTER TABLE' THEN
    IF current_setting('onceproof.created_{token}', true) IS DISTINCT FROM rel::oid::text
       OR pg_stat_get_xact_tuples_inserted(rel::oid) > 0 THEN RETURN; END IF;
  ELSE
    IF NOT EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() d
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = rel::oid) THEN RETURN; END IF;
    PERFORM set_config('onceproof.created_{token}', rel::oid::text, true);
  END IF;
  IF keyed THEN
    EXECUTE format('ALTER PUBLICATION %I ADD TABLE %s', '{name}', rel);
  END IF;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'onceproof observer: % not published (followed another way): %', rel, SQLERRM;
END
$f$;
CREATE EVENT TRIGGER {name} ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
  EXECUTE FUNCTION public.{name}();
"""


def _drop_slot(conn: Any, slot: str) -> None:
    """Drop `slot` if it exists, waiting up to 5 s for a walsender that still holds it (a
    stream just closed: the server notices a moment later). Raises psycopg.Error."""
    import time

    import psycopg

    end = time.monotonic() + 5.0
    while True:
        try:
            conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                         "WHERE slot_name = %s", (slot,))
            return
        except psycopg.errors.ObjectInUse:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def close_quietly(conn: Any) -> None:
    """Close a psycopg connection (or None) whatever state it is in. Never raises."""
    try:
        if conn is not None:
            conn.close()
    except Exception:  # noqa: BLE001 - a connection whose server went away
        pass


def drop_leftovers(conn: Any) -> list[str]:
    """Drop the slots no session reads (not active) and the publications that a Follower
    named (`onceproof_<12 hex>`) on the server of `conn` (autocommit): what the observer of a
    run that died left; a slot would hold back the server's WAL, a publication would publish
    a table of the next run. Only between runs (a live Follower's publication is dropped too).
    Returns the names dropped. Raises psycopg.Error."""
    from psycopg import sql

    slots = [r[0] for r in conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE slot_name ~ %s AND NOT active", (LEFTOVER,))]
    for slot in slots:
        conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    pubs = [r[0] for r in conn.execute("SELECT pubname FROM pg_publication WHERE pubname ~ %s", (LEFTOVER,))]
    for pub in pubs:
        conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(pub)))
    triggers = [r[0] for r in conn.execute("SELECT evtname FROM pg_event_trigger WHERE evtname ~ %s", (LEFTOVER,))]
    funcs = [r[0] for r in conn.execute("SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                                        "WHERE n.nspname = 'public' AND p.proname ~ %s", (LEFTOVER,))]
    for name in set(triggers) | set(funcs):
        _drop_trigger(conn, name)
    return sorted(set(slots) | set(pubs) | set(triggers) | set(funcs))


def _drop_trigger(conn: Any, name: str) -> None:
    """Drop the event trigger `name` and its function, if they exist. Raises psycopg.Error."""
    from psycopg import sql

    conn.execute(sql.SQL("DROP EVENT TRIGGER IF EXISTS {}").format(sql.Identifier(name)))
    conn.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier("public", name)))


class MappingError(ValueError):
    """The plan's sink mapping does not fit the user's store: it names a column the table does
    not have, or its query still fails at the final read."""


class Columns:
    """Where an effect's id, key, seq and replica sit in a row of named values (a decoded row,
    a Redis stream entry or hash): the names of those columns (key, seq, replica may be None)."""

    def __init__(self, id_col: str, key_col: str | None, seq_col: str | None, replica_col: str | None = None) -> None:
        self.id_col, self.key_col, self.seq_col, self.replica_col = id_col, key_col, seq_col, replica_col

    def effect(self, row: dict[str, Any]) -> Effect:
        """[id, key, seq, replica] of `row` (seq and replica as ints; None where absent)."""
        return [row.get(self.id_col), row.get(self.key_col) if self.key_col else None,
                int_or_none(row.get(self.seq_col)) if self.seq_col else None,
                int_or_none(row.get(self.replica_col)) if self.replica_col else None]


class Rows(Columns):
    """The table's rows as applications: row identity -> [effect, applications], in first
    insertion order. The columns (`Columns`) are the table's for id, key, seq, replica;
    `applied` as in the module's doc."""

    def __init__(self, id_col: str, key_col: str | None, seq_col: str | None, replica_col: str | None = None,
                 applied: str | None = None, where: str | None = None) -> None:
        super().__init__(id_col, key_col, seq_col, replica_col)
        self.applied = applied
        self.where = where  # the plan field naming the columns (None: our own table, not checked)
        self.checked = False
        self.rows: dict[Any, list[Any]] = {}  # identity -> [effect, applications]
        self.by_id: dict[str, list[Any]] = {}  # event id -> identities of its rows, oldest first

    def check_columns(self, names: list[str]) -> None:
        """Raise MappingError when a column the plan names is not one of the table's `names`
        (the first decoded row's): else its value would read as null for the whole run, a
        silent VALID for a misnamed key and every event `lost` for a misnamed id (found by a
        user's plan with `key: custmer`)."""
        if self.checked or self.where is None:
            return
        named = {"id": self.id_col, "key": self.key_col, "seq": self.seq_col}
        if self.applied not in (None, "xmin"):
            named["applied"] = self.applied
        missing = [(f, c) for f, c in named.items() if c and c not in names]
        if missing:
            raise MappingError("; ".join(f"{self.where}.{f}: the table has no column {c!r}" for f, c in missing)
                               + f" (its columns: {', '.join(names)})")
        self.checked = True

    def count(self, row: dict[str, str | None], before: int) -> int:
        """Applications a row version stands for, given the row's count before it (0 = new)."""
        if self.applied is None:
            return 1
        if self.applied == "xmin":
            return before + 1
        n = int_or_none(row.get(self.applied))
        return max(n, 1) if n is not None else max(before, 1)

    def expand(self) -> list[Effect]:
        """Every application of the content, in row order."""
        return [e for e, n in self.rows.values() for _ in range(n)]


class Follower:
    """Follows one table of the database at `dsn` through a logical replication slot.

    `read()` -> (effects, full): the applications new since the last read (full=False), or the
    whole content when a row was deleted or the table truncated (full=True). `final_read()`
    reads the rest of the slot and returns the whole content. Raises psycopg.Error when the
    server cannot be read (the observer records a failed observe)."""

    def __init__(self, dsn: str, table: str, rows: Rows, schema: str = "public",
                 full_select: Callable[[], list[Effect]] | None = None) -> None:
        self.dsn, self.rows = dsn, rows
        self.schema, self.table = schema, table
        self.prefix = f"table {schema}.{table}: "
        self.plugin = "test_decoding"  # or "pgoutput", or "pending" until the table exists: see create()
        self.spare: str | None = None  # pending: the test_decoding slot kept beside the pgoutput one
        self._relid: bytes | None = None  # pgoutput: the table's oid (4 bytes), from its Relation message
        self._cols: list[str] = []
        self._fast: Callable[[list[Any]], Effect] | None = None  # see _fast_effect
        self._want: list[int] = [-1, -1, -1, -1]  # column indexes of id, key, seq, replica (-1: none)
        self._done = 0  # see _apply_pgoutput
        self._final_lsn = 0  # the last Begin's final LSN (its Commit must carry it)
        self.applied_lsn = -1  # the commit LSN of the last transaction applied (-1: none; see the module's doc)
        self.redelivered = 0  # transactions decoded again after a server crash, dropped
        self._position = 0  # the slot's confirmed LSN after the last call received (see the module's doc)
        self._suspect = False  # a call failed: did the slot move on without us? (`_check_position`)
        self._stream: Any = None  # pgoutput: the slot's replication stream (harness/pgstream.py)
        # the table's replica identity columns (None: not known yet; see _row_of) and, built when
        # an UPDATE needs it, the rows by the values of those columns (when the plan maps them all)
        self._key_cols: list[str] | None = None
        self._fields: list[int] | None | bool = False  # `_key_fields`, worked out once per `_key_cols`
        self._keymap: dict[tuple, int] | None = None
        self.confirmed_end = 0  # pgoutput: the end LSN of the last transaction applied (confirmed to the server)
        self.full_select = full_select
        # after a read that returned the whole content: the applications it decoded on the way
        # (an insert and the delete of its row in one read would otherwise never be seen)
        self.passing: list[Effect] = []
        self.slot = "onceproof_" + secrets.token_hex(6)
        self.conn: Any = None
        self.next_identity = 0
        # with a full_select and one application per row, the table itself is the content: rows
        # are not kept here, and anything but an insert reads the table in full (`_reload`)
        self.track = full_select is None or rows.applied is not None
        self.count = 0
        self.blind = False  # a delete that did not say which row: the final read reads the table
        self._shape: tuple[re.Pattern[str], Callable[[tuple], Effect]] | None = None  # see _insert_pattern
        # the last read's new effects by commit: [[n, commit time (s since the epoch, server clock)], ...]
        self._commits: list[list[Any]] = []
        self.visible: list[list[int]] | None = None  # see read(): [[n, monotonic ns], ...] or None
        self._reading: tuple[float, int] | None = None  # the last reading of the server's clock: (s, local ns)

    def _connect(self) -> Any:
        import psycopg

        if self.conn is None or self.conn.closed:
            # commit times in UTC whatever the server's time zone (test_decoding prints them in the session's)
            self.conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, options=f"-c TimeZone=UTC -c work_mem={WORK_MEM}")
        return self.conn

    def create(self, plugin: str | None = None) -> None:
        """Create the slot now: every change committed from now on will be read. With pgoutput
        (`publishable`) a publication of the table, all its columns, named as the slot, first.
        `plugin="test_decoding"` forces the text plugin (benchmarks/observer.py compares them).
        Raises psycopg.Error (the server cannot decode: the caller re-reads the table instead)."""
        conn = self._connect()
        if plugin != "test_decoding" and self.publishable(conn):
            import psycopg
            from psycopg import sql

            try:
                # a partitioned table's changes are its partitions': published as the table's own
                conn.execute(sql.SQL("CREATE PUBLICATION {} FOR TABLE {} WITH (publish_via_partition_root = true)").format(
                    sql.Identifier(self.slot), sql.Identifier(self.schema, self.table)))
                try:
                    self._create_trigger(conn)
                except psycopg.Error:  # no event triggers here (not a superuser): the publication stays as made
                    pass
                conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (self.slot,))
            except Exception:
                self.close()  # the publication and trigger, if made
                raise
            self.plugin = "pgoutput"
            return
        if plugin is None and not self.exists(conn):
            import psycopg

            try:
                self._create_pending(conn)
                return
            except psycopg.Error:  # not allowed here (event triggers need a superuser): the text plugin
                self._drop_pending(conn)
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (self.slot,))
        self.plugin = "test_decoding"

    def exists(self, conn: Any) -> bool:
        """Whether the table exists now (committed). Raises psycopg.Error."""
        from psycopg import sql

        name = sql.Identifier(self.schema, self.table).as_string(conn)
        return bool(conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()[0])

    def _create_pending(self, conn: Any) -> None:
        """A table that does not exist yet (see the module's doc): an empty publication, the
        event trigger that publishes the table when it is created with a replica identity, its
        pgoutput slot and the spare test_decoding slot. Raises psycopg.Error (the caller drops
        what was made)."""
        from psycopg import sql

        name = self.slot
        self.spare = "onceproof_" + secrets.token_hex(6)
        conn.execute(sql.SQL("CREATE PUBLICATION {} WITH (publish_via_partition_root = true)").format(
            sql.Identifier(name)))
        self._create_trigger(conn)
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (name,))
        conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (self.spare,))
        self.plugin = "pending"

    def _create_trigger(self, conn: Any) -> None:
        """The event trigger that keeps the publication right as the pipeline's DDL runs
        (PUBLISH_CREATED), named as the slot. Raises psycopg.Error (e.g. not a superuser)."""
        from psycopg import sql

        table = sql.Literal(sql.Identifier(self.schema, self.table).as_string(conn)).as_string(conn)
        conn.execute(PUBLISH_CREATED.format(name=self.slot, token=self.slot.split("_")[1], table=table).encode())

    def _drop_pending(self, conn: Any) -> None:
        """Drop what `_create_pending` made (any part of it). Never raises."""
        from psycopg import sql

        steps: list[Callable[[], Any]] = [
            lambda: _drop_trigger(conn, self.slot),
            lambda: conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.slot))),
            lambda: _drop_slot(conn, self.slot)]
        if self.spare is not None:
            spare = self.spare
            steps.append(lambda: _drop_slot(conn, spare))
        for step in steps:
            try:
                step()
            except Exception:  # noqa: BLE001 - the rest is dropped all the same
                pass
        self.spare = None

    def _decide(self, timeout: float) -> bool:
        """Pending: once the table exists, keep the stream when the table was published (drop
        the spare slot) or else the spare test_decoding slot (drop the stream's slot, its
        publication and the event trigger). False while the table does not exist yet. Raises
        psycopg.Error."""
        conn = self._connect()
        with SocketDeadline(conn, timeout):
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM pg_publication_rel r JOIN pg_publication p ON p.oid = r.prpubid "
                "WHERE p.pubname = %s AND r.prrelid = c.oid) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                (self.slot, self.schema, self.table)).fetchone()
            if row is None:
                return False
            spare, self.spare = self.spare, None
            if row[0]:
                _drop_slot(conn, spare or "")
                self.plugin = "pgoutput"
            else:
                from psycopg import sql

                _drop_trigger(conn, self.slot)
                conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.slot)))
                _drop_slot(conn, self.slot)
                self.slot, self.plugin = spare or self.slot, "test_decoding"
        return True

    def publishable(self, conn: Any) -> bool:
        """Whether the table can be followed by pgoutput without ever blocking the pipeline: it
        exists now (a publication names existing tables; FOR ALL TABLES would publish every
        table of the user's) and is a plain or partitioned table (its partitions' changes then
        come under its own name: `publish_via_partition_root`) with a replica identity, REPLICA IDENTITY FULL,
        USING INDEX, or the default with a primary key. A published table without one refuses
        every UPDATE and DELETE ("cannot update table ... because it does not have a replica
        identity and publishes updates", PostgreSQL docs, "Publication"): such a table is
        followed by test_decoding, which needs no publication (one the pipeline creates later:
        see the module's doc)."""
        row = conn.execute(
            "SELECT c.relkind, c.relreplident, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
            "AND i.indisprimary) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relname = %s", (self.schema, self.table)).fetchone()
        return row is not None and row[0] in ("r", "p") and (row[1] in ("f", "i") or row[1] == "d" and row[2])

    def close(self) -> None:
        """Drop the slot (no WAL held back after the run), the publication and the connection.
        Never raises."""
        if self._stream is not None:  # the slot is active while its stream is open
            self._stream.free()
        try:
            conn = self._connect()
            with SocketDeadline(conn, 10.0):
                if self.plugin == "pending":
                    self._drop_pending(conn)
                _drop_slot(conn, self.slot)
                from psycopg import sql

                conn.execute(sql.SQL("DROP PUBLICATION IF EXISTS {}").format(sql.Identifier(self.slot)))
                _drop_trigger(conn, self.slot)
        except Exception:  # noqa: BLE001 - the server may be gone already: nothing is held then
            pass
        close_quietly(self.conn)
        self.conn = None

    def _stream_open(self, timeout: float) -> Any:
        """The slot's replication stream (harness/pgstream.py), opened (again, after a failure:
        the same object keeps what it confirmed)."""
        if self._stream is None:
            self._stream = ReplicationStream(self.dsn, self.slot, self.slot)
        if not self._stream.is_open:
            self._stream.open(timeout)
        return self._stream

    def _insert_lsn(self, timeout: float) -> int:
        """The server's WAL insert position now: every transaction committed so far (even
        asynchronously) ends before it. Raises psycopg.Error."""
        conn = self._connect()
        try:
            with SocketDeadline(conn, timeout):
                return int(conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()[0])
        except Exception:
            close_quietly(conn)
            raise

    def _stream_read(self, out: list[Effect], timeout: float, budget_s: float, final: bool) -> bool:
        """pgoutput's read: the transactions committed before the read started (the server's
        insert position then: `_insert_lsn`), as the stream brings them, applied to the content
        (`_apply_pgoutput`; new applications to `out`), each confirmed once applied. Stops once
        the server said it has sent everything before that position and no transaction is
        half received, or after `budget_s` (the rest comes with the next read). True when a
        row went away. Raises psycopg.Error: the server cannot be read, or, for the `final`
        read, did not send everything within `budget_s`."""
        import time

        target = self._insert_lsn(timeout)
        stream = self._stream_open(timeout)
        vanished, asked = False, 0.0
        deadline = time.monotonic() + budget_s
        try:
            while True:
                more = stream.pump()
                batch = stream.take()
                if batch is not None:
                    vanished = self._apply_pgoutput(batch, out) or vanished
                    stream.confirm(self.confirmed_end)
                if stream.wal_end >= target and not stream.partial:
                    return vanished
                now = time.monotonic()
                if now >= deadline:
                    if final:
                        raise stream_error(f"{self.prefix}the server did not send its changes up to "
                                             f"the end of the run within {budget_s:g} s")
                    return vanished
                if not more:
                    if now - asked >= 0.05:  # where is the server? (a keepalive answers)
                        stream.request_reply()
                        asked = now
                    stream.wait(min(0.05, deadline - now))
                    time.sleep(GATHER_S)
        except Exception:
            stream.close()
            raise

    def _apply_pgoutput(self, batch: pgoutput.Batch | list[bytes], out: list[Effect]) -> bool:
        """Apply pgoutput messages (harness/pgoutput.py; a Batch, or a list of messages) to the
        content, as `_apply` does the text of test_decoding: new applications to `out`, each
        commit's count and time to `_commits`; True when a row went away. The runs of INSERTs
        and commits are read by the compiled scanner when it is built and the rows count once
        each (`_fast_effect`), the other messages (and all of them without it) by
        `_py_messages`. Raises pgoutput.OrderError when the messages are not in the server's
        order (never seen; the final read of an effects table reads the table all the same)."""
        if isinstance(batch, list):
            batch = pgoutput.Batch.of(batch)
        self._done = len(out)  # effects in `out` at the last commit
        lib = pgoutput.native()
        vanished, i, n = False, self._skip_applied(batch), batch.n
        while i < n:
            if lib is not None and self._fast is not None and self._relid is not None:
                end, effects, commits, self._final_lsn = batch.scan(lib, i, self._relid, self._want, self._final_lsn)
                self._scanned(effects, commits, out)
                i = end
                if i >= n:
                    break
            got = self._py_messages([batch.message(i)] if lib is not None else
                                    [batch.message(j) for j in range(i, n)], out)
            if got == 2:
                return True
            vanished = vanished or got == 1
            if lib is None:
                break
            i += 1
        if n and batch.message(n - 1)[0] == 67:  # a batch ends at a Commit: its Begin's final LSN
            self.applied_lsn = max(self.applied_lsn, self._final_lsn)
            self.confirmed_end = max(self.confirmed_end, pgoutput.end_lsn(batch.message(n - 1)))
        return vanished

    def _skip_applied(self, batch: pgoutput.Batch) -> int:
        """The index of the first message of `batch` that is not part of a transaction applied
        already (a Begin whose final LSN is not above `applied_lsn`: decoded again after a
        server crash, see the module's doc); the Relation messages among those skipped are
        still read (they describe the table for what follows)."""
        i, n = 0, batch.n
        while i < n:
            m = batch.message(i)
            if m[0] != 66 or pgoutput.final_lsn(m) > self.applied_lsn:  # not a Begin of an applied one
                return i
            i += 1
            while i < n and batch.message(i)[0] != 67:  # to its Commit
                if batch.message(i)[0] == 82:  # 'R'
                    self._py_messages([batch.message(i)], [])
                i += 1
            i += 1
            self.redelivered += 1
        return i

    def _scanned(self, effects: list[Effect], commits: list[list[Any]], out: list[Effect]) -> None:
        """The compiled scanner's effects and commits, applied."""
        base = len(out)
        if self.track:
            for eff in effects:
                self._add(eff, 1, out)
        else:
            out.extend(effects)
            self.count += len(effects)
        for rows, at in commits:
            if base + rows > self._done:
                self._commits.append([base + rows - self._done, at])
            self._done = base + rows

    def _py_messages(self, msgs: list[bytes], out: list[Effect]) -> int:
        """`_apply_pgoutput` in Python, message by message: 0, 1 when a row went away, 2 when
        the table (the content itself, not tracked) changed otherwise than by an INSERT: the
        caller then reads it in full. The publication names the table only, but a message of
        another relation is skipped all the same."""
        vanished = 0
        rel, fast, track = self._relid, self._fast, self.track
        for m in msgs:
            k = m[0]
            if k == 73:  # 'I'
                if m[1:5] != rel:
                    continue
                vals = pgoutput.tuple_data(m, 6)[0]
                if fast is not None:
                    eff = fast(vals)
                    if track:
                        self._add(eff, 1, out)
                    else:
                        out.append(eff)
                        self.count += 1
                else:
                    self._inserted(pgoutput.row(self._cols, vals), out)
            elif k == 66:  # 'B'
                self._final_lsn = pgoutput.final_lsn(m)
            elif k == 67:  # 'C'
                if pgoutput.commit_lsn(m) != self._final_lsn:
                    raise pgoutput.OrderError("pgoutput: a Commit that is not its Begin's")
                self.applied_lsn = max(self.applied_lsn, self._final_lsn)
                if len(out) > self._done:
                    self._commits.append([len(out) - self._done, pgoutput.commit_time(m)])
                self._done = len(out)
            elif k == 82:  # 'R'
                oid, schema, name, cols = pgoutput.relation(m)
                if (schema or "pg_catalog", name) == (self.schema, self.table):
                    self.rows.check_columns(cols)
                    self._relid, self._cols, self._fast = oid, cols, self._fast_effect(cols)
                    self._key_cols, self._fields, self._keymap = pgoutput.key_columns(m), False, None
                    r = self.rows
                    self._want = [cols.index(c) if c is not None and c in cols else -1
                                  for c in (r.id_col, r.key_col, r.seq_col, r.replica_col)]
                    rel, fast = self._relid, self._fast
            elif k in (85, 68, 84):  # 'U', 'D', 'T'
                if k == 84:
                    if rel not in pgoutput.truncated(m):
                        continue
                elif m[1:5] != rel:
                    continue
                if not track:  # the table itself is the content: read() reads it in full
                    return 2
                if k == 85:
                    old_vals, new_vals = pgoutput.update_tuples(m)
                    old = pgoutput.row(self._cols, old_vals) if old_vals is not None else None
                    vanished = max(vanished, int(self._updated(pgoutput.row(self._cols, new_vals, old), out, old)))
                elif k == 68:
                    self._deleted(pgoutput.row(self._cols, pgoutput.tuple_data(m, 6)[0]))
                    vanished = 1
                else:
                    self._truncated()
                    vanished = 1
        return vanished

    def _fast_effect(self, cols: list[str]) -> Callable[[list[Any]], Effect] | None:
        """For a table whose rows count once each (no `applied`): a function from an INSERT's
        values straight to its effect (no dict of the row); None otherwise."""
        r = self.rows
        if r.applied is not None or r.id_col not in cols:
            return None
        idx = [cols.index(c) if c is not None and c in cols else None for c in
               (r.id_col, r.key_col, r.seq_col, r.replica_col)]

        def text(v: Any) -> str | None:
            return v.decode() if v is not None and v is not pgoutput.UNCHANGED else None

        def num(v: Any) -> int | None:
            try:
                return int(v) if v is not None and v is not pgoutput.UNCHANGED else None
            except ValueError:
                return None
        i, k, s, p = idx
        assert i is not None  # r.id_col in cols
        if k is not None and s is not None and p is not None:  # our effects table: all four
            def effect4(v: list[Any]) -> Effect:
                a, b, c, d = v[i], v[k], v[s], v[p]
                try:
                    return [a.decode(), b.decode(), int(c), int(d)]
                except (AttributeError, ValueError):  # a null, an unchanged value, not a number
                    return [text(a), text(b), num(c), num(d)]
            return effect4
        return lambda v: [text(v[i]), text(v[k]) if k is not None else None, num(v[s]) if s is not None else None,
                          num(v[p]) if p is not None else None]

    def _changes(self, timeout: float) -> tuple[str, int]:
        """The next changes of the slot (at most about BATCH, whole transactions) as one text, a
        change a line (each ended by a newline), and how many changes; a backslash or a newline
        inside a change escaped as COPY's text format does (`_unescape` undoes it)."""
        got = self._slot_call(self._connect(), timeout, lambda c: c.execute(
            "SELECT (lsn - '0/0'::pg_lsn)::bigint, data FROM pg_logical_slot_get_changes(%s, NULL, %s, "
            "'include-xids', '0', 'include-timestamp', '1')", (self.slot, BATCH)).fetchall())
        n = len(got)
        rows = [r[1] for r in got[self._applied_prefix(got):]]
        if got and got[-1][1].startswith("COMMIT"):
            self.applied_lsn = max(self.applied_lsn, got[-1][0])
        if not rows:
            return "", n
        text = "\n".join(rows) + "\n"
        if "\\" in text or text.count("\n") != len(rows):  # escaped as in COPY's text format
            text = "".join(r.replace("\\", "\\\\").replace("\n", "\\n") + "\n" for r in rows)
        return text, n

    def _slot_call(self, conn: Any, timeout: float, call: Callable[[Any], Any]) -> Any:
        """`call(conn)` (a slot function's query) within `timeout` s, with the slot's position
        checked before it and kept after it (see the module's doc). Raises psycopg.Error after
        closing `conn` (the next call connects again)."""
        import psycopg

        try:
            with SocketDeadline(conn, timeout):
                self._check_position(conn)
                got = call(conn)
                self._position = self._slot_position(conn)
                return got
        except psycopg.Error:
            self._suspect = True
            close_quietly(conn)
            raise

    def _slot_position(self, conn: Any) -> int:
        """The slot's confirmed LSN on the server, as a number (0: no such slot). Raises
        psycopg.Error."""
        row = conn.execute("SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::bigint FROM pg_replication_slots "
                           "WHERE slot_name = %s", (self.slot,)).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def _check_position(self, conn: Any) -> None:
        """After a failed call: if the slot's confirmed position is past the one after the last
        call we received, that call's changes were consumed without reaching us: `blind`. Raises
        psycopg.Error (the check is made again by the next call)."""
        if self._suspect:
            if self._slot_position(conn) > self._position:
                self.blind = True
            self._suspect = False

    def _applied_prefix(self, got: list[tuple[int, str]]) -> int:
        """How many of test_decoding's (lsn, text) rows belong to transactions applied already:
        those up to the last COMMIT whose LSN is not above `applied_lsn` (see the module's
        doc; a COMMIT row's LSN is its commit record's, increasing in commit order)."""
        cut = 0  # the common case stops at the first COMMIT (above: nothing to drop)
        for i, (lsn, text) in enumerate(got):
            if text.startswith("COMMIT"):
                if lsn > self.applied_lsn:
                    break
                cut = i + 1
                self.redelivered += 1
        return cut

    def _insert_pattern(self, line: str) -> tuple[re.Pattern[str], Callable[[tuple], Effect]] | None:
        """From one decoded INSERT of the table: a regex matching every INSERT line of it with
        the same columns, capturing only id, key, seq and replica (text unquoted, integers as
        digits), and a function making the effect of one match. None: no such pattern."""
        body = line[len(self.prefix) + len("INSERT: "):]
        cols = _COLUMN.findall(body)
        if not cols:
            return None
        names = [n for n, _, _ in cols]
        r = self.rows
        r.check_columns(names)
        want = [r.id_col, r.key_col, r.seq_col, r.replica_col]
        if r.id_col not in names or r.applied is not None:
            return None
        last = max(names.index(c) for c in want if c in names)  # the columns after it are skipped
        parts, exprs, group = [], ["None"] * 4, 0
        for n, t, _ in cols[:last + 1]:
            head = re.escape(f"{n}[{t}]:")
            # the fast path takes only batches without '' (a quote inside a value): a quoted value is '[^']*'
            if n not in want:
                parts.append(head + "(?:'[^']*'|\\S+)")
                continue
            slot = want.index(n)
            if t in ("text", "character varying", "varchar", "name") and slot < 2:
                parts.append(head + "'([^']*)'")
                exprs[slot] = f"t[{group}]"
            elif t in ("bigint", "integer", "smallint") and slot >= 2:
                parts.append(head + "(-?\\d+)")
                exprs[slot] = f"int(t[{group}])"
            else:
                return None  # another type (or a null): the line-by-line parser
            group += 1
        # the columns after the last one wanted: the rest of the line, skipped in one step
        rx = "^" + re.escape(self.prefix + "INSERT: ") + " ".join(parts) + (" [^\\n]*" if last + 1 < len(cols) else "$")
        if group == 1:  # findall gives strings, not tuples, for one group
            exprs = [e.replace("t[0]", "t") for e in exprs]
        make = eval(f"lambda t: [{', '.join(exprs)}]", {"int": int})  # noqa: S307 - our own expression
        return re.compile(rx, re.MULTILINE), make

    def _fast_inserts(self, text: str, out: list[Effect]) -> bool:
        """A batch (COPY text, one change a line) whose lines for the table are all INSERTs of one
        row shape (an effects table: the common case) parsed with one regex over the whole batch,
        the commits counted between them. False: not such a batch, nothing done (the caller goes
        line by line)."""
        head = self.prefix + "INSERT: "
        n_mine = text.startswith(self.prefix) + text.count("\n" + self.prefix)
        n_ins = text.startswith(head) + text.count("\n" + head)
        if n_mine == 0:
            return True
        if n_ins != n_mine or "\\" in text or "''" in text:  # escapes, quotes: line by line
            return False
        if self._shape is None:
            at = 0 if text.startswith(head) else text.find("\n" + head) + 1
            self._shape = self._insert_pattern(text[at:text.find("\n", at)])
            if self._shape is None:
                return False
        rx, make = self._shape
        found = rx.findall(text)
        if len(found) != n_ins:
            self._shape = None  # the table changed shape: learn it again next time
            return False
        self._count_commits(text, head)
        effects = list(map(make, found))
        out.extend(effects)
        if not self.track:  # the table itself is the content: nothing to keep here
            self.count += len(found)
            return True
        rows, by_id = self.rows.rows, self.rows.by_id
        self._keymap = None  # rows added here are not in it: made again when needed
        ident = self.next_identity
        for eff in effects:
            rows[ident] = [eff, 1]
            ids = by_id.get(eff[0])
            if ids is None:
                by_id[eff[0]] = [ident]
            else:
                ids.append(ident)
            ident += 1
        self.next_identity = ident
        return True

    def _count_commits(self, text: str, head: str) -> None:
        """`_commits` += the number of `head` lines (INSERTs of the table, one effect each) of each
        transaction of `text`, with its commit time."""
        at = 0  # where the transaction's lines start: the newline ending the previous COMMIT line
        while True:
            c = 0 if at == 0 and text.startswith("COMMIT") else text.find("\nCOMMIT", at) + 1
            if c <= 0:
                return
            end = text.find("\n", c)
            m = _COMMIT.match(text, c, end)
            n = text.count("\n" + head, at, c) + (at == 0 and text.startswith(head))
            at = end
            if n:
                self._commits.append([n, _epoch(m[1]) if m else None])

    def _apply(self, text: str, out: list[Effect]) -> bool:
        """Apply decoded changes (COPY text) to the content; new applications go to `out`. True
        when a row went away (a delete or truncate): the caller returns the whole content then."""
        if self._fast_inserts(text, out):
            return False
        lines = [_unescape(ln) for ln in text.split("\n")[:-1]]
        if not self.track:  # anything but inserts: the table is read in full (it is the content)
            if any(ln.startswith(self.prefix) and not ln.startswith(self.prefix + "INSERT: ") for ln in lines):
                return True  # read() reads the table in full
        prefix, n = self.prefix, len(self.prefix)
        vanished = False
        done = len(out)  # effects before this batch's next commit
        for line in lines:
            if not line.startswith(prefix):
                if line.startswith("COMMIT"):
                    m = _COMMIT.match(line)
                    if len(out) > done:
                        self._commits.append([len(out) - done, _epoch(m[1]) if m else None])
                    done = len(out)
                continue
            op, _, rest = line[n:].partition(": ")
            if op == "INSERT":
                self._inserted(parse_row(rest), out)
            elif op == "UPDATE":
                old_text, _, new_text = rest.rpartition("new-tuple: ")
                old = parse_row(old_text[len("old-key: "):]) if old_text.startswith("old-key: ") else None
                vanished = self._updated(parse_row(new_text), out, old) or vanished
            elif op == "DELETE":
                self._deleted(parse_row(rest))
                vanished = True
            elif op == "TRUNCATE":
                self._truncated()
                vanished = True
        return vanished

    # --- what a decoded change does to the content (both plugins) ------------------------
    def _add(self, eff: Effect, c: int, out: list[Effect]) -> None:
        """A new row: `c` applications of `eff`."""
        rows = self.rows
        ident = self.next_identity
        self.next_identity += 1
        rows.rows[ident] = [eff, c]
        if self._keymap is not None:
            self._keymap[self._key_index_of(eff)] = ident
        ids = rows.by_id.get(eff[0])
        if ids is None:
            rows.by_id[eff[0]] = [ident]
        else:
            ids.append(ident)
        out.extend([eff] * c)

    def _inserted(self, row: dict[str, str | None], out: list[Effect]) -> None:
        rows = self.rows
        rows.check_columns(list(row))
        self._add(rows.effect(row), rows.count(row, 0), out)

    def _updated(self, new: dict[str, str | None], out: list[Effect],
                 old: dict[str, str | None] | None = None) -> bool:
        """An UPDATE: the row it changed (`_row_of`) now holds `new`. `old`: the row before, when
        the change carries it (REPLICA IDENTITY FULL always, a changed key's columns otherwise).
        A row that now holds another event's effect lost every application of the one it held
        (an upsert keyed by customer that overwrites the order id: found by a user, VALID with
        14,959 effects overwritten). True when the update took applications away (the caller
        returns the whole content)."""
        rows = self.rows
        rows.check_columns(list(new))
        eff = rows.effect(new)
        ident = self._row_of(new, old)
        if ident is None:  # a row never seen inserted: there before the run, or not identifiable
            if not self._identifiable(old):
                self.blind = True  # which row changed is unknown: the final read reads the table
            self._add(eff, rows.count(new, 0), out)
            return False
        slot = rows.rows[ident]
        if slot[0][0] != eff[0]:  # another event's effect now: the one it held is gone
            self._forget(ident)
            slot[0], slot[1] = eff, rows.count(new, 0)
            rows.by_id.setdefault(eff[0], []).append(ident)
            if self._keymap is not None:
                self._keymap[self._key_index_of(eff)] = ident
            out.extend([eff] * slot[1])
            return True
        before = slot[1]
        after = rows.count(new, before) if rows.applied else before
        if self._keymap is not None:
            self._keymap.pop(self._key_index_of(slot[0]), None)
            self._keymap[self._key_index_of(eff)] = ident
        slot[0], slot[1] = eff, after
        if after > before:
            out.extend([eff] * (after - before))
        return after < before

    def _deleted(self, old: dict[str, str | None]) -> None:
        rows = self.rows
        ident = self._row_of(old, old)
        if ident is not None:
            self._forget(ident)
            rows.rows.pop(ident, None)
        else:
            self.blind = True  # which row went is unknown (no key in the WAL): see final_read
            self._reload()

    # --- which row a change is about (the table's replica identity) --------------------------
    def _forget(self, ident: int) -> None:
        """Take row `ident` out of the indexes of its current effect (not out of `rows`)."""
        rows = self.rows
        eff = rows.rows[ident][0]
        ids = rows.by_id.get(eff[0])
        if ids is not None and ident in ids:
            ids.remove(ident)
            if not ids:
                del rows.by_id[eff[0]]
        if self._keymap is not None:
            self._keymap.pop(self._key_index_of(eff), None)

    def _key_fields(self) -> list[int] | None:
        """Where the replica identity's columns sit in an effect ([id, key, seq, replica]
        indexes), or None when it has a column the plan does not map (or none is known)."""
        if self._fields is False:
            cols = self._identity_columns()
            r = self.rows
            mapped = {r.id_col: 0, r.key_col: 1, r.seq_col: 2}
            self._fields = None if not cols or any(c not in mapped or c is None for c in cols) else \
                [mapped[c] for c in cols]
        return self._fields  # type: ignore[return-value]

    def _key_index_of(self, eff: Effect) -> tuple:
        """`eff`'s key in `_keymap` (which exists only when `_key_fields` is known)."""
        return tuple(eff[i] for i in self._key_fields() or ())

    def _row_of(self, row: dict[str, str | None], old: dict[str, str | None] | None) -> int | None:
        """The identity of the row a change is about: by the old row's event id (FULL), else by
        the replica identity's values (the old ones when the change carries them, else the new
        row's: its key did not change), else by the new row's event id; None when not found."""
        rows = self.rows
        if old is not None:
            oid = old.get(rows.id_col)
            ids = rows.by_id.get(oid) if oid is not None else None
            if ids:
                return ids[-1]
        fields = self._key_fields()
        if fields is not None:
            eff = rows.effect(old if old is not None else row)
            key = tuple(eff[i] for i in fields)
            if None not in key:
                if self._keymap is None:
                    self._keymap = {self._key_index_of(e): ident for ident, (e, _) in rows.rows.items()}
                ident = self._keymap.get(key)
                if ident is not None:
                    return ident
        ids = rows.by_id.get(rows.effect(row)[0])
        return ids[-1] if ids else None

    def _identifiable(self, old: dict[str, str | None] | None) -> bool:
        """Whether a row not found by `_row_of` is known to be one never seen (there before the
        run), rather than one whose identity the change does not give: the old row came with
        its event id, or the replica identity is mapped (`_key_fields`)."""
        if old is not None and old.get(self.rows.id_col) is not None:
            return True
        return self._key_fields() is not None

    def _identity_columns(self) -> list[str]:
        """The table's replica identity columns: from pgoutput's Relation message, else read
        from the catalog once (test_decoding): the primary key's, a REPLICA IDENTITY USING
        INDEX's, every column with FULL; [] when it has none or it cannot be read."""
        if self._key_cols is None:
            self._key_cols = []
            try:
                conn = self._connect()
                with SocketDeadline(conn, 10.0):
                    got = conn.execute(
                        "SELECT a.attname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
                        "WHERE n.nspname = %s AND c.relname = %s AND (c.relreplident = 'f' OR "
                        "(c.relreplident IN ('d', 'i') AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid "
                        "AND a.attnum = ANY(i.indkey) AND (c.relreplident = 'd' AND i.indisprimary OR "
                        "c.relreplident = 'i' AND i.indisreplident)))) ORDER BY a.attnum",
                        (self.schema, self.table)).fetchall()
                self._key_cols = [str(r[0]) for r in got]
            except Exception:  # noqa: BLE001 - unknown: an update not found by id makes the follower blind
                self._key_cols = []
        return self._key_cols

    def _truncated(self) -> None:
        self.rows.rows.clear()
        self.rows.by_id.clear()
        self._keymap = None

    def _reload(self) -> None:
        """A delete that does not say which row it removed: read the table in full (each row
        once; re-applications counted by the `applied` column only)."""
        if self.full_select is None:
            return
        self.rows.rows.clear()
        self.rows.by_id.clear()
        self._keymap = None
        for eff in self.full_select():
            ident = self.next_identity
            self.next_identity += 1
            self.rows.rows[ident] = [eff, 1]
            self.rows.by_id.setdefault(eff[0], []).append(ident)

    def read(self, timeout: float = 10.0, budget_s: float = 1.0, final: bool = False) -> tuple[list[Effect], bool]:
        """Changes since the last read, for at most about `budget_s` (the observer records each
        read as it returns, so a busy sink is followed in steps, not one read that never ends).
        `final`: pgoutput reads to the end or raises (see `_stream_read`)."""
        import time

        out: list[Effect] = []
        vanished = False
        started = time.monotonic()
        self._commits, self.visible, self.passing = [], None, []
        if self.plugin == "pending" and not self._decide(timeout):
            return out, False  # the table is not created yet
        if self.plugin == "pgoutput":
            vanished = self._stream_read(out, timeout, budget_s, final)
        else:
            while True:
                text, n = self._changes(timeout)
                vanished = self._apply(text, out) or vanished
                if n < BATCH or time.monotonic() - started > budget_s:
                    break
        if out and not vanished:
            self.visible = self._visible(len(out), timeout)
        if vanished:
            self.passing = out  # seen on the way, some of them gone from the content returned
            if not self.track and self.full_select is not None:
                return self.full_select(), True
            return self.rows.expand(), True
        return out, False

    def _visible(self, n: int, timeout: float) -> list[list[int]] | None:
        """The read's `_commits` as [[n, monotonic ns], ...] (see the module's doc), or None when
        they do not account for the `n` new effects or the server's clock cannot be read."""
        commits = self._commits
        if sum(c[0] for c in commits) != n or any(c[1] is None for c in commits):
            return None
        import time

        conn = self._connect()
        try:
            with SocketDeadline(conn, timeout):
                before = time.monotonic_ns()
                server_now = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
                local_now = (before + time.monotonic_ns()) // 2
        except Exception:  # noqa: BLE001 - no visibility times: the read's own time stands
            return None
        previous, self._reading = self._reading, (server_now, local_now)
        return visibility_runs(commits, server_now, local_now, previous)

    def final_read(self) -> list[Effect]:
        """The whole content after reading the rest of the slot: the table read in full when
        there is a `full_select` and the decoded content may be wrong (`blind`), else the
        decoded content (which alone knows the re-applications by xmin). A table never
        created has no content."""
        if self.plugin == "pending" and not self._decide(60.0):
            return []
        if self.plugin == "pgoutput":  # to the server's position now, or an error
            self.read(timeout=60.0, budget_s=60.0, final=True)
        else:
            while True:  # to the end of the slot
                before = self.next_identity + self.count
                self.read(timeout=60.0, budget_s=60.0)
                if self.next_identity + self.count == before:
                    break
        if self.full_select is not None and (self.blind or not self.track):
            return self.full_select()
        return self.rows.expand()
