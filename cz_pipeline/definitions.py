"""Assembles the project's Dagster definitions from the concern folders under `defs/`."""

from __future__ import annotations

import dagster as dg

from .defs.automation.automation import build_automation_checks, build_schedules, build_sensors
from .defs.crm.assets import build_crm_assets
from .defs.cs.assets import build_cs_assets
from .defs.helpdesk.assets import build_helpdesk_assets
from .defs.jobs import build_jobs
from .defs.quality.checks import build_quality_checks
from .defs.resources import build_resources, tenant_partitions


def build_defs(tenants_path: str | None = None, warehouse_url: str | None = None) -> dg.Definitions:
    """Definitions for one tenants file (default: `CZ_TENANTS_FILE`, else the demo's)."""
    partitions = tenant_partitions(tenants_path)
    jobs = {job.name: job for job in build_jobs(partitions)}
    return dg.Definitions(
        assets=[*build_crm_assets(partitions), *build_cs_assets(partitions), *build_helpdesk_assets(partitions)],
        asset_checks=[*build_quality_checks(partitions), *build_automation_checks(partitions)],
        jobs=list(jobs.values()),
        sensors=build_sensors(jobs),
        schedules=build_schedules(jobs),
        resources=build_resources(tenants_path, warehouse_url),
    )


defs = build_defs()
