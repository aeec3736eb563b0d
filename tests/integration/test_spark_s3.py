"""`onceproof check --engine spark s3://bucket/key`: the executors read their byte ranges of a
history in object storage (a real S3 server, SeaweedFS: the `s3` fixture of conftest.py) with
ranged GETs, and the result is the local check's of the same file; a missing bucket or key,
no credentials, a wrong secret, an unreachable endpoint: exit 2 and one line, no traceback.
The SparkSession is the one of test_spark_check.py (the `spark` fixture)."""
from __future__ import annotations

import contextlib
import glob
import json
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from onceproof.checkers import exactly_once
from onceproof.checkers import spark as spark_engine
from onceproof.checkers.history import HistoryError, read_history
from tests.integration.conftest import S3Server
from tests.unit.checkers.conftest import same
from tests.unit.checkers.histories import RunModel, runs
from tests.unit.checkers.test_partitioned import _inject
from tests.unit.checkers.test_ranges import sink_first_history

pytestmark = pytest.mark.timeout(1800)  # the first test may build SeaweedFS (minutes on 2 cores, once)

BUCKET = "histories"
AWS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
       "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
       "AWS_EC2_METADATA_DISABLED")


@contextlib.contextmanager
def aws_env(values: dict[str, str]) -> Iterator[None]:
    """Exactly `values` as the AWS_* variables of this process (no config or credentials file:
    nothing of the machine's own AWS set-up is used), restored after."""
    saved = {v: os.environ.get(v) for v in AWS}
    for v in AWS:
        os.environ.pop(v, None)
    os.environ.update({"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                       "AWS_EC2_METADATA_DISABLED": "true", **values})
    try:
        yield
    finally:
        for v, old in saved.items():
            if old is None:
                os.environ.pop(v, None)
            else:
                os.environ[v] = old


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> Iterator[S3Server]:
    """The server with bucket BUCKET, its AWS_* variables set for the module's tests."""
    with contextlib.suppress(Exception):  # already there (a second module using it)
        s3.client().create_bucket(Bucket=BUCKET)
    with aws_env(s3.env()):
        yield s3


def upload(s3: S3Server, data: bytes) -> str:
    """`data` as a new object of BUCKET: its s3:// URL."""
    key = f"runs/{uuid.uuid4().hex}/history.jsonl"
    s3.client().put_object(Bucket=BUCKET, Key=key, Body=data)
    return f"s3://{BUCKET}/{key}"


def staged() -> list[str]:
    """The staged ranges left on this machine (none once a check is over)."""
    dirs = {tempfile.gettempdir(), os.environ.get("ONCEPROOF_SCRATCH") or tempfile.gettempdir()}
    return [f for d in dirs for f in glob.glob(os.path.join(d, "onceproof-s3-*"))]


@settings(max_examples=6, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(run=runs(max_events=30), data=st.data(), k=st.integers(1, 4), n=st.integers(2, 6),
       order=st.sampled_from([None, "per-key"]), shuffle=st.sampled_from(["spark", "files"]))
def test_spark_on_s3_equals_local_on_generated_histories(
        spark: Any, bucket: S3Server, run: RunModel, data: Any, k: int, n: int, order: str | None, shuffle: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The same histories as test_spark_check.py's, uploaded: `n` ranges of a few hundred bytes
    (lines straddle their cuts, staged with the rest of their last line), the result is the
    local check's of the same bytes, and no staged range is left behind."""
    _inject(run, data)
    path = tmp_path_factory.mktemp("s3") / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in run.records()))
    url = upload(bucket, path.read_bytes())
    local = exactly_once.check(read_history(path), order=order)
    remote = spark_engine.check_path(url, spark=spark, partitions=k, ranges=n, order=order, shuffle=shuffle,
                                     spill_dir=path.parent, defer_over=data.draw(st.sampled_from([-1, 0, 4096])))
    assert same(local, remote), (local, remote)
    assert staged() == []


def test_an_event_first_seen_in_the_sink_resolves_from_s3(spark: Any, bucket: S3Server, tmp_path: Path) -> None:
    """Effects before their sends, in earlier ranges: the resolve pass reads its ranges from S3 too."""
    path = tmp_path / "h.jsonl"
    sink_first_history(path, "e-{}")
    url = upload(bucket, path.read_bytes())
    for order in (None, "per-key"):
        local = exactly_once.check(read_history(path), order=order)
        remote = spark_engine.check_path(url, spark=spark, partitions=3, ranges=5, order=order,
                                         defer_over=-1 if order else 4096)
        assert same(local, remote), (local, remote)
        assert remote["anomalies"]["lost"] == 1 and remote["anomalies"]["duplicate"] == 1


def test_a_bad_line_in_a_later_range_is_named_by_its_line_in_the_object(spark: Any, bucket: S3Server) -> None:
    lines = [json.dumps({"index": i, "time": i, "process": "load", "type": "invoke", "f": "send",
                         "value": {"id": f"e-{i}", "key": "k", "seq": i}}) for i in range(30)]
    lines[20] = "not json"
    url = upload(bucket, ("\n".join(lines) + "\n").encode())
    with pytest.raises(HistoryError) as got:
        spark_engine.check_path(url, spark=spark, partitions=2, ranges=4)
    assert got.value.line == 21 and got.value.path == url
    assert staged() == []


def _history(duplicate: bool) -> bytes:
    recs = [{"index": 0, "time": 1, "process": "load", "type": "invoke", "f": "send",
             "value": {"id": "e-1", "key": "k", "seq": 0}},
            {"index": 1, "time": 2, "process": "load", "type": "ok", "f": "send",
             "value": {"id": "e-1", "key": "k", "seq": 0}},
            {"index": 2, "time": 3, "process": "observer", "type": "ok", "f": "final-read",
             "value": {"full": True, "events": [["e-1", "k", 0, 0]] + ([["e-1", "k", 0, 1]] if duplicate else [])}}]
    return "".join(json.dumps(r) + "\n" for r in recs).encode()


def test_cli_engine_spark_on_s3_prints_the_local_result(spark: Any, bucket: S3Server, tmp_path: Path,
                                                        capsys: Any) -> None:
    from onceproof.cli import main

    path = tmp_path / "h.jsonl"
    path.write_bytes(_history(duplicate=True))
    url = upload(bucket, path.read_bytes())
    assert main(["check", "--json", str(path)]) == 1
    local = json.loads(capsys.readouterr().out)
    assert main(["check", "--json", "--engine", "spark", url]) == 1  # the running session
    remote = json.loads(capsys.readouterr().out)
    assert remote.pop("file") == url and local.pop("file") == str(path)
    assert remote == local and remote["checkers"]["exactly-once"]["anomalies"]["duplicate"] == 1


def _refused(argv: list[str], capsys: Any) -> str:
    """`onceproof check ...`'s exit code is 2 and its stderr one line (returned), no traceback."""
    from onceproof.cli import main

    assert main(["check", *argv]) == 2
    got = capsys.readouterr()
    err = got.err.strip()
    assert "Traceback" not in got.err and len(err.splitlines()) == 1, got.err
    return err


def test_missing_key_or_bucket_exit_2_with_one_line(spark: Any, bucket: S3Server, capsys: Any) -> None:
    err = _refused(["--engine", "spark", f"s3://{BUCKET}/no/such/key.jsonl"], capsys)
    assert "no such object" in err and "no such key" in err, err
    err = _refused(["--engine", "spark", "s3://no-such-bucket-here/h.jsonl"], capsys)
    assert "no such bucket" in err, err
    err = _refused(["--engine", "spark", "s3://just-a-bucket"], capsys)
    assert "expected s3://bucket/key" in err, err


def test_no_credentials_wrong_secret_or_no_endpoint_exit_2(spark: Any, bucket: S3Server, capsys: Any) -> None:
    url = upload(bucket, _history(duplicate=False))
    with aws_env({"AWS_ENDPOINT_URL": bucket.endpoint, "AWS_REGION": bucket.region}):
        err = _refused(["--engine", "spark", url], capsys)
    assert "no S3 credentials" in err and "AWS_ACCESS_KEY_ID" in err, err
    with aws_env({**bucket.env(), "AWS_SECRET_ACCESS_KEY": "not-the-secret"}):
        err = _refused(["--engine", "spark", url], capsys)
    assert "access denied" in err, err
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with aws_env({**bucket.env(), "AWS_ENDPOINT_URL": f"http://127.0.0.1:{dead}"}):
        err = _refused(["--engine", "spark", url], capsys)
    assert "cannot reach the S3 endpoint" in err, err


def test_local_check_of_s3_refuses_and_names_engine_spark(bucket: S3Server, capsys: Any) -> None:
    """Without --engine spark an s3:// history is refused (no JVM started): the message says how."""
    url = upload(bucket, _history(duplicate=False))
    err = _refused([url], capsys)
    assert "--engine spark" in err, err


def test_a_final_read_longer_than_a_range_and_a_chunk(spark: Any, bucket: S3Server, tmp_path: Path) -> None:
    """60,000 events whose final read is one 1.4 MB line (longer than the 1 MiB chunk a 32 MiB
    budget gives: read in slices) across which several cut points fall: those ranges stage the
    rest of the line in doubling GETs, the range that holds its start reads it whole; one event
    lost, one duplicated, as the local check says."""
    n = 60_000
    lines = []
    for i in range(n):
        v = {"id": f"e-{i:06d}", "key": f"k{i % 7}", "seq": i // 7}
        lines.append({"index": 2 * i, "time": 2 * i, "process": "load", "type": "invoke", "f": "send", "value": v})
        lines.append({"index": 2 * i + 1, "time": 2 * i + 1, "process": "load", "type": "ok", "f": "send", "value": v})
    events = [[f"e-{i:06d}", f"k{i % 7}", i // 7, 0] for i in range(n) if i != 4321] + [["e-000007", "k0", 1, 1]]
    lines.append({"index": 2 * n, "time": 2 * n, "process": "observer", "type": "ok", "f": "final-read",
                  "value": {"full": True, "events": events}})
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in lines))
    url = upload(bucket, path.read_bytes())
    local = exactly_once.check(read_history(path))
    remote = spark_engine.check_path(url, spark=spark, partitions=3, ranges=40, memory=32 << 20)
    assert same(local, remote), (local, remote)
    assert remote["anomalies"]["lost"] == 1 and remote["anomalies"]["duplicate"] == 1
    assert staged() == []


def test_a_two_sink_history_on_s3_gets_the_partial_checker_too(spark: Any, bucket: S3Server, tmp_path: Path,
                                                                capsys: Any) -> None:
    """A history with a second sink's content (`sink-content`): after the Spark check, the
    `partial` checker reads the whole object (staged in a temp file, removed after), and its
    verdict is the local one (e2 missing from the second sink: exit 1)."""
    from onceproof.cli import main
    from tests.unit.checkers.histories import Event
    from tests.unit.checkers.test_partial import content

    run = RunModel(events=[Event("e1", "k", 0, 1, "ok", 2, 3), Event("e2", "k", 1, 4, "ok", 5, 6)],
                   observe_ts=[50], full_ts=[], end_t=100)
    run.extra.append(content(run, "redis-set:second", drop={"e2"}))
    path = tmp_path / "h.jsonl"
    path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in run.records()))
    url = upload(bucket, path.read_bytes())
    assert main(["check", "--json", str(path)]) == 1
    local = json.loads(capsys.readouterr().out)
    assert main(["check", "--json", "--engine", "spark", url]) == 1
    remote = json.loads(capsys.readouterr().out)
    remote.pop("file"), local.pop("file")
    assert remote == local and remote["checkers"]["partial"]["anomalies"] == {"partial": 1}
    assert staged() == []


def test_a_history_error_raised_in_a_task_comes_back_as_its_reason(spark: Any) -> None:
    """A later pass's task that cannot read its range (the endpoint went away between passes)
    raises HistoryError on an executor; Spark hands the driver a wrapped exception, whose
    reason check_path turns back into one line (spark.task_error), not a traceback."""
    def boom(_: int) -> int:
        raise HistoryError("s3://b/k", None, "cannot reach the S3 endpoint (gone)")

    with pytest.raises(Exception) as got:
        spark.sparkContext.parallelize([1], 1).map(boom).collect()
    reason = spark_engine.task_error(got.value)
    assert reason is not None and reason.endswith("cannot reach the S3 endpoint (gone)"), reason
    assert spark_engine.task_error(ValueError("no history error here")) is None


def test_pass_1_keeps_the_bytes_of_the_records_that_are_not_sends(bucket: S3Server, tmp_path: Path) -> None:
    """From object storage, pass 1 keeps each range's records that are not sends (but sink
    reads) as bytes (Sealed.lines), so a partition's check reads none of them with a GET: the
    bytes are the file's, by offset, and every such record of the file is there."""
    from onceproof.checkers import ranges as by_range
    from onceproof.checkers.source import S3Source

    lines = [{"index": 0, "time": 0, "process": "harness", "type": "info", "f": "start", "value": {"plan": "x"}}]
    for i in range(40):
        v = {"id": f"e-{i}", "key": "k", "seq": i}
        lines += [{"index": 0, "time": 10 * i, "process": "load", "type": "invoke", "f": "send", "value": v},
                  {"index": 0, "time": 10 * i + 1, "process": "load", "type": "ok", "f": "send", "value": v},
                  {"index": 0, "time": 10 * i + 2, "process": "nemesis", "type": "info", "f": "kill", "value": i}]
    lines.append({"index": 0, "time": 999, "process": "observer", "type": "ok", "f": "final-read",
                  "value": {"full": True, "events": [[f"e-{i}", "k", i, 0] for i in range(40)]}})
    data = b"".join(json.dumps(r).encode() + b"\n" for r in lines)
    url = upload(bucket, data)
    src = S3Source(url)
    bounds = by_range.cuts(src.size(), 5)
    sealed, _, _, _ = by_range.fold(src, 2, bounds, [by_range.scan(src, bounds[r], bounds[r + 1], 2, 1 << 20)
                                                   for r in range(5)])
    kept = {data[off:off + len(b)].rstrip(b"\n") for off, b in sealed.lines.items()
            if data[off:off + len(b)] == b}
    assert len(sealed.lines) == len(kept) == 41  # the start and the 40 kills; not the sends, not the final read
    assert all(b'"f": "kill"' in line or b'"f": "start"' in line for line in kept)
    assert staged() == []
