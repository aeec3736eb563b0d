"""Targets kept up across several runs: one deployment, many examples.

Starting Kafka (a JVM), PostgreSQL and Redis costs more than a short run's load. A
`Session` starts the plan's targets once and lends them to `runner.execute` run after run;
before each run `reset_data` puts them back to empty, so a run against a reused deployment
sees what a run against fresh targets sees (Jepsen does the same between tests with
`db/setup!` on an existing cluster):

- Kafka: every topic but the internal ones (`__consumer_offsets`, `__transaction_state`)
  deleted and waited for, every consumer group deleted (waiting, up to GROUP_GONE_TIMEOUT_S,
  for the members of the last run's pipeline to time out: a group left behind would look
  like a stuck pipeline to the next run);
- PostgreSQL: every prepared transaction of its database rolled back (one a killed two-phase
  coordinator left in doubt holds its locks forever: the drop would wait on it), then every
  table of schema `public` dropped, and every other schema a run made (a pipeline's tables in
  a schema of its own were kept into the next run, which then judged run 1's rows);
- Redis: FLUSHALL;
- every server running and not paused, every Toxiproxy proxy enabled with no toxic.

The runs' pipelines, observers and nemeses are their own; only the servers are shared. The
servers' logs go to the session's `logs/` folder (a run's results.json lists them)."""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from onceproof.plan import Plan
from onceproof.targets.deployment import Deployment
from onceproof.targets.ledger import new_run_id

__all__ = ["Session", "reset_data", "reused_targets"]

KAFKA_INTERNAL = ("__",)  # topics the broker owns
TOPIC_GONE_TIMEOUT_S = 60.0
GROUP_GONE_TIMEOUT_S = 60.0


def reset_data(deployment: Deployment) -> list[str]:
    """Empty the deployment's targets (see the module's list) and make sure every server runs,
    unpaused, behind clean proxies. Returns notes of what could not be done that does not
    change a run's outcome (a consumer group still held by a timed-out member). Raises
    RuntimeError if a topic is not gone within TOPIC_GONE_TIMEOUT_S (the next run's topic
    would be the old one) or a server cannot be brought back."""
    notes: list[str] = []
    for node in deployment.servers():
        if node.paused:
            node.resume()
        if not node.alive:
            node.start()
    if deployment.toxiproxy is not None and deployment.toxiproxy.alive:
        deployment.toxiproxy.api.reset()  # every proxy enabled, every toxic removed
    if deployment.kafka is not None:
        notes += _reset_kafka(deployment)
    if deployment.postgres is not None:
        _reset_postgres(deployment)
    if deployment.redis is not None:
        from onceproof.targets.redis import client

        r = deployment.redis
        client(r.host, r.port, timeout=10.0, password=r.password).flushall()
    return notes


def _reset_kafka(deployment: Deployment) -> list[str]:
    from confluent_kafka.admin import AdminClient

    from onceproof.targets.kafka import clients as kafka_clients

    admin = AdminClient(kafka_clients.config({"bootstrap.servers": deployment.kafka_bootstrap()}))
    topics = [t for t in admin.list_topics(timeout=30).topics if not t.startswith(KAFKA_INTERNAL)]
    if topics:
        for topic, f in admin.delete_topics(topics, operation_timeout=30).items():
            try:
                f.result(60)
            except Exception as e:  # noqa: BLE001
                if "UNKNOWN_TOPIC" not in str(e):
                    raise RuntimeError(f"reset: cannot delete topic {topic!r}: {e}") from None
        deadline = time.monotonic() + TOPIC_GONE_TIMEOUT_S
        while set(topics) & set(admin.list_topics(timeout=30).topics):
            if time.monotonic() > deadline:
                raise RuntimeError(f"reset: topics {sorted(topics)} still listed {TOPIC_GONE_TIMEOUT_S:g} s "
                                   "after their deletion")
            time.sleep(0.2)
    return _delete_groups(admin)


def _delete_groups(admin: Any) -> list[str]:
    """Delete every consumer group, retrying those that still have members (a killed or static
    member stays until its session times out: 6 s for the reference pipelines) for up to
    GROUP_GONE_TIMEOUT_S; a group left behind would look like a stuck pipeline to the next
    run's progress watch (harness/progress.py finds groups by their assignment)."""
    deadline = time.monotonic() + GROUP_GONE_TIMEOUT_S
    while True:
        groups = [g.group_id for g in admin.list_consumer_groups(request_timeout=30).result(60).valid]
        kept = {}
        for group, f in (admin.delete_consumer_groups(groups, request_timeout=30).items() if groups else []):
            try:
                f.result(60)
            except Exception as e:  # noqa: BLE001 - still has members: try again
                if "GROUP_ID_NOT_FOUND" not in str(e):
                    kept[group] = str(e)
        if not kept:
            return []
        if time.monotonic() > deadline:
            return [f"reset: consumer group {g} kept after {GROUP_GONE_TIMEOUT_S:g} s ({e})" for g, e in kept.items()]
        time.sleep(0.5)


def _reset_postgres(deployment: Deployment) -> None:
    import psycopg
    from psycopg import sql

    from onceproof.pgdecode import drop_leftovers

    with psycopg.connect(deployment.postgres_dsn(), autocommit=True, connect_timeout=10) as c:
        for (gid,) in c.execute("SELECT gid FROM pg_prepared_xacts WHERE database = current_database()").fetchall():
            c.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))
        tables = [r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for t in tables:
            c.execute(sql.SQL("DROP TABLE IF EXISTS {} CASCADE").format(sql.Identifier("public", t)))
        # the schemas a run made (a pipeline may keep its tables in one of its own): nothing of
        # the server's own (pg_*, information_schema) nor public itself
        schemas = [r[0] for r in c.execute("SELECT nspname FROM pg_namespace WHERE nspname <> 'public' AND "
                                           "nspname <> 'information_schema' AND nspname NOT LIKE 'pg\\_%'")]
        for schema in schemas:
            c.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
        drop_leftovers(c)  # the slots and publications of an observer of a run that died


@contextlib.contextmanager
def reused_targets(deployment: Deployment, run: Any) -> Iterator[Deployment]:
    """The scope a run enters instead of `stages.targets_up` when a Session lends it its
    deployment: the data reset first (raising what `reset_data` raises), the servers listed
    in the run's RunLog, the reset's notes among its notes; nothing stopped on the way out."""
    run.notes.extend(reset_data(deployment))
    run.servers = deployment.servers()
    yield deployment


class Session:
    """The plan's targets, started once when the session is entered and stopped when it is
    left (on success, an exception or Ctrl-C; a second signal during the stop is noted, the
    stop finishes). `execute(plan, out_dir)` runs one plan against them (`runner.execute`
    with the deployment lent): the plan's `targets:` and `runtime` must be the session's.
    `log_dir`: where the servers' logs go (default: a temporary folder removed at the end)."""

    def __init__(self, plan: Plan, log_dir: Path | None = None) -> None:
        self.plan = plan
        self.log_dir = log_dir
        self.deployment: Deployment | None = None
        self.runs = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "Session":
        from onceproof import stages

        try:
            if self.log_dir is None:
                import tempfile

                self.log_dir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="onceproof-session-")))
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self.deployment = self._stack.enter_context(
                stages.targets_up(self.plan, new_run_id(), self.log_dir))
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        from onceproof import stages

        with stages.interrupts() as signals:
            signals.tearing_down()  # a signal now is noted, never cuts the stop short
            self._stack.close()

    def compatible(self, plan: Plan) -> bool:
        """Whether `plan` can run on this session's targets: the same runtime, and each target
        the plan has, the session has with the same section (a target the plan does not use
        stays up, idle, and is reset with the others)."""
        ours = self.plan.targets.sections()
        return plan.runtime == self.plan.runtime and all(
            section is None or ours.get(kind) == section for kind, section in plan.targets.sections().items())

    def execute(self, plan: Plan, out_dir: Path | None = None, **kw: Any) -> Any:
        """`runner.execute(plan, out_dir, **kw)` on the session's targets; returns its RunResult.
        Raises ValueError if the plan needs other targets (see `compatible`)."""
        from onceproof.runner import execute

        if self.deployment is None:
            raise RuntimeError("Session.execute outside `with Session(...)`")
        if not self.compatible(plan):
            raise ValueError("this plan's targets or runtime differ from the session's: start another session")
        self.runs += 1
        return execute(plan, out_dir, deployment=self.deployment, **kw)


Executor = Callable[..., Any]
