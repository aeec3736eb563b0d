"""How fast the observer follows a PostgreSQL sink incrementally (logical decoding, issue 17),
side by side with a plain `COPY (SELECT ...) TO STDOUT` of the same rows, in one run on the
same server:

    .venv/bin/python benchmarks/observer.py [--seconds 10] [--batch 20000]

A writer fills onceproof's effects table as fast as this machine allows (COPY FROM STDIN, one
transaction per batch) while an Observer (the run's own class, recording a history) follows
it. Printed: the write rate, the rows the observer followed per second of its own reading
time, the same over wall time (sustained: it has to keep up with the writer), the lag at the
end of the writes, the number of full reads during the run (goal 0), and the COPY rate.
Goals (issue 17): >= 100K rows/s sustained and >= 0.5x the COPY rate.

Then where the time goes, each step over the same rows (each fetch on a slot of its own, read
in batches as the observer reads), side by side with COPY: the server's decoding alone
(`count(*)`; and with pgoutput, the binary protocol, a candidate), decoding and fetching a row per change (how the observer fetches), decoding and
fetching one text per batch joined on the server (`string_agg`: tried, no faster), parsing
(`Follower._apply`), and writing the effects to a history."""
from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psycopg

from onceproof.observer import Observer
from onceproof.pgdecode import BATCH
from onceproof.recorder import HistoryWriter
from onceproof.sinks import PostgresSink
from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.local import LocalRuntime


def writer(dsn: str, table: str, seconds: float, batch: int, counter: list[int], done: threading.Event) -> None:
    with psycopg.connect(dsn) as conn:
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            block = "".join(f"e{i}\tk{i % 50}\t{i}\t0\n" for i in range(n, n + batch)).encode()
            with conn.cursor() as cur, cur.copy(f"COPY {table} (event_id, key, seq, replica) FROM STDIN") as cp:
                cp.write(block)
            conn.commit()
            n += batch
            counter[0] = n
    done.set()


SLOTS = ("bench_count", "bench_rows", "bench_text")  # one per fetch, each read to its end


def breakdown(dsn: str, sink: PostgresSink, n: int, tmp: Path) -> list[tuple[str, float]]:
    """Seconds each step of following the `n` rows takes: each fetch reads a slot of its own
    (SLOTS, created before the writes, dropped here) in batches of BATCH changes as the
    observer does, so each decodes the same changes."""
    def changes(slot: str) -> str:
        return (f"pg_logical_slot_get_changes('{slot}', NULL, {BATCH}, 'include-xids', '0', "
                "'include-timestamp', '1')")
    follower = sink.follower
    assert follower is not None
    out: list[tuple[str, float]] = []
    texts: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for name, slot, query in (
                ("server: decoding only (count(*))", "bench_count", "SELECT count(*) FROM {c}"),
                ("decode + fetch a row per change (as now)", "bench_rows", "SELECT data FROM {c}"),
                ("decode + fetch one string_agg text (tried)", "bench_text",
                 "SELECT count(*), string_agg(replace(replace(data, '\\', '\\\\'), E'\\n', '\\n'), E'\\n' "
                 "ORDER BY n) FROM {c} WITH ORDINALITY AS c(l, x, data, n)")):
            t = time.perf_counter()
            while True:
                rows = conn.execute(query.format(c=changes(slot))).fetchall()
                if slot == "bench_rows" and rows:
                    texts.append("\n".join(r[0] for r in rows) + "\n")
                if (rows[0][0] if slot != "bench_rows" else len(rows)) < BATCH:
                    break
            out.append((name, time.perf_counter() - t))
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        t = time.perf_counter()
        while conn.execute(f"SELECT count(*) FROM pg_logical_slot_get_binary_changes('bench_pgoutput', NULL, {BATCH}, "
                           "'proto_version', '1', 'publication_names', 'bench_pub')").fetchone()[0] >= BATCH:
            pass
        out.insert(1, ("server: pgoutput decoding only (not used yet)", time.perf_counter() - t))
        conn.execute("SELECT pg_drop_replication_slot('bench_pgoutput')")
    follower._shape, effects = None, []  # type: ignore[attr-defined]
    t = time.perf_counter()
    for text in texts:
        follower._apply(text, effects)
    out.append(("parse the text (Follower._apply)", time.perf_counter() - t))
    t = time.perf_counter()
    with open(tmp / "effects.jsonl", "wb") as fh:
        for i in range(0, len(effects), BATCH):
            fh.write(orjson.dumps({"full": False, "events": effects[i:i + BATCH]}) + b"\n")
    out.append(("write the effects to a history", time.perf_counter() - t))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch", type=int, default=20000, help="rows per writer transaction")
    ap.add_argument("--interval", type=float, default=0.2, help="the observer's interval (s)")
    args = ap.parse_args()
    rt = LocalRuntime()
    d = Deployment.create(rt, TargetsSpec(postgres=True))
    try:
        d.start()
        with tempfile.TemporaryDirectory() as tmpdir:
            sink = PostgresSink(d, "bench_effects")
            sink.setup()
            assert sink.follower is not None, "the server cannot decode (wal_level below logical?)"
            with psycopg.connect(d.postgres_dsn(), autocommit=True) as conn:  # for the breakdown
                for slot in SLOTS:
                    conn.execute("SELECT pg_create_logical_replication_slot(%s, 'test_decoding')", (slot,))
                # the next step's candidate: pgoutput (binary protocol) over all the table's columns
                conn.execute(f"CREATE PUBLICATION bench_pub FOR TABLE {sink.name}")
                conn.execute("SELECT pg_create_logical_replication_slot('bench_pgoutput', 'pgoutput')")
            full_reads = [0]
            select = sink._select

            def counted(*a, **kw):  # type: ignore[no-untyped-def]
                full_reads[0] += 1
                return select(*a, **kw)
            sink._select = counted  # type: ignore[method-assign]
            history = HistoryWriter(Path(tmpdir) / "h.jsonl")
            obs = Observer(sink, history, interval_s=args.interval)
            busy = [0.0]
            once = obs.observe_once

            def timed() -> int:
                t = time.perf_counter()
                try:
                    return once()
                finally:
                    busy[0] += time.perf_counter() - t
            obs.observe_once = timed  # type: ignore[method-assign]
            written, done = [0], threading.Event()
            t0 = time.monotonic()
            w = threading.Thread(target=writer, args=(d.postgres_dsn(), sink.name, args.seconds, args.batch,
                                                      written, done))
            w.start()
            obs.start()
            w.join()
            t_written = time.monotonic()
            lag_at_end = written[0] - obs.applied
            while obs.applied < written[0] and time.monotonic() - t_written < 120:
                time.sleep(0.05)
            t_followed = time.monotonic()
            obs.stop()
            followed = obs.applied
            during = full_reads[0]
            history.close()
            steps = breakdown(d.postgres_dsn(), sink, written[0], Path(tmpdir))
            sink.close()
            with psycopg.connect(d.postgres_dsn()) as conn, conn.cursor() as cur:
                t = time.perf_counter()
                size = 0
                with cur.copy("COPY (SELECT pos, event_id, key, seq, replica FROM bench_effects ORDER BY pos) "
                              "TO STDOUT") as cp:
                    for chunk in cp:
                        size += len(chunk)
                copy_s = time.perf_counter() - t
        write_rate = written[0] / (t_written - t0)
        follow_busy = followed / busy[0] if busy[0] else 0.0
        follow_wall = followed / (t_followed - t0)
        copy_rate = written[0] / copy_s
        print(f"rows written            {written[0]:>12,}  ({write_rate:,.0f} rows/s, COPY FROM in {args.batch:,}-row "
              "transactions)")
        print(f"observer, followed      {followed:>12,}  lag when the writes ended: {lag_at_end:,} rows, caught up "
              f"{t_followed - t_written:.2f} s later")
        print(f"observer rows/s (busy)  {follow_busy:>12,.0f}  (rows / time spent in its reads)")
        print(f"observer rows/s (wall)  {follow_wall:>12,.0f}  (rows / wall time, writes and catch-up)")
        print(f"COPY TO STDOUT rows/s   {copy_rate:>12,.0f}  ({size / 1e6:.1f} MB in {copy_s:.2f} s)")
        print(f"ratio observer/COPY     {follow_busy / copy_rate:>12.2f}x (busy)   full reads during the run: {during}")
        print(f"where the time goes, over the same {written[0]:,} rows (rows/s of each step alone; ratio to COPY):")
        for name, secs in steps:
            print(f"  {name:<44} {written[0] / secs:>12,.0f}  {written[0] / secs / copy_rate:5.2f}x")
    finally:
        d.stop()


if __name__ == "__main__":
    main()
