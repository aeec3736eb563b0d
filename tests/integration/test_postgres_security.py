"""PostgreSQL, real: the run's passwords are its own (the former fixed one no longer opens
the server), the pipeline's role cannot do what only a superuser may (run a program on the
server, make roles) yet can use its tables, and the unix socket folder is private."""
from __future__ import annotations

import stat

import psycopg
import pytest

from onceproof.targets.deployment import Deployment, TargetsSpec

pytestmark = pytest.mark.integration


@pytest.fixture
def postgres(runtime):  # type: ignore[no-untyped-def]
    d = Deployment.create(runtime, TargetsSpec(postgres=True))
    try:
        d.start()
        yield d
    finally:
        d.stop()


def test_the_former_fixed_password_is_refused(postgres: Deployment) -> None:
    node = postgres.postgres
    assert node is not None
    for user in ("onceproof", "onceproof_pipeline", "postgres"):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"postgresql://{user}:onceproof@{node.host}:{node.port}/onceproof", connect_timeout=5)


def test_pipeline_role_cannot_run_programs_or_make_roles_but_uses_its_tables(postgres: Deployment) -> None:
    with psycopg.connect(postgres.postgres_dsn(), autocommit=True) as admin:  # the harness: the sink first
        admin.execute("CREATE TABLE sink (id text PRIMARY KEY)")
    dsn = postgres.postgres_dsn("pipeline")
    assert dsn.startswith("postgresql://onceproof_pipeline:")
    with psycopg.connect(dsn, autocommit=True) as c:
        for forbidden in ("COPY (SELECT 1) TO PROGRAM 'touch /tmp/onceproof-pwned'",
                          "CREATE ROLE intruder LOGIN SUPERUSER PASSWORD 'x'",
                          "CREATE ROLE intruder",
                          "SELECT pg_read_file('/etc/passwd')",
                          "ALTER ROLE onceproof_pipeline SUPERUSER"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                c.execute(forbidden)
        c.execute("CREATE TABLE IF NOT EXISTS offsets (p int PRIMARY KEY, next bigint)")  # its own table
        c.execute("INSERT INTO offsets VALUES (0, 5)")
        c.execute("CREATE TABLE IF NOT EXISTS sink (id text PRIMARY KEY)")  # the harness's, already there
        c.execute("INSERT INTO sink VALUES ('e1')")
        assert c.execute("SELECT count(*) FROM sink").fetchone() == (1,)
    with psycopg.connect(postgres.postgres_dsn()) as admin:
        assert admin.execute("SELECT next FROM offsets").fetchone() == (5,)


def test_unix_socket_folder_is_private(postgres: Deployment) -> None:
    node = postgres.postgres
    assert node is not None
    sockets = list(node.data_dir.glob(".s.PGSQL.*"))
    assert sockets, "no unix socket in the node's folder"
    assert stat.S_IMODE(node.data_dir.stat().st_mode) == 0o700
