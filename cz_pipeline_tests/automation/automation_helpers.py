"""Helpers for the automation tests: runs created in a Dagster instance at chosen times (with
Dagster's own test clock) and finished like a run worker would, and tenant configs per CRM."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dagster as dg
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.test_utils import create_run_for_test, freeze_time

from cz_pipeline.defs.resources import TENANT_TAG

ZOHO_CREDENTIALS = {"client_id": {"env": "TEST_ZOHO_CLIENT_ID"},
                    "client_secret": {"env": "TEST_ZOHO_CLIENT_SECRET"},
                    "refresh_token": {"env": "TEST_ZOHO_REFRESH_TOKEN"}}


def close_tenant(**overrides: Any) -> dict[str, Any]:
    """A Close tenant's config (no server needed: sensors and schedules never call the API)."""
    crm = {"system": "close", "base_url": "http://127.0.0.1:9/api/v1",
           "credentials": {"api_key": {"env": "TEST_CLOSE_API_KEY"}},
           "account_external_id": "custom.cf_account"}
    crm.update(overrides)
    return {"crm": crm}


def zoho_tenant(**overrides: Any) -> dict[str, Any]:
    crm = {"system": "zoho_crm", "credentials": ZOHO_CREDENTIALS, "account_external_id": "Account_External_ID"}
    crm.update(overrides)
    return {"crm": crm}


def make_run(instance: dg.DagsterInstance, job: str, tenant: str, status: dg.DagsterRunStatus,
             at: datetime, extra_tags: dict[str, str] | None = None) -> dg.DagsterRun:
    """A run of `job` for `tenant`, created at `at` (as the daemon would create it)."""
    origin = None
    if status == dg.DagsterRunStatus.QUEUED:  # queued runs must say which code location to launch from
        origin = RemoteJobOrigin(RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("cz_pipeline"), "__repository__"), job)
    with freeze_time(at):
        run = create_run_for_test(instance, job_name=job, status=status, remote_job_origin=origin,
                                  tags={PARTITION_NAME_TAG: tenant, TENANT_TAG: tenant, **(extra_tags or {})})
    return instance.get_run_by_id(run.run_id)


def finish_run(instance: dg.DagsterInstance, run: dg.DagsterRun, success: bool = True) -> None:
    """Report the run's end as its run worker would (the event updates the run's status)."""
    kind = dg.DagsterEventType.RUN_SUCCESS if success else dg.DagsterEventType.RUN_FAILURE
    instance.report_dagster_event(dg.DagsterEvent(event_type_value=kind.value, job_name=run.job_name), run.run_id)
