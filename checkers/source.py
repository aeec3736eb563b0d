"""Where a history's bytes come from, for the checks that read it by byte ranges
(checkers/ranges.py, checkers/spark.py): a file on this machine's disk (`LocalSource`) or an
object in S3-compatible object storage (`S3Source`, `s3://bucket/key`).

A `Source` has a size (bytes), reads any byte range, and `stage`s the bytes a range's pass
needs as a local file the line scanner (checkers/partitioned.py's Split: mmap and the C
scanner) can read at the same offsets as the whole history: for a local file, the file
itself; for an object, a sparse temporary file of the object's size holding only its first
MiB (the id prefix is learnt there), the range from one byte before it (where its first line
starts) and the rest of its last line (ranged GETs), removed when the pass is done. The rest
of the staged file is holes (zeros, no disk).

S3: boto3's client, configured only by the standard AWS environment variables
(`AWS_ENDPOINT_URL` for a server that is not AWS, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_REGION`; the AWS CLI's), with short connect timeouts and few retries so that an
unreachable endpoint is reported in seconds. Every failure (no such bucket or key, no
credentials, access denied, no answer) raises HistoryError naming the object: a bad input,
exit 2. Ranged GETs: RFC 9110, section 14 (`Range: bytes=a-b`, inclusive end).
"""
from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from typing import Any, Protocol

from onceproof.checkers.history.model import HistoryError

HEAD_BYTES = 1 << 20  # the first bytes of a history, where Split learns its ids' prefix
_PIECE = 8 << 20  # a staged range is copied this much at a time (bounded memory)
_TAIL = 1 << 16  # the rest of a range's last line is looked for this much at a time, doubling


class Source(Protocol):
    """A history's bytes, read by range. `name`: the path or URL, as messages give it."""

    name: str

    def size(self) -> int:
        """The history's length in bytes. Raises HistoryError (cannot be read)."""

    def read_range(self, a: int, b: int) -> bytes:
        """Bytes [a, b) (fewer at the end of the history). Raises HistoryError."""

    def stage(self, a: int, b: int) -> contextlib.AbstractContextManager[str]:
        """A local file path, valid inside the `with`, that holds at their offsets every byte
        a pass over the lines starting in [a, b) reads: the first HEAD_BYTES, byte a - 1 on,
        up to the end of the line holding byte b - 1. Raises HistoryError."""

    def line_of(self, offset: int) -> int:
        """The 1-based line number of the line starting at byte `offset` (reads the history up
        to it). Raises HistoryError."""


def is_remote(path: Any) -> bool:
    """Whether `path` names an object in object storage (`s3://bucket/key`), not a file."""
    return str(path).startswith("s3://")


def open_source(path: Any) -> Source:
    """The Source of `path`: an S3Source for `s3://bucket/key`, else a LocalSource. Raises
    HistoryError for a malformed s3:// URL."""
    return S3Source(str(path)) if is_remote(path) else LocalSource(str(path))


class LocalSource:
    """A history file on this machine (every executor must see it at the same path)."""

    def __init__(self, path: str) -> None:
        self.name = path

    def size(self) -> int:
        try:
            return os.path.getsize(self.name)
        except OSError as e:
            raise HistoryError(self.name, None, f"cannot open: {e.strerror or e}") from None

    def read_range(self, a: int, b: int) -> bytes:
        try:
            with open(self.name, "rb") as fh:
                fh.seek(a)
                return fh.read(max(0, b - a))
        except OSError as e:
            raise HistoryError(self.name, None, f"cannot open: {e.strerror or e}") from None

    @contextlib.contextmanager
    def stage(self, a: int, b: int) -> Iterator[str]:
        yield self.name  # the file itself: nothing to copy

    def line_of(self, offset: int) -> int:
        from onceproof.checkers.history.lines import line_of

        with open(self.name, "rb") as fh:
            return line_of(fh, offset)


AWS_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE")


@functools.lru_cache(maxsize=4)
def _client(settings: tuple[str | None, ...]) -> Any:
    """One boto3 S3 client per process and setting of AWS_VARIABLES (a client is thread-safe;
    making one costs tens of ms). Credentials are boto3's usual chain (the AWS_* variables
    first)."""
    import boto3
    from botocore.config import Config

    env = dict(zip(AWS_VARIABLES, settings))
    endpoint = env["AWS_ENDPOINT_URL_S3"] or env["AWS_ENDPOINT_URL"]
    config = Config(connect_timeout=5, read_timeout=60, retries={"max_attempts": 2, "mode": "standard"},
                    s3={"addressing_style": "path"} if endpoint else None)
    return boto3.session.Session().client("s3", endpoint_url=endpoint or None,
                                          region_name=env["AWS_REGION"] or env["AWS_DEFAULT_REGION"] or None,
                                          config=config)


class S3Source:
    """An object in S3-compatible storage, `s3://bucket/key`, read with HEAD and ranged GETs
    (boto3; see the module for its configuration)."""

    def __init__(self, url: str) -> None:
        self.name = url
        bucket, _, key = url[len("s3://"):].partition("/")
        if not bucket or not key:
            raise HistoryError(url, None, "expected s3://bucket/key (a bucket and an object key)")
        self.bucket, self.key = bucket, key
        self._size: int | None = None

    def __getstate__(self) -> dict[str, Any]:  # shipped to Spark's executors: no client, no secret
        return {"name": self.name, "bucket": self.bucket, "key": self.key, "_size": self._size}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _s3(self) -> Any:
        try:
            import boto3  # noqa: F401
        except ImportError as e:
            raise HistoryError(self.name, None, f"reading s3:// needs boto3 ({e}); install onceproof[spark]") from None
        return _client(tuple(os.environ.get(v) for v in AWS_VARIABLES))

    def _call(self, what: str, **kw: Any) -> Any:
        """client.<what>(Bucket, Key, **kw), its failures as HistoryError (one line each)."""
        from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

        s3 = self._s3()
        try:
            return getattr(s3, what)(Bucket=self.bucket, Key=self.key, **kw)
        except NoCredentialsError:
            raise HistoryError(self.name, None, "no S3 credentials: set AWS_ACCESS_KEY_ID and "
                                                "AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for a server "
                                                "that is not AWS)") from None
        except EndpointConnectionError as e:
            raise HistoryError(self.name, None, f"cannot reach the S3 endpoint ({e}); check "
                                                "AWS_ENDPOINT_URL") from None
        except ClientError as e:
            err = e.response.get("Error", {})
            code = str(err.get("Code") or e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise HistoryError(self.name, None, f"no such object (bucket {self.bucket!r}, key {self.key!r}: "
                                                    f"{self._missing()})") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                raise HistoryError(self.name, None, f"access denied by the S3 server ({code}): check "
                                                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") from None
            raise HistoryError(self.name, None, f"the S3 server refused the {what} ({code}: "
                                                f"{err.get('Message') or e})") from None
        except BotoCoreError as e:
            raise HistoryError(self.name, None, f"cannot read from S3 ({type(e).__name__}: {e})") from None

    def _missing(self) -> str:
        """Which of the bucket and the key is missing, as far as the server says."""
        try:
            self._s3().head_bucket(Bucket=self.bucket)
        except Exception:  # noqa: BLE001 - any failure: the bucket is not there for us
            return "no such bucket"
        return "the bucket has no such key"

    def size(self) -> int:
        if self._size is None:
            self._size = int(self._call("head_object")["ContentLength"])
        return self._size

    def read_range(self, a: int, b: int) -> bytes:
        if b <= a or a >= self.size():
            return b""
        return bytes(self._call("get_object", Range=f"bytes={a}-{b - 1}")["Body"].read())

    def _copy(self, a: int, b: int, out: Any) -> bytes:
        """Bytes [a, b) written at offset a of `out`, streamed; the last piece returned."""
        if b <= a:
            return b""
        body = self._call("get_object", Range=f"bytes={a}-{b - 1}")["Body"]
        out.seek(a)
        last = b""
        try:
            for piece in body.iter_chunks(_PIECE):
                out.write(piece)
                last = piece
        finally:
            body.close()
        return last

    @contextlib.contextmanager
    def stage(self, a: int, b: int) -> Iterator[str]:
        size = self.size()
        scratch = os.environ.get("ONCEPROOF_SCRATCH")
        fd, tmp = tempfile.mkstemp(prefix="onceproof-s3-", suffix=".jsonl",
                                   dir=scratch if scratch and os.path.isdir(scratch) else None)
        try:
            with os.fdopen(fd, "wb") as out:
                out.truncate(size)  # holes where nothing is staged
                self._copy(0, min(HEAD_BYTES, size), out)
                start, stop = max(0, a - 1), min(b, size)
                if start < size:
                    last = self._copy(start, max(stop, start + 1), out)
                    at, step = max(stop, start + 1), _TAIL
                    while at < size and not last.endswith(b"\n"):  # the rest of the last line
                        got = self.read_range(at, min(size, at + step))
                        nl = got.find(b"\n")
                        out.seek(at)
                        out.write(got if nl < 0 else got[:nl + 1])
                        if nl >= 0:
                            break
                        at, step = at + len(got), min(step * 2, _PIECE)
            yield tmp
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def line_of(self, offset: int) -> int:
        n, at = 0, 0
        while at < offset:
            got = self.read_range(at, min(offset, at + _PIECE))
            if not got:
                break
            n += got.count(b"\n")
            at += len(got)
        return n + 1
