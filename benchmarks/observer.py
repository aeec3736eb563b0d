"""How fast the observer follows a PostgreSQL sink incrementally (logical decoding, issue 17),
side by side with a plain `COPY (SELECT ...) TO STDOUT` of the same rows, in one run on the
same server:

    .venv/bin/python benchmarks/observer.py [--seconds 10] [--batch 20000] [--created-later]

A writer (a process of its own) fills onceproof's effects table as fast as this machine allows
(COPY FROM STDIN, one transaction per batch) while an Observer (the run's own class, recording a history) follows
it: twice, on two tables, first with the old test_decoding path, then with pgoutput (the one the
run takes); with `--created-later`, also on a table the writer creates (with a primary key)
after the observer started, as most pipelines make their own (the observer starts pending and
must end on the stream: harness/pgdecode.py). Printed: the write rate, the rows the observer followed per second of its own reading
time, the same over wall time (sustained: it has to keep up with the writer), the lag at the
end of the writes, the number of full reads during the run (goal 0), and the COPY rate.
Goals (issue 17): >= 100K rows/s sustained and >= 0.5x the COPY rate.

The observer follows the table with pgoutput read as a replication stream (harness/pgstream.py;
the messages: harness/pgoutput.py). Then where the time goes,
each step over the same rows (each fetch on a slot of its own, read in batches as the observer
reads), side by side with COPY: the server's decoding alone (`count(*)`) with test_decoding
(the old path) and pgoutput (text tuples as the observer asks, binary tuples, a 4x batch),
decoding and fetching as the old observer and a slot-call observer fetched, pgoutput streamed
over the replication protocol (what the observer reads now: harness/pgstream.py) by
pg_recvlogical into a pipe and into the observer's own stream, parsing each plugin's output, and writing
the effects to a history. (Tried before: one `string_agg` text per test_decoding batch, no
faster than a row per change.)"""
from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psycopg

from onceproof import pgoutput
from onceproof.observer import Observer
from onceproof.pgdecode import BATCH, GATHER_S, WORK_MEM, Follower, Rows
from onceproof.recorder import HistoryWriter
from onceproof.sinks import PostgresSink
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.local import LocalRuntime


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) a server backend on this machine has used: /proc/<pid>/stat."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# the table a pipeline makes for itself once it runs (`--created-later`): a key of its own
LATER_DDL = "CREATE TABLE {t} (event_id text, key text, seq bigint, replica int, pos bigserial PRIMARY KEY)"


def writer(dsn: str, table: str, seconds: float, batch: int, counter: Any, ddl: str | None = None) -> None:
    """Fill `table` for `seconds` (COPY FROM, `batch` rows a transaction); `counter.value`: rows
    committed. Runs in a process of its own, as a pipeline does: not in the observer's (GIL).
    `ddl`: the writer creates the table first, in its first transaction."""
    with psycopg.connect(dsn) as conn:
        if ddl:
            conn.execute(ddl.format(t=table))
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            block = "".join(f"e{i}\tk{i % 50}\t{i}\t0\n" for i in range(n, n + batch)).encode()
            with conn.cursor() as cur, cur.copy(f"COPY {table} (event_id, key, seq, replica) FROM STDIN") as cp:
                cp.write(block)
            conn.commit()
            n += batch
            counter.value = n


PGOUTPUT_BATCH = 4 * BATCH  # messages per slot call of the last observer that used slot calls
# its fetch: one row per call, the messages each preceded by its length, joined on the server
# (1.5x less CPU per message than a row each)
FETCH = ("SELECT count(*), string_agg(int4send(length(data)) || data, ''::bytea) "
         "FROM pg_logical_slot_get_binary_changes(%s, NULL, %s, 'proto_version', '1', 'publication_names', %s)")


# one slot per fetch, each read to its end: test_decoding (the old path), pgoutput (text and binary
# tuples, two batch sizes; as fetched by the observer), pgoutput streamed by pg_recvlogical
SLOTS = {"td_count": "test_decoding", "td_rows": "test_decoding", "po_count": "pgoutput", "po_binary": "pgoutput",
         "po_small": "pgoutput", "po_rows": "pgoutput", "po_agg": "pgoutput", "po_stream": "pgoutput",
         "po_ours": "pgoutput"}
PUB = "bench_pub"


def _recvlogical(dsn: str, slot: str) -> float:
    """Seconds pg_recvlogical takes to stream the slot to the server's current WAL end into a
    pipe (the replication protocol: the server decodes while the client reads)."""
    import shutil
    import subprocess

    with psycopg.connect(dsn, autocommit=True) as conn:
        end = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]
    exe = shutil.which("pg_recvlogical") or "pg_recvlogical"
    t = time.perf_counter()
    p = subprocess.run([exe, "-d", dsn, "--slot", slot, "--start", "--endpos", end, "--no-loop", "-f", "-",
                        "-o", "proto_version=1", "-o", f"publication_names={PUB}"],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=600)
    secs = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr.decode()[-500:])
    return secs


def _streamed(dsn: str, slot: str) -> tuple[float, float]:
    """The observer's own stream (harness/pgstream.py) read to the server's current WAL end,
    each batch taken and confirmed, nothing parsed -> (wall s, CPU s of the walsender + ours)."""
    from onceproof.pgstream import ReplicationStream

    with psycopg.connect(dsn, autocommit=True) as conn:
        end = int(conn.execute("SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint").fetchone()[0])
        stream = ReplicationStream(dsn, slot, PUB)
        t, cpu = time.perf_counter(), time.process_time()
        stream.open(30.0)
        sender = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone()[0]
        sender_cpu = server_cpu(sender)
        asked = 0.0
        try:
            while True:
                more = stream.pump()
                batch = stream.take()
                if batch is not None:
                    stream.confirm(pgoutput.end_lsn(batch.message(batch.n - 1)))
                if stream.wal_end >= end and not stream.partial:
                    break
                if not more:
                    if time.perf_counter() - asked > 0.05:
                        stream.request_reply()
                        asked = time.perf_counter()
                    stream.wait(0.05)
                    time.sleep(GATHER_S)
            secs = time.perf_counter() - t
            return secs, server_cpu(sender) - sender_cpu + time.process_time() - cpu
        finally:
            stream.free()


def breakdown(dsn: str, sink: PostgresSink, n: int, tmp: Path) -> list[tuple[str, float, float | None]]:
    """Seconds each step of following the `n` rows takes: each fetch reads a slot of its own
    (SLOTS, created before the writes, dropped here) in batches as the
    observer does, so each decodes the same changes."""
    follower = sink.follower
    assert follower is not None
    out: list[tuple[str, float, float | None]] = []  # (step, wall s, CPU s of the server's backend + ours)
    texts: list[str] = []
    batches: list[pgoutput.Batch] = []
    lib = pgoutput.native()
    td = ("pg_logical_slot_get_changes('{s}', NULL, {b}, 'include-xids', '0', 'include-timestamp', '1')")
    po = ("pg_logical_slot_get_binary_changes('{s}', NULL, {b}, 'proto_version', '1', "
          f"'publication_names', '{PUB}'{{x}})")
    with psycopg.connect(dsn, autocommit=True, options=f"-c work_mem={WORK_MEM}") as conn:  # as the observer's
        for name, slot, query, batch in (
                ("server: test_decoding decoding alone (count)", "td_count", "SELECT count(*) FROM " + td, BATCH),
                ("server: pgoutput decoding alone, text tuples", "po_count",
                 "SELECT count(*) FROM " + po.replace("{x}", ""), PGOUTPUT_BATCH),
                ("server: pgoutput decoding alone, binary tuples", "po_binary",
                 "SELECT count(*) FROM " + po.replace("{x}", ", 'binary', 'true'"), PGOUTPUT_BATCH),
                (f"server: pgoutput decoding alone, {BATCH:,} a call", "po_small",
                 "SELECT count(*) FROM " + po.replace("{x}", ""), BATCH),
                ("test_decoding decode + fetch (old observer)", "td_rows", "SELECT data FROM " + td, BATCH),
                ("pgoutput decode + fetch a row per message", "po_rows", "SELECT data FROM " + po.replace("{x}", ""),
                 PGOUTPUT_BATCH),
                ("pgoutput decode + fetch, joined (slot calls)", "po_agg",
                 FETCH.replace("%s, NULL, %s", "'{s}', NULL, {b}").replace("'publication_names', %s",
                                                                                    f"'publication_names', '{PUB}'"),
                 PGOUTPUT_BATCH)):
            t, cpu = time.perf_counter(), server_cpu(conn.info.backend_pid) + time.process_time()
            while True:
                rows = conn.execute(query.format(s=slot, b=batch), binary=slot.startswith("po_")).fetchall()
                got = rows[0][0] if query.startswith("SELECT count") else len(rows)
                if slot == "td_rows" and rows:
                    texts.append("\n".join(r[0] for r in rows) + "\n")
                if slot == "po_agg" and got:
                    batches.append(pgoutput.Batch.framed(rows[0][1], lib))
                if got < batch:
                    break
            out.append((name, time.perf_counter() - t, server_cpu(conn.info.backend_pid) + time.process_time() - cpu))
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
    try:
        out.append(("pgoutput streamed by pg_recvlogical to a pipe", _recvlogical(dsn, "po_stream"), None))
    except Exception as e:  # noqa: BLE001 - a benchmark step that cannot run here is said, not fatal
        print(f"pg_recvlogical: not measured ({e})")
    out.append(("pgoutput streamed to the observer's stream (no parse)", *_streamed(dsn, "po_ours")))
    with psycopg.connect(dsn, autocommit=True) as conn:
        time.sleep(0.5)  # the walsender of the stream just closed lets go of its slot
        conn.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                     "WHERE slot_name IN ('po_stream', 'po_ours')")
    old = Follower(dsn, sink.name, Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    t, cpu = time.perf_counter(), time.process_time()
    for text in texts:
        old._apply(text, [])
    out.append(("parse test_decoding text (old observer)", time.perf_counter() - t, time.process_time() - cpu))
    new = Follower(dsn, sink.name, Rows("event_id", "key", "seq", "replica"), full_select=lambda: [])
    effects: list = []
    t, cpu = time.perf_counter(), time.process_time()
    for b in batches:
        new._apply_pgoutput(b, effects)
    out.append(("parse pgoutput messages (observer)", time.perf_counter() - t, time.process_time() - cpu))
    assert len(effects) == n, (len(effects), n)
    t, cpu = time.perf_counter(), time.process_time()
    with open(tmp / "effects.jsonl", "wb") as fh:
        for i in range(0, len(effects), BATCH):
            fh.write(orjson.dumps({"full": False, "events": effects[i:i + BATCH]}) + b"\n")
    out.append(("write the effects to a history", time.perf_counter() - t, time.process_time() - cpu))
    return out


def follow(d: Deployment, table: str, plugin: str, args: argparse.Namespace, tmp: Path,
           for_breakdown: bool, later: bool = False) -> tuple[PostgresSink, dict]:
    """A writer fills `table` for args.seconds while an Observer following it with `plugin`
    records a history; -> (the sink, still open; the figures). `for_breakdown`: the slots of
    the breakdown are made before the writes (they decode the same changes). `later`: the
    table does not exist when the observer starts; the writer creates it (LATER_DDL), as a
    pipeline does, and the observer must end on the stream."""
    sink = PostgresSink(d, table)
    sink.setup()
    assert sink.follower is not None, "the server cannot decode (wal_level below logical?)"
    if later:
        sink.follower.close()
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}")
        sink.follower = Follower(d.postgres_dsn(), table, Rows("event_id", "key", "seq", "replica"),
                                 full_select=sink._full)
        sink.follower.create()
        assert sink.follower.plugin == "pending"
    elif sink.follower.plugin != plugin:
        sink.follower.close()
        sink.follower = Follower(d.postgres_dsn(), table, Rows("event_id", "key", "seq", "replica"),
                                 full_select=sink._full)
        sink.follower.create(plugin)
    if for_breakdown:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE PUBLICATION {PUB} FOR TABLE {sink.name}")  # all columns, as the observer
            for slot, kind in SLOTS.items():
                conn.execute("SELECT pg_create_logical_replication_slot(%s, %s)", (slot, kind))
    full_reads = [0]
    select = sink._select

    def counted(*a, **kw):  # type: ignore[no-untyped-def]
        full_reads[0] += 1
        return select(*a, **kw)
    sink._select = counted  # type: ignore[method-assign]
    history = HistoryWriter(tmp / f"h-{plugin}.jsonl")
    obs = Observer(sink, history, interval_s=args.interval)
    busy = [0.0]
    once = obs.observe_once
    backend = sink.follower.conn.info.backend_pid
    backend_cpu = server_cpu(backend)
    process_cpu = time.process_time()

    def timed() -> int:
        t = time.perf_counter()
        try:
            return once()
        finally:
            busy[0] += time.perf_counter() - t
    obs.observe_once = timed  # type: ignore[method-assign]
    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("q", 0)
    w = ctx.Process(target=writer, args=(d.postgres_dsn(), sink.name, args.seconds, args.batch, counter,
                                         LATER_DDL if later else None))
    t0 = time.monotonic()
    w.start()
    obs.start()
    w.join()
    t_written = time.monotonic()
    written = [counter.value]
    lag_at_end = written[0] - obs.applied
    while obs.applied < written[0] and time.monotonic() - t_written < 300:
        time.sleep(0.05)
    t_followed = time.monotonic()
    # the observer's CPU: this process's (its thread, the history's flusher; the writer is a
    # process of its own) and its server backends' (changes, clock reads; pgoutput's walsender,
    # which started with the stream: all its CPU is the observer's)
    with psycopg.connect(d.postgres_dsn(), autocommit=True) as conn:
        sender = conn.execute("SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s",
                              (sink.follower.slot,)).fetchone()[0]
    cpu = (time.process_time() - process_cpu + server_cpu(backend) - backend_cpu
           + (server_cpu(sender) if sender is not None else 0.0))
    obs.stop()
    history.close()
    n = written[0]
    if later:
        assert sink.follower.plugin == plugin, f"followed by {sink.follower.plugin}, not {plugin}"
        plugin += ", table created by the writer"
    return sink, {"plugin": plugin, "written": n, "followed": obs.applied, "write_rate": n / (t_written - t0),
                  "lag": lag_at_end, "catch_up_s": t_followed - t_written, "busy": obs.applied / busy[0],
                  "wall_s": t_followed - t0, "write_s": t_written - t0, "during": (n - lag_at_end) / (t_written - t0), "cpu": cpu,
                  "full_reads": full_reads[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=20000, help="rows per writer transaction")
    ap.add_argument("--interval", type=float, default=0.2, help="the observer's interval (s)")
    ap.add_argument("--created-later", action="store_true",
                    help="also follow a table the writer creates after the observer started (as most pipelines do)")
    args = ap.parse_args()
    rt = LocalRuntime()
    d = Deployment.create(rt, TargetsSpec(postgres=True))
    try:
        d.start()
        with tempfile.TemporaryDirectory() as tmpdir:
            old_sink, old = follow(d, "bench_old", "test_decoding", args, Path(tmpdir), for_breakdown=False)
            old_sink.close()
            followed = [old]
            if args.created_later:
                later_sink, later = follow(d, "bench_later", "pgoutput", args, Path(tmpdir), for_breakdown=False,
                                           later=True)
                later_sink.close()
                followed.append(later)
            sink, new = follow(d, "bench_effects", "pgoutput", args, Path(tmpdir), for_breakdown=True)
            followed.append(new)
            written = [new["written"]]
            steps = breakdown(d.postgres_dsn(), sink, written[0], Path(tmpdir))
            sink.close()
            with psycopg.connect(d.postgres_dsn()) as conn, conn.cursor() as cur:
                t, cpu = time.perf_counter(), server_cpu(conn.info.backend_pid) + time.process_time()
                size = 0
                with cur.copy("COPY (SELECT pos, event_id, key, seq, replica FROM bench_effects ORDER BY pos) "
                              "TO STDOUT") as cp:
                    for chunk in cp:
                        size += len(chunk)
                copy_s = time.perf_counter() - t
                copy_cpu = server_cpu(conn.info.backend_pid) + time.process_time() - cpu
        copy_rate = written[0] / copy_s
        copy_per_cpu = written[0] / copy_cpu
        for f in followed:
            print(f"observer ({f['plugin']}): {f['written']:,} rows written at {f['write_rate']:,.0f} rows/s (COPY FROM "
                  f"in {args.batch:,}-row transactions), {f['followed']:,} followed; lag when the writes ended "
                  f"{f['lag']:,} rows, caught up {f['catch_up_s']:.2f} s later; full reads during the run: "
                  f"{f['full_reads']}")
            print(f"  rows/s: {f['during']:,.0f} during the writes ({f['during'] / copy_rate:.2f}x COPY), "
                  f"{f['written'] / f['wall_s']:,.0f} over writes + catch-up ({f['written'] / f['wall_s'] / copy_rate:.2f}x), "
                  f"{f['busy']:,.0f} over its reads' time ({f['busy'] / copy_rate:.2f}x)")
        print(f"COPY TO STDOUT: {copy_rate:,.0f} rows/s ({size / 1e6:.1f} MB in {copy_s:.2f} s)")
        print("The machine is shared (2 cores; `uptime` below): rows per CPU second (the server backend's + "
              "ours, from /proc) do not depend on what else runs.")
        print(f"{'step':<52} {'rows/s':>10} {'vs COPY':>8} {'rows/CPU-s':>11} {'vs COPY':>8}")
        rows_ = [("COPY ... TO STDOUT", written[0], copy_s, copy_cpu)]
        rows_ += [(f"observer ({f['plugin']}), sustained during the writes", f["written"] - f["lag"], f["write_s"], None)
                  for f in followed]
        rows_ += [(f"observer ({f['plugin']}), writes + catch-up", f["written"], f["wall_s"], f["cpu"]) for f in followed]
        rows_ += [(name, written[0], secs, cpu_s) for name, secs, cpu_s in steps]
        for name, n, secs, cpu_s in rows_:
            per_cpu = f"{n / cpu_s:>11,.0f} {n / cpu_s / copy_per_cpu:>7.2f}x" if cpu_s else ""
            print(f"{name:<52} {n / secs:>10,.0f} {n / secs / copy_rate:>7.2f}x {per_cpu}")
        import os

        print(f"load average: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
