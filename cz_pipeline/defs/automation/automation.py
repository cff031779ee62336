"""Sensors, schedules and checks that run the syncs unattended.

- `routine_sync_sensor` (every 60 s): requests a `routine_sync` run for each tenant whose
  `routine_sync_minutes` have elapsed since its last routine sync, skipping tenants with a sync
  (routine or full) still queued or running. Run key `routine:<tenant>:<window start epoch>` with
  window = floor(now / interval): a key fires once, ever; a second tick in the window is a no-op.
- `full_sync_schedule` (every 15 minutes, UTC): requests a `full_sync` run for each tenant whose
  `full_sync_cron` (in the tenant's `timezone`; default per CRM: Close weekends, Zoho and
  Salesforce nightly) fired in (previous tick, this tick]. Run key `full:<tenant>:<fire time>`.
  One schedule reading the tenants file at every tick, rather than one Dagster schedule per
  tenant: per-tenant crons and time zones, and a cron edit applies without a code reload.
- `sync_health` check + `sync_health_on_failure` sensor: see `health.py`.

Where the sensor reads "last routine sync" from: the Dagster instance (its run storage), not the
warehouse ledger. The instance is the only place that knows queued and running runs (needed for
the skip rule anyway) and runs that failed before the engine wrote a ledger row; the daemon
already holds a connection to it, so a tick never touches the warehouse or a vendor API. Cost
per tick: one query for unfinished runs plus one query per distinct interval (`created_after =
now - interval`, tenant ids as a tag filter), each returning about one row per tenant.

Every run carries `cz/tenant=<id>` (and Dagster's `dagster/partition=<id>`); `dagster.yaml`
limits both to one run per value, so a tenant never syncs twice at a time.

Sensor and schedule are STOPPED by default (production opts in from the UI or with
`dagster sensor start`); with `CZ_DEMO=1` in the environment (the demo's `demo/env.sh`) they
start RUNNING so `make demo` syncs unattended.
"""

import os
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from cz_pipeline.config.tenants import TenantConfig, load_tenants
from cz_pipeline.dagster_private import NOT_FINISHED_STATUSES, PARTITION_NAME_TAG, latest_completed_cron_tick
from cz_pipeline.dagster_private import now as dagster_now
from ..resources import TENANT_TAG, TenantsResource
from .health import build_failure_sensor, build_sync_health_check

ROUTINE_JOB, FULL_JOB = "routine_sync", "full_sync"
SYNC_JOBS = (ROUTINE_JOB, FULL_JOB)
DEMO_ENV = "CZ_DEMO"
FULL_SYNC_TICK_MINUTES = 15
FULL_SYNC_TICK_CRON = "*/15 * * * *"
SENSOR_INTERVAL_SECONDS = 60
# Ticks come about every 60 s and drift by fractions of a second, so a run created one interval
# ago is often a hair too young at the tick that should pick it up; without slack a 15-minute
# interval would sync every 16 minutes. An interval counts as elapsed within half a tick.
ROUTINE_TOLERANCE_SECONDS = SENSOR_INTERVAL_SECONDS // 2


def automation_default_status() -> dg.DefaultSensorStatus:
    """RUNNING only for the demo (`CZ_DEMO=1`); production turns automation on deliberately."""
    return dg.DefaultSensorStatus.RUNNING if os.environ.get(DEMO_ENV) == "1" else dg.DefaultSensorStatus.STOPPED


def _schedule_default_status() -> dg.DefaultScheduleStatus:
    return (dg.DefaultScheduleStatus.RUNNING if automation_default_status() == dg.DefaultSensorStatus.RUNNING
            else dg.DefaultScheduleStatus.STOPPED)


# ---- reading the instance (cheap: no per-tenant queries, no API calls) -----------------------------


def busy_tenants(instance: dg.DagsterInstance, job_names: Iterable[str] = SYNC_JOBS) -> dict[str, str]:
    """Tenant -> id of one of its sync runs that is queued, starting or running."""
    jobs = set(job_names)
    busy: dict[str, str] = {}
    for record in instance.get_run_records(dg.RunsFilter(statuses=NOT_FINISHED_STATUSES)):
        run = record.dagster_run
        tenant = run.tags.get(PARTITION_NAME_TAG) or run.tags.get(TENANT_TAG)
        if tenant and run.job_name in jobs:
            busy.setdefault(tenant, run.run_id)
    return busy


def recently_synced(instance: dg.DagsterInstance, intervals: Mapping[str, int], now: datetime) -> dict[str, datetime]:
    """Tenant -> creation time of its newest routine_sync run created within its own interval
    (less the tick tolerance). One query per distinct interval; each returns about one run per
    tenant."""
    by_interval: dict[int, list[str]] = defaultdict(list)
    for tenant, minutes in intervals.items():
        by_interval[minutes].append(tenant)
    recent: dict[str, datetime] = {}
    for minutes, tenants in by_interval.items():
        records = instance.get_run_records(dg.RunsFilter(
            job_name=ROUTINE_JOB, created_after=now - timedelta(minutes=minutes, seconds=-ROUTINE_TOLERANCE_SECONDS),
            tags={PARTITION_NAME_TAG: sorted(tenants)}))
        for record in records:
            tenant = record.dagster_run.tags.get(PARTITION_NAME_TAG)
            if tenant in intervals and (tenant not in recent or record.create_timestamp > recent[tenant]):
                recent[tenant] = record.create_timestamp
    return recent


# ---- pure decisions --------------------------------------------------------------------------------


def routine_window_start(now: datetime, minutes: int) -> int:
    """Epoch second at which the tenant's current interval window started."""
    size = minutes * 60
    return int(now.timestamp()) // size * size


def routine_run_requests(intervals: Mapping[str, int], recent: Mapping[str, datetime],
                         busy: Mapping[str, str], now: datetime) -> tuple[list[dg.RunRequest], list[str]]:
    """Run requests for the due tenants, and one line per tenant that is not due."""
    requests, skipped = [], []
    for tenant in sorted(intervals):
        minutes = intervals[tenant]
        if tenant in busy:
            skipped.append(f"{tenant}: sync run {busy[tenant]} still queued or running")
        elif tenant in recent:
            skipped.append(f"{tenant}: last routine sync {recent[tenant].isoformat(timespec='seconds')}, "
                           f"interval {minutes} min")
        else:
            window = routine_window_start(now, minutes)
            requests.append(dg.RunRequest(run_key=f"routine:{tenant}:{window}", partition_key=tenant,
                                          tags={TENANT_TAG: tenant}))
    return requests, skipped


def due_full_syncs(tenants: Mapping[str, TenantConfig], since: datetime, now: datetime) -> dict[str, datetime]:
    """Tenant -> latest fire time of its full-sync cron (in its time zone) in (since, now]."""
    due = {}
    for tenant_id, cfg in sorted(tenants.items()):
        fired = latest_completed_cron_tick(cfg.crm.full_sync_cron, now, cfg.crm.timezone)
        if since < fired <= now:
            due[tenant_id] = fired
    return due


def full_run_requests(due: Mapping[str, datetime], busy: Mapping[str, str]) -> tuple[list[dg.RunRequest], list[str]]:
    requests, skipped = [], []
    for tenant, fired in due.items():
        if tenant in busy:
            skipped.append(f"{tenant}: full sync run {busy[tenant]} still queued or running")
            continue
        fire_utc = fired.astimezone(timezone.utc).isoformat()
        requests.append(dg.RunRequest(run_key=f"full:{tenant}:{fire_utc}", partition_key=tenant,
                                      tags={TENANT_TAG: tenant}))
    return requests, skipped


# ---- definitions -----------------------------------------------------------------------------------


def _partition_keys(job: Any) -> set[str]:
    partitions_def = getattr(job, "partitions_def", None)
    return set(partitions_def.get_partition_keys()) if partitions_def is not None else set()


def _tenants(resource: TenantsResource, known: set[str], log) -> dict[str, TenantConfig]:
    tenants = load_tenants(resource.tenants_file)  # re-read each tick: interval/cron edits apply at once
    unknown = sorted(set(tenants) - known)
    if unknown:
        log.warning(f"tenants {unknown} are not partitions yet: reload the code location to sync them")
    return {t: cfg for t, cfg in tenants.items() if t in known}


def build_routine_sync_sensor(job: Any) -> dg.SensorDefinition:
    known = _partition_keys(job)

    @dg.sensor(name="routine_sync_sensor", job=job, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
               default_status=automation_default_status(),
               description="Requests a routine_sync run for every tenant whose routine_sync_minutes (default "
                           "15) have elapsed since its last routine sync; skips tenants with a sync in progress.")
    def routine_sync_sensor(context: dg.SensorEvaluationContext, tenants: TenantsResource):
        now = dagster_now()
        configs = _tenants(tenants, known, context.log)
        intervals = {t: cfg.crm.routine_sync_minutes for t, cfg in configs.items()}
        busy = busy_tenants(context.instance)
        recent = recently_synced(context.instance, {t: m for t, m in intervals.items() if t not in busy}, now)
        requests, skipped = routine_run_requests(intervals, recent, busy, now)
        for line in skipped:
            context.log.debug(line)
        if not requests:
            return dg.SkipReason(f"no tenant due ({len(intervals)} tenants): " + "; ".join(skipped[:20]))
        context.log.info(f"routine sync due for {[r.partition_key for r in requests]}")
        return requests

    return routine_sync_sensor


def build_full_sync_schedule(job: Any) -> dg.ScheduleDefinition:
    known = _partition_keys(job)

    @dg.schedule(name="full_sync_schedule", cron_schedule=FULL_SYNC_TICK_CRON, job=job, execution_timezone="UTC",
                 default_status=_schedule_default_status(),
                 description="Every 15 minutes: requests a full_sync run for each tenant whose full_sync_cron "
                             "(tenant time zone; default Close weekends, Zoho/Salesforce nightly) fired since the "
                             "previous tick.")
    def full_sync_schedule(context: dg.ScheduleEvaluationContext, tenants: TenantsResource):
        now = (context.scheduled_execution_time or dagster_now()).astimezone(timezone.utc)
        configs = _tenants(tenants, known, context.log)
        due = due_full_syncs(configs, now - timedelta(minutes=FULL_SYNC_TICK_MINUTES), now)
        if not due:
            return dg.SkipReason(f"no full sync due at {now.isoformat()} ({len(configs)} tenants)")
        requests, skipped = full_run_requests(due, busy_tenants(context.instance, [FULL_JOB]))
        for line in skipped:
            context.log.info(line)
        return requests or dg.SkipReason("; ".join(skipped))

    return full_sync_schedule


def build_sensors(jobs: dict[str, Any]) -> list[dg.SensorDefinition]:
    sensors = [build_failure_sensor(jobs)]
    if ROUTINE_JOB in jobs:
        sensors.insert(0, build_routine_sync_sensor(jobs[ROUTINE_JOB]))
    return sensors


def build_schedules(jobs: dict[str, Any]) -> list[dg.ScheduleDefinition]:
    return [build_full_sync_schedule(jobs[FULL_JOB])] if FULL_JOB in jobs else []


def build_automation_checks(partitions_def: dg.PartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    return [build_sync_health_check(partitions_def)]
