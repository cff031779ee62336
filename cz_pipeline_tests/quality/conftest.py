"""Quality-gate fixtures: a Close tenant whose quality thresholds a test chooses, helpers that
shape the sandbox's data over its control endpoint (real HTTP), and helpers to read what a run
did (check evaluations, materialisations) and what analysts see (`cs` snapshots)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
import sqlalchemy as sa

from cz_pipeline.sandbox.close import STATUS_IDS
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.zoho_crm import ZohoSandbox
from cz_pipeline_tests.zoho.conftest import SYNC_FILTER
from cz_pipeline_tests.zoho.conftest import zoho_crm_config as _zoho_crm_config
from cz_pipeline_tests.conftest import CF, SyncRunner, close_crm_config, rows


@pytest.fixture
def quality_tenant(tenant_id: str, close_server: RunningSandbox, write_tenants, warehouse_url: str):
    """`make(thresholds=None, name=..., **crm_overrides)` → a SyncRunner for the Close tenant
    `tenant_id`. Several calls with different thresholds configure the SAME tenant differently
    (a tenant's config changing between runs); pass a distinct `name` for each file."""

    def make(thresholds: dict[str, float] | None = None, name: str = "tenants.yaml",
             **crm_overrides: Any) -> SyncRunner:
        body: dict[str, Any] = {"crm": close_crm_config(close_server.url, **crm_overrides)}
        if thresholds is not None:
            body["quality"] = {"thresholds": thresholds}
        return SyncRunner(write_tenants({tenant_id: body}, name=name), warehouse_url)

    return make


# ---- Close sandbox data --------------------------------------------------------------------


def new_account(control: SandboxControl, aid: str | None, parent: str | None = None, status: str = "Customer",
                name: str | None = None) -> dict[str, Any]:
    """A lead meeting the tenant's sync filter (Customer/Trial), with its AccountExternalID and
    optionally the parent's AccountExternalID in the configured lead field."""
    data: dict[str, Any] = {"name": name or f"Quality {aid}", "status_id": STATUS_IDS[status]}
    if aid is not None:
        data[CF["account_id"]] = aid
    if parent is not None:
        data[CF["parent_account_id"]] = parent
    return control.mutate("create", "lead", data=data)


def set_lead(control: SandboxControl, lead_id: str, **fields: Any) -> dict[str, Any]:
    return control.mutate("update", "lead", id=lead_id, data=fields)


def new_deal(control: SandboxControl, lead_id: str, start: str | None = None, end: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"lead_id": lead_id, "value": 100}
    if start:
        data[CF["start_date"]] = start
    if end:
        data[CF["end_date"]] = end
    return control.mutate("create", "opportunity", data=data)


# ---- Zoho sandbox ------------------------------------------------------------------------------


@pytest.fixture
def zoho_server() -> Iterator[RunningSandbox]:
    """A small Zoho org (its generated accounts include a 3-level tree and a few random parents)."""
    with RunningSandbox(ZohoSandbox(n_accounts=8)) as server:
        yield server


def zoho_crm_config(url: str, **overrides: Any) -> dict[str, Any]:
    """The Zoho suite's tenant config, filtered by the usual checkbox and without extra fields."""
    base = {"sync_filter": SYNC_FILTER, "account_fields": {}, "contact_fields": {}}
    return _zoho_crm_config(url, **{**base, **overrides})


# ---- reading results ---------------------------------------------------------------------------


def check_evaluations(result: dg.ExecuteInProcessResult) -> dict[str, Any]:
    """check name → its AssetCheckEvaluation in this run."""
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(str(e.event_specific_data.error.message) for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE" and e.event_specific_data.error)


def cs_snapshot(engine: sa.Engine, tenant_id: str) -> dict[str, list[dict[str, Any]]]:
    """Everything analysts see for the tenant, `synced_at` included (an untouched row keeps it)."""
    out = {}
    for table, key in (("accounts", "account_external_id"), ("account_hierarchy", "account_external_id"),
                       ("contacts", "contact_external_id"), ("deals", "crm_id"), ("tasks", "crm_id")):
        out[table] = rows(engine, f"SELECT * FROM cs.{table} WHERE tenant_id = :t ORDER BY {key}", t=tenant_id)
    return out


def materialize(runner: SyncRunner, tenant_id: str, selection: dg.AssetSelection) -> dg.ExecuteInProcessResult:
    """An ad-hoc materialisation of some assets, as from the UI, on the runner's instance."""
    defs = runner.defs
    return dg.materialize([*defs.assets, *defs.asset_checks], instance=runner.instance, resources=defs.resources,
                          partition_key=tenant_id, raise_on_error=False, selection=selection)
