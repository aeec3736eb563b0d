"""The exactly-once check as an Apache Spark job (`onceproof check --engine spark`).

The partitioned check of checkers/partitioned.py, with the split itself distributed
(checkers/ranges.py): the file is cut into byte ranges (`RANGE_BYTES` each, at least two per
core; each task moves its ends to line starts), and

1. on the executors, one task per range reads its lines with the same Split as the local check
   (the C scanner when built) and sends back what is small: its records that are not sends
   (sink reads' facts, faults, progress), its name tables, and the ids it saw first with the
   partition each would go to (1 byte per id number);
2. on the driver, the only sequential step: the ranges are folded in file order into the
   file's record numbers, name tables and id map (an event goes where its first record went:
   the first range that saw it wins), broadcast to the executors; the few ids whose first
   record in the file is a sink effect (phantoms, premature effects) get their effect's key
   from one task per range that holds such a first record (`ranges.resolve`: pass 1 does not
   parse a final read for its keys, since most of its ids were sent in earlier ranges);
3. on the executors, one task per range reads its lines again and routes its sends and sink
   effects, packed into the spill's binary rows, to their partition: on a cluster through
   Spark's shuffle, in local mode through files in a scratch folder (`shuffle=`,
   $ONCEPROOF_SPARK_SHUFFLE=spark|files; in local mode files measured faster: 22.6 s vs
   27.0 s for the whole job on the 20M-record history, best of two runs each);
4. one task per partition builds that partition's History and runs `exactly_once.partial`;
   the driver merges the partials with `exactly_once.finish`.

The result is identical to the local check's (same partials, same merge), which the tests
check on generated histories cut into small ranges. With Spark's shuffle nothing is written
to a shared folder (the rows go through Spark's block storage on the executors' disks), so
no machine needs room for the whole spill; with files, the folder holds about a third of the
history's size. The driver holds the id map (1 byte per id number below 2^30; ids given as
text: a dict entry each), the records that are not sends, every range's name tables (keys
times ranges, while folding) and the partials: 161-179 MiB peak RSS for a 20M-record (3 GiB)
history. What stays sequential: the fold (0.1-0.3 s at 20M records), the merge, and within
one task a single line: the final read (all the sink's effects on one line) is read by the
one task of its range, in each pass.

On this machine Spark runs in local mode (`local[*]`, the installed Java 17; pyspark 3.5
supports it). On a cluster (`--master spark://host:7077`, `yarn`, `k8s://...`): the executors
read the history either from object storage (`s3://bucket/key`, checkers/source.py: the
driver HEADs it for its size, which also turns a missing object, no credentials or no
endpoint into a HistoryError before any task; each task reads its range with ranged GETs into
a sparse temporary file, removed after; the driver's AWS_* variables go to the executors'
Python workers with the tasks) or as a file at the same path as the driver (a shared mount),
and run a Python with onceproof installed (PYSPARK_PYTHON; default: this interpreter). See
README, "Runs on a real cluster".
"""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
from collections.abc import Iterator
from typing import Any

from onceproof.checkers import exactly_once
from onceproof.checkers.history import HistoryError
from onceproof.checkers.partitioned import (
    _CHUNK,
    _MAX_PARTS,
    _MIN_CHUNK,
    DEFAULT_MEMORY,
    DEFER_OVER,
    _spill_folder,
    estimate,
    phase,
)

RANGE_BYTES = 256 << 20  # a range task's share of the file (it reads it `_CHUNK` at a time)


def session(master: str | None = None) -> Any:
    """A SparkSession (the running one if there is one, else a new one on `master`, default
    `local[*]`); its Python workers run this interpreter unless PYSPARK_PYTHON says otherwise.
    Raises HistoryError when pyspark or Java is missing."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise HistoryError(None, None, f"--engine spark needs pyspark ({e}); install onceproof[spark]") from None
    master = master or "local[*]"
    builder = SparkSession.builder.appName("onceproof-check").master(master)
    if master.startswith("local"):  # on this machine: Spark's start-up warnings are not the check's output
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # "your hostname resolves to a loopback address"
        log4j = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spark-log4j2.properties")
        builder = builder.config("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j}")
    builder = builder.config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
    try:
        spark = builder.getOrCreate()
    except Exception as e:  # noqa: BLE001 - a JVM that cannot start: no traceback, the reason
        raise HistoryError(None, None, f"Spark could not start ({type(e).__name__}: {e}); it needs Java 17") from None
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def active() -> Any:
    """The SparkSession running in this process, or None (also when pyspark is not installed)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        return None
    return SparkSession.getActiveSession()


def shutdown(spark: Any) -> None:
    """Stop `spark` and end its JVM (SparkSession.stop leaves the gateway's java process running
    until this interpreter exits)."""
    from pyspark import SparkContext

    spark.stop()
    gateway = SparkContext._gateway
    if gateway is not None:
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        if proc is not None:
            if proc.stdin:
                proc.stdin.close()
            try:
                proc.wait(timeout=20)
            except Exception:  # noqa: BLE001 - still there: end it
                proc.kill()
                proc.wait()
        SparkContext._gateway = None
        SparkContext._jvm = None


def check_path(path: Any, *, spark: Any = None, master: str | None = None, memory: int = DEFAULT_MEMORY,
               order: str | None = None, examples: int = 10, partitions: int | None = None,
               ranges: int | None = None, fs: set[str] | None = None, shuffle: str | None = None,
               spill_dir: Any = None, defer_over: int | None = None) -> dict[str, Any]:
    """The exactly-once check of the history at `path`, run by Spark (`spark`: a session, else
    `session(master)`). Partitions: `partitions`, else enough for `memory` per task and at least
    twice Spark's default parallelism. Ranges of the file (one task each, per pass): `ranges`,
    else one per `RANGE_BYTES` and at least twice the default parallelism (tests force small
    ones). `shuffle`: how the routed rows reach their partition's task: "spark" (Spark's
    shuffle) or "files" (a folder made in `spill_dir`, default $ONCEPROOF_SCRATCH, that every
    executor must see at the same path); default $ONCEPROOF_SPARK_SHUFFLE, else "files" in
    local mode (measured faster: no pickling through the JVM) and "spark" on a cluster (no
    shared folder needed).
    `defer_over`: as `ranges.scan` (default DEFER_OVER; tests lower it to cover `resolve`).
    `fs`: filled with the history's operation names (as partitioned.check_path). Result
    as `exactly_once.check`; raises HistoryError (a bad line: the first of the file, by its line
    number in the file)."""
    from onceproof.checkers.source import open_source

    src = open_source(path)
    size = src.size()  # on the driver: a missing file or object, no credentials, no endpoint: HistoryError here
    spark = spark or session(master)
    sc = spark.sparkContext
    path = src  # what the tasks read their ranges from (an S3Source travels without its client)
    try:
        with _aws_environment(sc, src):
            return _check(sc, path, size, memory, order, examples, partitions, ranges, fs, shuffle, spill_dir,
                          defer_over)
    except HistoryError:
        raise
    except Exception as e:  # noqa: BLE001 - a task's HistoryError comes back wrapped by Spark: its reason only
        reason = task_error(e)
        if reason is None:
            raise
        raise HistoryError(src.name, None, f"a Spark task could not read its range: {reason}") from None


def task_error(e: BaseException) -> str | None:
    """The reason of the HistoryError a Spark task raised, from the exception Spark gives the
    driver for it (a PythonException or Py4JJavaError holding the worker's traceback as text),
    or None when it holds none. (The first pass returns its errors instead; a later pass
    raises one only when the history changed or became unreadable between passes: an object
    storage endpoint that went away.)"""
    found = re.findall(r"HistoryError: (.+)", str(e))
    return found[-1].strip() if found else None


@contextlib.contextmanager
def _aws_environment(sc: Any, src: Any) -> Iterator[None]:
    """For a history in object storage: the driver's AWS_* variables (endpoint, credentials,
    region: checkers/source.py) given to the job's Python workers (`sc.environment`, what
    pyspark sends with every task, as `spark.executorEnv.*` does), restored after."""
    from onceproof.checkers.source import AWS_VARIABLES, is_remote

    if not is_remote(src.name):
        yield
        return
    saved = dict(sc.environment)
    sc.environment.update({v: os.environ[v] for v in AWS_VARIABLES if v in os.environ})
    try:
        yield
    finally:
        sc.environment.clear()
        sc.environment.update(saved)


def _check(sc: Any, path: Any, size: int, memory: int, order: str | None, examples: int, partitions: int | None,
           ranges: int | None, fs: set[str] | None, shuffle: str | None, spill_dir: Any,
           defer_over: int | None) -> dict[str, Any]:
    """check_path's job on `sc` over the Source `path` of `size` bytes."""
    from onceproof.checkers import ranges as by_range

    k = partitions or min(_MAX_PARTS, max(2 * sc.defaultParallelism,
                                          math.ceil(estimate(size) / (memory * 0.45))))
    n = ranges or max(2 * sc.defaultParallelism, math.ceil(size / RANGE_BYTES))
    chunk = max(_MIN_CHUNK, min(_CHUNK, memory // 32))
    bounds = by_range.cuts(size, n)
    defer = DEFER_OVER if defer_over is None else defer_over
    with phase("scan"):  # pass 1: a task per range
        scans = sc.parallelize(range(n), n).map(
            lambda r: by_range.scan(path, bounds[r], bounds[r + 1], k, chunk, defer)).collect()
    with phase("fold"):  # on the driver, in file order
        sealed, jobs, idmap, text_map = by_range.fold(path, k, bounds, scans)
        del scans
    pending = [j for j in jobs if len(j.deferred) or j.deferred_text]
    if pending:  # ids first seen in a sink read: their effects' keys, read by the ranges that hold them
        with phase("resolve"):
            top = len(idmap)
            by_range.settle(pending, sc.parallelize(pending, len(pending)).map(
                lambda job: by_range.resolve(path, job, k, chunk, top)).collect(), idmap, text_map)
    if fs is not None:
        fs.update(sealed.f_names)
    routing = sc.broadcast((idmap, text_map))
    del idmap, text_map
    shared = sc.broadcast(sealed)
    shuffle = shuffle or os.environ.get("ONCEPROOF_SPARK_SHUFFLE") or (
        "files" if str(sc.master).startswith("local") else "spark")
    if shuffle not in ("spark", "files"):
        raise HistoryError(None, None, f'ONCEPROOF_SPARK_SHUFFLE={shuffle!r}: expected "spark" or "files"')
    try:
        if shuffle == "spark":
            with phase("route+check"):  # pass 2 (a task per range), Spark's shuffle, a task per partition
                outs = (sc.parallelize(jobs, n)
                        .flatMap(lambda job: by_range.route(path, job, k, chunk, routing.value[0], routing.value[1]))
                        .partitionBy(k, _same)
                        .mapPartitionsWithIndex(lambda p, got: [shared.value.check_partition(
                            p, order, examples, by_range.gather(part for _, part in got))])
                        .collect())
        else:
            with _spill_folder(spill_dir) as folder:
                where = str(folder)
                with phase("route"):  # pass 2 (a task per range): files per range and partition
                    parts: list[list[Any]] = [[] for _ in range(k)]
                    for p, part in sc.parallelize(jobs, n).flatMap(
                            lambda job: by_range.route(path, job, k, chunk, routing.value[0], routing.value[1], where)).collect():
                        parts[p].append(part)
                with phase("check"):  # a task per partition
                    outs = sc.parallelize(list(enumerate(parts)), k).map(
                        lambda pp: shared.value.check_partition(pp[0], order, examples,
                                                                by_range.gather(pp[1]))).collect()
    finally:
        routing.unpersist()
        shared.unpersist()
    with phase("merge"):
        return exactly_once.finish([o[0] for o in outs], examples=examples, first_at=[o[1] for o in outs])


def _same(p: int) -> int:
    """Spark's partitioner of the routed rows: the key is the partition."""
    return p
