"""The read clients (harness/reads.py) against a real read endpoint (the reference pipelines'
`serve`, over loopback HTTP) whose store is a dict: every read is recorded invoke then ok with
the value, fail on a 503, info on a timeout; the checker reads the records back."""
from __future__ import annotations

import socket
import time

from onceproof.checkers import reads as reads_check
from onceproof.checkers.history import read_history
from onceproof.reads import reading
from onceproof.recorder import HistoryWriter
from onceproof.targets.pipelines.read_replica import Unavailable, serve


class Store:
    """k0 -> 5, k1 -> absent (None), k2 -> unavailable (503), k3 -> slower than the timeout,
    k4 -> "58" (a string: out of the read contract)."""

    def read(self, key: str, path: str) -> int | str | None:
        assert path == "standby"
        if key == "k2":
            raise Unavailable("the standby is behind")
        if key == "k3":
            time.sleep(0.6)
        if key == "k4":
            return "58"
        return 5 if key == "k0" else None

    def drop(self) -> None:
        pass


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_reads_are_recorded_as_operations_ok_fail_and_info(tmp_path):
    port = _port()
    server = serve(Store(), port, "standby")
    try:
        with HistoryWriter(tmp_path / "history.jsonl") as history:
            with reading(history, [port], ["k0", "k1", "k2", "k3", "k4"], rate=200, clients=4, timeout=0.3,
                         seed=1) as clients:
                time.sleep(2.0)
            counts = dict(clients.counts)
    finally:
        server.shutdown()
        server.server_close()
    h = read_history(str(tmp_path / "history.jsonl"))
    recs = [h.record(i) for i in range(len(h))]
    oks = [r for r in recs if r["type"] == "ok"]
    assert {r["value"]["key"]: r["value"]["value"] for r in oks} == {"k0": 5, "k1": None}
    assert all(r["value"]["key"] == "k2" and "503" in r["value"]["error"] for r in recs if r["type"] == "fail")
    infos = [r["value"] for r in recs if r["type"] == "info"]
    assert {v["key"] for v in infos} == {"k3", "k4"}
    assert all(v.get("broken") is True and "'58'" in v["error"] for v in infos if v["key"] == "k4")
    assert not any(v.get("broken") for v in infos if v["key"] == "k3")  # a timeout is no broken answer
    broken = sum(1 for v in infos if v.get("broken"))
    assert counts["ok"] > 10 and counts["fail"] > 0 and counts["info"] > 0
    # each process: invoke, completion, invoke, completion, ... (one read at a time)
    for proc in {r["process"] for r in recs}:
        types = [r["type"] for r in recs if r["process"] == proc]
        assert types[0::2] == ["invoke"] * len(types[0::2]) and "invoke" not in types[1::2]
    r = reads_check.check(h)
    assert r["reads"] == {"ok": counts["ok"], "fail": counts["fail"], "info": counts["info"], "broken": broken}
    # k0 read 5 with no write of seq 5 in this history: the checker says so (it is not a pipeline run)
    assert r["valid"] is False and r["anomalies"]["unexplained-read"] > 0
