"""The servers of a run, real, on a machine other users share. PostgreSQL: the run's passwords
are its own (the former fixed one no longer opens the server), the pipeline's role cannot do
what only a superuser may (run a program on the server, make roles) yet can use its tables,
and the unix socket folder is private. Redis: no password, no answer (NOAUTH), protected mode
on, the password off the command line, an unprivileged account when we are root. Toxiproxy:
its API answers only the run's owner (when root), and no proxy listens off loopback."""
from __future__ import annotations

import os
import pwd
import socket
import stat
import subprocess
from pathlib import Path

import psycopg
import pytest
import redis as redis_lib

from onceproof.targets.deployment import Deployment, TargetsSpec
from onceproof.targets.redis import client
from onceproof.targets.toxiproxy import ToxiproxyError

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


# --- Redis ------------------------------------------------------------------------------------
@pytest.fixture
def redis_node(runtime):  # type: ignore[no-untyped-def]
    d = Deployment.create(runtime, TargetsSpec(redis="aof-everysec"))
    try:
        d.start()
        assert d.redis is not None
        yield d.redis
    finally:
        d.stop()


def test_redis_answers_noauth_to_a_client_without_the_run_password(redis_node) -> None:  # type: ignore[no-untyped-def]
    with socket.create_connection((redis_node.host, redis_node.port), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(200).startswith(b"-NOAUTH")
    with pytest.raises(redis_lib.AuthenticationError):
        client(redis_node.host, redis_node.port, password="onceproof").ping()
    ours = client(redis_node.host, redis_node.port, password=redis_node.password)
    assert ours.ping()
    assert ours.config_get("protected-mode") == {"protected-mode": "yes"}


def test_redis_keeps_its_password_off_the_command_line_and_runs_unprivileged_when_root(redis_node) -> None:  # type: ignore[no-untyped-def]
    pid = redis_node.pid
    assert redis_node.password not in Path(f"/proc/{pid}/cmdline").read_text()
    assert stat.S_IMODE(redis_node.config.stat().st_mode) == 0o600
    uid = Path(f"/proc/{pid}").stat().st_uid
    if os.geteuid() == 0:
        assert uid != 0 and pwd.getpwuid(uid).pw_name in ("redis", "nobody")
    else:
        assert uid == os.geteuid()


# --- Toxiproxy --------------------------------------------------------------------------------
def _api_answers_to(uid: int, host: str, port: int) -> bool:
    # bash's /dev/tcp: a client any account can run (our virtualenv may be out of its reach)
    script = f'exec 3<>/dev/tcp/{host}/{port} && printf "GET /version HTTP/1.0\\r\\n\\r\\n" >&3 && cat <&3'
    res = subprocess.run(["bash", "-c", script], user=uid, cwd="/", capture_output=True, text=True, timeout=30)
    return "200 OK" in res.stdout


@pytest.mark.skipif(os.geteuid() != 0, reason="the owner rule needs root (see targets/toxiproxy.py)")
def test_toxiproxy_api_answers_only_to_the_run_owner_and_the_rule_goes_at_teardown(runtime) -> None:  # type: ignore[no-untyped-def]
    d = Deployment.create(runtime, TargetsSpec(redis="aof-everysec"))
    run_id = runtime.run_id
    try:
        d.start()
        assert d.toxiproxy is not None
        node = d.toxiproxy
        assert _api_answers_to(os.geteuid(), node.host, node.port)  # the owner
        nobody = pwd.getpwnam("nobody").pw_uid
        assert not _api_answers_to(nobody, node.host, node.port), "another local user reached the Toxiproxy API"
        assert any(run_id in " ".join(r) for r in runtime.entry.iptables)  # cleanup can find it
    finally:
        d.stop()
    rules = subprocess.run(["iptables", "-S", "OUTPUT"], capture_output=True, text=True).stdout
    assert run_id not in rules


def test_toxiproxy_proxy_off_loopback_is_refused_and_a_foreign_one_removed(runtime) -> None:  # type: ignore[no-untyped-def]
    d = Deployment.create(runtime, TargetsSpec(redis="aof-everysec"))
    try:
        d.start()
        assert d.toxiproxy is not None and d.redis is not None
        api = d.toxiproxy.api
        with pytest.raises(ToxiproxyError, match="only 127.0.0.1"):
            api.create("open", f"0.0.0.0:{runtime.free_port()}", f"{d.redis.host}:{d.redis.port}")
        # one made behind our client's back (as another user would without the owner rule)
        api._call("POST", "/proxies", {"name": "open", "listen": f"0.0.0.0:{runtime.free_port()}",
                                       "upstream": f"{d.redis.host}:{d.redis.port}", "enabled": True})
        removed = api.check(set(d.proxies))
        assert len(removed) == 1 and "proxy open listening on" in removed[0]
        assert "open" not in api.proxies()
        assert set(api.proxies()) == set(d.proxies)
    finally:
        d.stop()
