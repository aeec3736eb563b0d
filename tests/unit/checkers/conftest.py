"""Every history a unit test of the checkers gives to `exactly_once.check` is also checked by
partitions (checkers/partitioned.py), and the two results must be identical: the unit corpus
is the partitioned check's oracle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import orjson
import pytest

from onceproof.checkers import exactly_once, partitioned


def same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The two results serialise to the same JSON."""
    opt = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_SORT_KEYS
    return orjson.dumps(a, option=opt, default=str) == orjson.dumps(b, option=opt, default=str)


@pytest.fixture(autouse=True)
def partitioned_oracle(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    real = exactly_once.check
    calls = [0]

    def check(history: Any, **kw: Any) -> dict[str, Any]:
        result = real(history, **kw)
        if history.path is None and history._data is None:
            return result  # a History made by hand: no file to split
        path = history.path
        if path is None:
            calls[0] += 1
            path = tmp_path_factory.mktemp("oracle") / f"h{calls[0]}.jsonl"
            Path(path).write_bytes(history._data)
        k = 1 + calls[0] % 4
        split = partitioned.check_path(path, partitions=k, **kw)
        assert same(result, split), (k, result, split)
        return result

    monkeypatch.setattr(exactly_once, "check", check)


CheckCli = Callable[..., "tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]"]


@pytest.fixture(params=["", "2"], ids=["in-memory", "by-2-partitions"])
def onceproof_check(request: pytest.FixtureRequest, tmp_path: Path) -> CheckCli:
    """`check(records, as_json=True)`: `onceproof check [--json] HISTORY` in a subprocess, on a
    history file of `records` -> (the process, its JSON verdict; None without `as_json`). Each
    test using it runs twice: in memory, and by 2 partitions ($ONCEPROOF_CHECK_PARTITIONS: the
    partitioned check learns the records' kinds in a pass of its own, so a checker it forgot to
    feed would go unseen)."""
    def check(records: list[dict[str, Any]],
              as_json: bool = True) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
        path = tmp_path / "history.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        res = subprocess.run([sys.executable, "-m", "onceproof", "check", *(["--json"] if as_json else []), str(path)],
                             capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, ONCEPROOF_CHECK_PARTITIONS=request.param))
        if not as_json:
            return res, None
        lines = res.stdout.splitlines()
        assert lines and lines[0].startswith("{"), (res.returncode, res.stdout, res.stderr)
        return res, json.loads(lines[0])
    return check
