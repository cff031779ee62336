"""Shared fixtures: a real Postgres (the embedded server, or `CZ_WAREHOUSE_URL`'s server) with a
database of its own for this test session, vendor sandboxes on loopback, tenant files, and a
runner for the real Dagster jobs."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterInstance

from cz_pipeline.definitions import build_defs
from cz_pipeline.sandbox.close import CUSTOM_FIELD_IDS, CloseSandbox
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.warehouse.embedded import embedded_url, ensure_database
from cz_pipeline.warehouse.migrations import migrate

CLOSE_KEY_ENV = "TEST_CLOSE_API_KEY"
CLOSE_KEY = "api_test_key_0123456789"
CF = {name: f"custom.{cid}" for name, cid in CUSTOM_FIELD_IDS.items()}


@pytest.fixture(scope="session")
def warehouse_url() -> Iterator[str]:
    name = f"cz_test_{uuid.uuid4().hex[:10]}"
    base = os.environ.get("CZ_WAREHOUSE_URL")
    if base:
        admin = sa.engine.make_url(base).set(database="postgres")
        ensure_database(admin.render_as_string(hide_password=False), name)
        url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    else:
        url = embedded_url(name)
        admin = sa.engine.make_url(url).set(database="postgres")
    engine = sa.create_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    admin_engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin_engine.dispose()


@pytest.fixture(scope="session")
def engine(warehouse_url: str) -> Iterator[sa.Engine]:
    engine = sa.create_engine(warehouse_url)
    yield engine
    engine.dispose()


@pytest.fixture
def tenant_id(request: pytest.FixtureRequest) -> str:
    """A tenant id unique to the test: tests share one database and never see each other's rows."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def close_app() -> CloseSandbox:
    return CloseSandbox(api_key=CLOSE_KEY, n_leads=40)


@pytest.fixture
def close_server(close_app: CloseSandbox) -> Iterator[RunningSandbox]:
    with RunningSandbox(close_app) as server:
        yield server


@pytest.fixture
def close_control(close_server: RunningSandbox) -> SandboxControl:
    return SandboxControl(close_server.url)


def close_crm_config(base_url: str, **overrides: Any) -> dict[str, Any]:
    cfg = {
        "system": "close",
        "base_url": f"{base_url}/api/v1",
        "credentials": {"api_key": {"env": CLOSE_KEY_ENV}},
        "account_external_id": CF["account_id"],
        "parent_external_id": CF["parent_account_id"],
        "sync_filter": [{"field": "status_label", "op": "in", "value": ["Customer", "Trial"]}],
        "account_fields": {
            "next_renewal_date": {"definition": {
                "from": "deals", "aggregate": "max", "field": "end_date",
                "where": [{"field": "start_date", "op": "lte", "value": "today"},
                          {"field": "end_date", "op": "gte", "value": "today"}]}},
            "tier": {"source": CF["tier"]},
        },
        "contact_fields": {"nps_opt_in": {"source": CF["nps"], "editable": True}},
        "deal_fields": {"start_date": CF["start_date"], "end_date": CF["end_date"]},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def write_tenants(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write a tenants file; returns its path. Sets the sandbox keys' environment variables."""
    monkeypatch.setenv(CLOSE_KEY_ENV, CLOSE_KEY)
    monkeypatch.setenv("TEST_DESK_API_KEY", "tw_sandbox_key")
    monkeypatch.setenv("TEST_ZOHO_CLIENT_ID", "zoho_client")
    monkeypatch.setenv("TEST_ZOHO_CLIENT_SECRET", "zoho_secret")
    monkeypatch.setenv("TEST_ZOHO_REFRESH_TOKEN", "zoho_refresh")

    def write(tenants: dict[str, Any], name: str = "tenants.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump({"tenants": tenants}, sort_keys=False))
        return path

    return write


class SyncRunner:
    """Runs the real `routine_sync` / `full_sync` jobs in process for one tenants file."""

    def __init__(self, tenants_path: Path, warehouse_url: str):
        self.defs = build_defs(str(tenants_path), warehouse_url)
        self.instance = DagsterInstance.ephemeral()

    def run(self, job: str, tenant: str, raise_on_error: bool = True, selection: list[str] | None = None):
        job_def = self.defs.resolve_job_def(job)
        return job_def.execute_in_process(partition_key=tenant, instance=self.instance,
                                          raise_on_error=raise_on_error)


@pytest.fixture
def close_tenant(tenant_id: str, close_server: RunningSandbox, write_tenants, warehouse_url: str) -> SyncRunner:
    path = write_tenants({tenant_id: {"crm": close_crm_config(close_server.url)}})
    return SyncRunner(path, warehouse_url)


def failure_messages(result) -> list[str]:
    """The error and Failure descriptions of a run's failed steps."""
    out = []
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            out.append(data.error.message if data.error else "")
            if data.user_failure_data and data.user_failure_data.description:
                out.append(data.user_failure_data.description)
    return out


def rows(engine: sa.Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]


def scalar(engine: sa.Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).scalar()
