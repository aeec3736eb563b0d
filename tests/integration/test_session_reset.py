"""`session.reset_data` between the runs of a Session (`run --runs N`, `explore`): a
transaction a two-phase pipeline left prepared, in doubt (plans/two-phase-commit-no-recovery.yaml
does it on purpose), is rolled back, so the reset's DROP TABLE does not wait on its locks forever
(it did: the second run of `run plans/two-phase-commit-no-recovery.yaml --runs 2` never started)."""
from __future__ import annotations

import threading

import psycopg
import pytest

pytestmark = pytest.mark.integration


def test_reset_rolls_back_a_prepared_transaction_and_drops_the_table_it_locked_and_the_runs_schemas(runtime):
    from onceproof.session import reset_data
    from onceproof.targets.deployment import Deployment, TargetsSpec

    d = Deployment.create(runtime, TargetsSpec(redis="none", postgres=True))
    d.start()
    try:
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            c.execute("CREATE TABLE in_doubt (id int)")
        with psycopg.connect(d.postgres.pipeline_dsn(), autocommit=True) as c:  # a pipeline's own schema
            c.execute("CREATE SCHEMA shop")
            c.execute("CREATE TABLE shop.orders (id text PRIMARY KEY)")
            c.execute("INSERT INTO shop.orders VALUES ('e1')")
        with psycopg.connect(d.postgres_dsn()) as c:
            c.execute("INSERT INTO in_doubt VALUES (1)")
            c.execute("PREPARE TRANSACTION 'onceproof-test-in-doubt'")  # the connection ends, the lock stays
        done: list[object] = []
        reset = threading.Thread(target=lambda: done.append(reset_data(d)), daemon=True)
        reset.start()
        reset.join(60)
        assert done, "reset_data still waits after 60 s (on the prepared transaction's lock?)"
        with psycopg.connect(d.postgres_dsn(), autocommit=True) as c:
            assert c.execute("SELECT count(*) FROM pg_prepared_xacts").fetchone() == (0,)
            assert c.execute("SELECT to_regclass('public.in_doubt')").fetchone() == (None,)
            # a table in a pipeline's own schema kept run 1's rows into run 2 (judged VALID
            # with every id twice): gone with its schema; the server's own schemas stay
            assert c.execute("SELECT to_regnamespace('shop')").fetchone() == (None,)
            assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname IN "
                             "('public', 'pg_catalog', 'information_schema')").fetchone() == (3,)
    finally:
        d.stop()
