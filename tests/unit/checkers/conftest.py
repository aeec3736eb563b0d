"""Every history a unit test of the checkers gives to `exactly_once.check` is also checked by
partitions (checkers/partitioned.py), and the two results must be identical: the unit corpus
is the partitioned check's oracle."""
from __future__ import annotations

from pathlib import Path
from typing import Any

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
