"""Versioned migrations: re-running is a no-op; an older schema is upgraded in place."""

from __future__ import annotations

import uuid

import pytest

import sqlalchemy as sa

from cz_pipeline.warehouse.embedded import ensure_database
from cz_pipeline.warehouse.migrations import MIGRATIONS, migrate


def test_rerunning_migrations_is_a_no_op(warehouse_url):
    engine = sa.create_engine(warehouse_url)
    assert migrate(engine) == []
    with engine.connect() as conn:
        versions = [v for (v,) in conn.execute(sa.text("SELECT version FROM sync.schema_migrations ORDER BY 1"))]
    assert versions == sorted(v for v, _, _ in MIGRATIONS)
    engine.dispose()


def test_an_older_schema_is_upgraded_in_place(warehouse_url):
    url = sa.engine.make_url(warehouse_url)
    name = f"cz_mig_{uuid.uuid4().hex[:8]}"
    ensure_database(url.set(database="postgres").render_as_string(hide_password=False), name)
    engine = sa.create_engine(url.set(database=name))
    try:
        import cz_pipeline.warehouse.migrations as m

        original = list(m.MIGRATIONS)
        m.MIGRATIONS[:] = [mig for mig in original if mig[0] == 1]
        try:
            assert migrate(engine) == [1]
        finally:
            m.MIGRATIONS[:] = original
        with engine.begin() as conn:  # data written under the old schema survives the upgrade
            conn.execute(sa.text("INSERT INTO raw.leads (tenant_id, source_system, source_id, payload) "
                                 "VALUES ('t', 'close', 'lead_1', '{}')"))
        assert migrate(engine) == sorted(v for v, _, _ in original if v != 1)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM raw.leads")).scalar() == 1
            assert conn.execute(sa.text("SELECT to_regclass('cs.accounts')")).scalar() == "cs.accounts"
    finally:
        engine.dispose()
        admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def test_server_older_than_postgres_14_is_refused_with_a_clear_error(monkeypatch):
    from cz_pipeline.warehouse import migrations

    class _Conn:
        def execute(self, *_a, **_k):
            class _R:
                @staticmethod
                def scalar():
                    return "130011"
            return _R()

    with pytest.raises(migrations.UnsupportedServerError, match=r"PostgreSQL 13\.11; cz_pipeline needs PostgreSQL 14"):
        migrations.check_server_version(_Conn())


def test_supported_server_version_is_accepted(engine):
    from cz_pipeline.warehouse import migrations

    with engine.connect() as conn:
        assert migrations.check_server_version(conn) >= migrations.MIN_SERVER_VERSION
