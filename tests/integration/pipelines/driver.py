"""A small driver for the reference pipelines' integration tests: one run = its own source topic,
sink (table or topic) and run id on the shared targets; replicas are subprocesses in their own
process groups that the test kills, restarts, pauses and resumes."""
from __future__ import annotations

import collections
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from onceproof.targets.toxiproxy import ToxiproxyError

ROOT = Path(__file__).resolve().parents[3]


class PipelineRun:
    def __init__(self, deployment, module: str, workdir: Path, sink: str = "postgres", partitions: int = 3,
                 replicas: int = 2, env: dict[str, str] | None = None) -> None:
        self.d = deployment
        self.module = module
        self.workdir = workdir
        self.sink_kind = sink
        self.partitions = partitions
        self.replicas = replicas
        self.run_id = "t" + uuid.uuid4().hex[:10]
        self.topic = f"onceproof.events.{self.run_id}"
        self.sink = f"onceproof.effects.{self.run_id}" if sink == "kafka" else f"onceproof_effects_{self.run_id}"
        self.extra_env = env or {}
        self.procs: dict[int, subprocess.Popen] = {}
        self.acked: list[str] = []
        self.positions: dict[str, tuple[int, int]] = {}  # acked id -> (partition, offset) in the source
        self.sent: set[str] = set()
        self.kills = 0
        self.started_at: dict[int, int] = {}  # replica -> size of its log when it last started
        self._sink_counts: collections.Counter[str] = collections.Counter()
        self._reader: Consumer | None = None

    # --- setup / teardown -------------------------------------------------------------------
    def __enter__(self) -> "PipelineRun":
        admin = AdminClient({"bootstrap.servers": self.d.kafka_bootstrap()})
        topics = [NewTopic(self.topic, self.partitions, 1)]
        if self.sink_kind == "kafka":
            topics.append(NewTopic(self.sink, self.partitions, 1))
        for f in admin.create_topics(topics, operation_timeout=20).values():
            f.result()
        if self.sink_kind == "postgres":
            with psycopg.connect(self.d.postgres_dsn(), autocommit=True) as conn:
                conn.execute(f"CREATE TABLE {self.sink} (event_id text, key text, seq bigint, replica int, "
                             "applied_at timestamptz)")
        return self

    def __exit__(self, *exc: object) -> None:
        for i in list(self.procs):
            self.kill(i)
        if self._reader is not None:
            self._reader.close()
        if self.sink_kind == "postgres":
            with psycopg.connect(self.d.postgres_dsn(), autocommit=True) as conn:
                conn.execute(f"DROP TABLE IF EXISTS {self.sink}")
                if conn.execute("SELECT to_regclass('onceproof_offsets')").fetchone()[0]:
                    conn.execute("DELETE FROM onceproof_offsets WHERE grp = %s", (f"onceproof-{self.run_id}",))

    # --- load -------------------------------------------------------------------------------
    def produce(self, n: int, rate: float) -> threading.Thread:
        """Produce n events at about `rate` per second in the background (idempotent, acks=all)."""
        def go() -> None:
            p = Producer({"bootstrap.servers": self.d.kafka_bootstrap(), "enable.idempotence": True,
                          "acks": "all", "linger.ms": 5})

            def acked(err, msg) -> None:  # type: ignore[no-untyped-def]
                if err is None:
                    eid = json.loads(msg.value())["id"]
                    self.acked.append(eid)
                    self.positions[eid] = (msg.partition(), msg.offset())
            start = time.monotonic()
            for i in range(n):
                key = f"k{i % 20}"
                ev = {"id": f"{self.run_id}-{i}", "key": key, "seq": i // 20, "payload": "x" * 16}
                self.sent.add(ev["id"])
                p.produce(self.topic, json.dumps(ev).encode(), key.encode(), on_delivery=acked)
                if i % 50 == 49:
                    p.poll(0)
                    ahead = (i + 1) / rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            p.flush(30)
        t = threading.Thread(target=go, daemon=True)
        t.start()
        return t

    # --- replicas ---------------------------------------------------------------------------
    def env(self, i: int) -> dict[str, str]:
        return {**os.environ, "PYTHONUNBUFFERED": "1",
                "ONCEPROOF_KAFKA_BOOTSTRAP": self.d.kafka_bootstrap("pipeline"),
                "ONCEPROOF_POSTGRES_DSN": self.d.postgres_dsn("pipeline"),
                "ONCEPROOF_REDIS_URL": self.d.redis_url("pipeline"),
                "ONCEPROOF_SOURCE": f"kafka:{self.topic}",
                "ONCEPROOF_SINK": f"{self.sink_kind}:{self.sink}",
                "ONCEPROOF_REPLICA": str(i), "ONCEPROOF_REPLICAS": str(self.replicas),
                "ONCEPROOF_RUN_ID": self.run_id, "ONCEPROOF_SESSION_TIMEOUT_MS": "6000",
                **self.extra_env}

    def log_path(self, i: int) -> Path:
        return self.workdir / f"{self.module}-{i}.log"

    def start(self, i: int | None = None) -> None:
        for j in range(self.replicas) if i is None else [i]:
            self.started_at[j] = self.log_path(j).stat().st_size if self.log_path(j).exists() else 0
            with open(self.log_path(j), "ab") as log:
                self.procs[j] = subprocess.Popen([sys.executable, "-m", f"onceproof.targets.pipelines.{self.module}"],
                                                 cwd=ROOT, env=self.env(j), stdin=subprocess.DEVNULL,
                                                 stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def signal(self, i: int, sig: int) -> None:
        try:
            os.killpg(self.procs[i].pid, sig)
        except ProcessLookupError:
            pass

    def kill(self, i: int) -> None:
        self.signal(i, signal.SIGKILL)
        self.procs.pop(i).wait()

    def kill_cycles(self, cycles: int, period: float, busy: str = "applied", seed: int = 0) -> None:
        """kill -9 and restart replicas in turn, one about every `period` seconds. Each kill waits
        until its victim has logged `busy` since it (re)started, then a random part of `period`:
        a replica killed while it still starts up (0.3-2 s of imports and joining on a loaded
        machine) tests little, and the windows that matter are inside batch processing."""
        rng = random.Random(seed)
        for c in range(cycles):
            i = c % self.replicas
            self.wait_log(i, busy, timeout=5, since=self.started_at.get(i, 0))
            time.sleep(rng.uniform(0, period))
            self.kill(i)
            self.kills += 1
            self.start(i)

    def pause(self, i: int, seconds: float) -> None:
        self.signal(i, signal.SIGSTOP)
        time.sleep(seconds)
        self.signal(i, signal.SIGCONT)

    def wait_log(self, i: int, line: str, timeout: float = 30.0, since: int = 0) -> bool:
        """Until replica i's log shows `line` (after byte `since`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log_path(i).exists():
                with open(self.log_path(i), "rb") as f:
                    f.seek(since)
                    if line.encode() in f.read():
                        return True
            time.sleep(0.01)
        return False

    def start_and_wait(self, line: str = "assigned") -> None:
        """Start every replica, then wait until each logged `line`: killing a replica while the
        group first forms stalls the group for a session timeout, which tests nothing useful."""
        self.start()
        for i in range(self.replicas):
            assert self.wait_log(i, line), self.tails()

    def pause_at(self, i: int, line: str, seconds: float, timeout: float = 20.0) -> bool:
        """Stop replica i (SIGSTOP) as soon as its log shows `line` anew, for `seconds`."""
        if not self.wait_log(i, line, timeout, since=self.log_path(i).stat().st_size):
            return False
        self.pause(i, seconds)
        return True

    @contextlib.contextmanager
    def toxic(self, node: str, type_: str, stream: str = "downstream", **attributes: object) -> Iterator[None]:
        """A Toxiproxy toxic on the pipeline's proxy to `node` ("postgres", "kafka-1"), removed after."""
        api = self.d.toxiproxy.api
        proxy, name = f"pipeline-{node}", f"{self.run_id}-{type_}"
        api.add_toxic(proxy, name, type_, stream, **attributes)
        try:
            yield
        finally:
            # Toxiproxy can take longer than its client's 5 s timeout to remove a latency toxic
            # while links through it are busy (seen under kill cycles): retry until it is gone.
            deadline = time.monotonic() + 60
            while True:
                try:
                    api.remove_toxic(proxy, name)
                    break
                except ToxiproxyError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def exited(self) -> dict[int, int]:
        return {i: p.returncode for i, p in self.procs.items() if p.poll() is not None}

    # --- the sink ---------------------------------------------------------------------------
    def applications(self) -> collections.Counter[str]:
        """How many times each event id was applied so far."""
        if self.sink_kind == "postgres":
            with psycopg.connect(self.d.postgres_dsn()) as conn:
                rows = conn.execute(f"SELECT event_id, count(*) FROM {self.sink} GROUP BY event_id").fetchall()
            return collections.Counter(dict(rows))
        if self._reader is None:
            self._reader = Consumer({"bootstrap.servers": self.d.kafka_bootstrap(), "group.id": "observer",
                                     "isolation.level": "read_committed", "enable.auto.commit": False})
            self._reader.assign([TopicPartition(self.sink, p, OFFSET_BEGINNING) for p in range(self.partitions)])
        while msgs := self._reader.consume(1000, 0.3):
            for m in msgs:
                if not m.error():
                    self._sink_counts[json.loads(m.value())["id"]] += 1
        return collections.Counter(self._sink_counts)

    def wait_stable(self, quiet: float, timeout: float, expect: int | None = None) -> collections.Counter[str]:
        """Until the sink has not changed for `quiet` seconds (and, if given, holds `expect`
        distinct events, then stays unchanged for `quiet` more to catch late duplicates)."""
        deadline = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            counts = self.applications()
            state = (len(counts), sum(counts.values()))
            if state != last:
                last, since = state, time.monotonic()
            done = expect is None or len(counts) >= expect
            if (done and time.monotonic() - since >= quiet) or time.monotonic() > deadline:
                return counts
            time.sleep(0.25)

    # --- the pipeline's progress (the progress rule: harness/progress.py, checkers/progress.py) ---
    def committed(self) -> dict[int, int]:
        """The pipeline group's committed offset per partition of the source (-1: none): every
        event before it is claimed processed by the pipeline."""
        from confluent_kafka import ConsumerGroupTopicPartitions

        admin = AdminClient({"bootstrap.servers": self.d.kafka_bootstrap()})
        group = f"onceproof-{self.run_id}"
        result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                   require_stable=True, request_timeout=10)[group].result()
        got = {tp.partition: tp.offset for tp in result.topic_partitions or [] if tp.topic == self.topic}
        return {p: got.get(p, -1) for p in range(self.partitions)}

    def wait_caught_up(self, timeout: float) -> dict[int, int]:
        """Until the group's committed offsets have passed every acknowledged event (the
        pipeline claims to have processed the whole load), or `timeout`; the last offsets."""
        ends: dict[int, int] = {}
        for part, off in self.positions.values():
            ends[part] = max(ends.get(part, 0), off + 1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                committed = self.committed()
            except Exception:  # noqa: BLE001 - the group is rebalancing: ask again
                committed = {}
            if committed and all(committed.get(p, -1) >= end for p, end in ends.items()):
                return committed
            if time.monotonic() > deadline:
                return committed
            time.sleep(0.5)

    def tails(self, lines: int = 25) -> str:
        out = []
        for i in range(self.replicas):
            text = self.log_path(i).read_text(errors="replace").splitlines() if self.log_path(i).exists() else []
            out.append(f"--- {self.module} replica {i} (last {lines} of {len(text)} lines)\n" + "\n".join(text[-lines:]))
        return "\n".join(out)


def verdict(run: PipelineRun, counts: collections.Counter[str],
            committed: dict[int, int] | None = None) -> dict[str, list[str]]:
    """Acknowledged events missing from the sink are `lost` only when proven: with the group's
    `committed` offsets, an event before its partition's committed offset (the pipeline
    claims it processed it) and not in the sink is lost; one at or after it is `unseen` (late,
    not lost). Without `committed`, every missing event counts as lost (for tests that expect
    none, and waited for every event)."""
    missing = sorted(set(run.acked) - set(counts))
    if committed is None:
        lost, unseen = missing, []
    else:
        lost = [e for e in missing if run.positions[e][1] < committed.get(run.positions[e][0], -1)]
        unseen = [e for e in missing if e not in set(lost)]
    return {"lost": lost, "unseen": unseen,
            "duplicate": sorted(e for e, c in counts.items() if c > 1),
            "phantom": sorted(set(counts) - run.sent)}
