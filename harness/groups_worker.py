"""A child process that reads Kafka consumer groups' progress for the harness, so that a crash
of librdkafka's admin client takes down the child, not the run.

Why: librdkafka aborts the whole process (`rd_kafka_enq_once_del_source_return: Assertion
eonce->refcnt > 0`, or a segfault) when a coordinator request (OffsetFetch, DescribeGroups)
times out while the group coordinator moves or is down: confluentinc/librdkafka issues #3663
and #4605, open as of confluent-kafka 2.12. The harness hits it exactly when it matters: while
the only broker is killed or paused, or its group coordinator is still loading. So
`progress.KafkaGroups` runs here, behind `IsolatedKafkaGroups`, and a crash is one failed
poll (recorded as such) followed by a new child.

Protocol (JSON lines): the parent writes one request per line to the child's stdin, `{"call":
"read"}` or `{"call": "ends"}`; the child answers each with one line on stdout: `{"ok": value,
"note": str, "groups": [names tracked]}` or `{"error": message}`. The child's first argument
is a JSON object `{"bootstrap", "topic", "groups", "found", "log"}`. EOF on stdin ends it.
"""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from onceproof.targets.kafka import clients as kafka_clients

CALL_TIMEOUT_S = 60.0  # one read makes a few admin requests of 5 s each at most


class WorkerCrashed(RuntimeError):
    """The child died or stopped answering (a librdkafka abort): this poll failed, the next
    one starts a new child."""


class GroupsWorker:
    """The parent's handle on one child. `call(name)` -> the child's answer dict; raises
    WorkerCrashed (child dead or no answer within CALL_TIMEOUT_S, then it is killed) or
    RuntimeError (the read itself failed, the child lives on)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "onceproof.groups_worker", json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)

    def call(self, name: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        answer: list[str] = []
        reader = threading.Thread(target=lambda: answer.append(self.proc.stdout.readline()),  # type: ignore[union-attr]
                                  daemon=True)
        try:
            self.proc.stdin.write(json.dumps({"call": name}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # dead: the read below sees EOF
        reader.start()
        reader.join(CALL_TIMEOUT_S)
        if not answer or not answer[0]:
            code = self.proc.poll()
            if code is None:  # alive but stuck: a read blocked in the client
                self.proc.kill()
            self.close()
            raise WorkerCrashed(f"the Kafka admin client crashed (exit {code}; librdkafka aborts on a "
                                "coordinator timeout, issues #3663/#4605)" if code is not None else
                                f"the Kafka admin client did not answer in {CALL_TIMEOUT_S:.0f} s")
        reply: dict[str, Any] = json.loads(answer[0])
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    def close(self) -> None:
        """Ends the child (EOF, then SIGKILL after 2 s) and waits for it."""
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _serve(spec: dict[str, Any]) -> None:
    from onceproof.progress import KafkaGroups

    if spec.get("log"):
        handler = logging.FileHandler(spec["log"], delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s groups-worker %(message)s"))
        kafka_clients.LOGGER.addHandler(handler)
    groups = KafkaGroups(spec["bootstrap"], spec["topic"], spec["groups"], found=spec.get("found") or [])
    for line in sys.stdin:
        call = json.loads(line)["call"]
        try:
            value: Any = groups.read() if call == "read" else groups._ends()
            if call == "read":
                value = [g.as_value() for g in value]
            else:
                value = {str(p): o for p, o in value.items()}
            reply = {"ok": value, "note": groups.note, "groups": groups.groups}
        except Exception as e:  # noqa: BLE001 - a failed read is answered, not a crash
            reply = {"error": f"{type(e).__name__}: {e}"[:300]}
            # a fresh client for the next read, keeping the groups found: after a broker was
            # fenced (paused past its session, or restarted) the admin client kept asking with
            # the old leader epoch and every later read failed with FENCED_LEADER_EPOCH
            groups.close()
            groups = KafkaGroups(spec["bootstrap"], spec["topic"], spec["groups"], found=groups.groups)
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def log_file() -> str | None:
    """The run's harness-kafka.log, if a run is writing the Kafka clients' lines to one."""
    for h in kafka_clients.LOGGER.handlers:
        if isinstance(h, logging.FileHandler):
            return str(Path(h.baseFilename))
    return None


if __name__ == "__main__":
    _serve(json.loads(sys.argv[1]))
