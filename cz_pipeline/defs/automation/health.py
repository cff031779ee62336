"""Sync status and health per tenant, visible in the UI.

- `sync_health`: a non-blocking, WARN-severity asset check on `crm/leads`, partitioned by tenant.
  Inside every sync run it runs after the raw CRM assets and publishes the tenant's status from
  the run ledger (`sync.tenant_status`, migration 5): last routine and last full sync (time,
  modes, records read/written/removed, API calls), consecutive failed syncs, per-entity cursors.
- `sync_health_on_failure`: a run-failure sensor. A failed sync run never reaches the in-run
  check (an asset check is skipped when its asset fails), so this sensor records the failing
  evaluation of the same check for the run's tenant, counting consecutive failed sync runs from
  the Dagster instance (that includes failures before the engine wrote a ledger row, such as a
  missing secret). The check turns WARN from the second consecutive failure; the next good sync
  turns it green again. Result: the Asset Checks tab of `crm/leads` shows each tenant at a glance.
"""

import warnings
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
import sqlalchemy as sa

from cz_pipeline.dagster_private import PARTITION_NAME_TAG, report_event_in_run

from ..resources import WarehouseResource, markdown_table

LEADS = dg.AssetKey(["crm", "leads"])
RAW_CRM_DEPS = [dg.AssetKey(["crm", e]) for e in ("contacts", "deals", "tasks", "users")]
CHECK_NAME = "sync_health"
FAILURES_BEFORE_WARN = 2  # one failure is usually transient (the next sync retries); two in a row is a pattern
SYNC_JOBS = ("routine_sync", "full_sync")


def tenant_status(engine: sa.Engine, tenant_id: str) -> dict[str, Any] | None:
    """The tenant's row of `sync.tenant_status` (None before its first sync)."""
    with engine.connect() as conn:
        row = conn.execute(sa.text("SELECT * FROM sync.tenant_status WHERE tenant_id = :t"),
                           {"t": tenant_id}).mappings().first()
    return dict(row) if row else None


def entity_cursors(engine: sa.Engine, tenant_id: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT entity, last_mode, last_sync_at, last_full_sync_at, high_water FROM sync.cursors "
            "WHERE tenant_id = :t ORDER BY entity"), {"t": tenant_id}).mappings().all()
    return [dict(r) for r in rows]


def _summary(status: dict[str, Any], kind: str) -> str:
    if status.get(f"last_{kind}_at") is None:
        return "never"
    return (f"{status[f'last_{kind}_status']} · {status[f'last_{kind}_modes']} · read {status[f'last_{kind}_read']}, "
            f"written {status[f'last_{kind}_written']}, removed {status[f'last_{kind}_removed']}, "
            f"{status[f'last_{kind}_api_calls']} API calls")


def status_metadata(status: dict[str, Any] | None, cursors: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Asset-check metadata: the tenant's last routine and full sync, and its failure streak."""
    if status is None:
        return {"last_routine_sync": "never", "last_full_sync": "never", "consecutive_failed_syncs": 0}
    meta: dict[str, Any] = {}
    for kind in ("routine", "full"):
        at: datetime | None = status.get(f"last_{kind}_at")
        if at is not None:
            meta[f"last_{kind}_sync_at"] = dg.MetadataValue.timestamp(at)
        meta[f"last_{kind}_sync"] = _summary(status, kind)
    if status.get("last_success_at") is not None:
        meta["last_successful_sync_at"] = dg.MetadataValue.timestamp(status["last_success_at"])
    meta["consecutive_failed_syncs"] = int(status.get("consecutive_failures") or 0)
    if status.get("last_error"):
        meta["last_error"] = str(status["last_error"])[:500]
    if cursors:
        meta["entities"] = dg.MetadataValue.md(markdown_table(list(cursors), limit=20))
    return meta


def build_sync_health_check(partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    # Partitioned checks are a preview feature of Dagster 1.13; we use them on purpose (one result
    # per tenant), so their PreviewWarning is silenced here rather than printed at every load.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)
        return _sync_health_check(partitions_def)


def _sync_health_check(partitions_def: dg.PartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=LEADS, name=CHECK_NAME, blocking=False, partitions_def=partitions_def,
        additional_deps=RAW_CRM_DEPS,
        description=("Tenant sync health (WARN, non-blocking): fails when the tenant's last "
                     f"{FAILURES_BEFORE_WARN} or more syncs failed. Metadata: last routine and full sync "
                     "(time, modes, records read/written/removed, API calls) from sync.tenant_status."),
    )
    def sync_health(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        tenant_id = context.partition_key
        engine = warehouse.engine()
        status = tenant_status(engine, tenant_id)
        failures = int((status or {}).get("consecutive_failures") or 0)
        passed = failures < FAILURES_BEFORE_WARN
        return dg.AssetCheckResult(
            passed=passed, severity=dg.AssetCheckSeverity.WARN,
            description=None if passed else f"{failures} consecutive failed syncs for tenant {tenant_id!r}",
            metadata=status_metadata(status, entity_cursors(engine, tenant_id)))

    return sync_health


def consecutive_failed_runs(instance: dg.DagsterInstance, tenant_id: str,
                            job_names: Iterable[str] = SYNC_JOBS, lookback: int = 50) -> tuple[int, datetime | None]:
    """Failed sync runs of the tenant since its last successful one (newest first, at most
    `lookback` finished runs read), and when that success was created."""
    jobs = set(job_names)
    records = instance.get_run_records(
        dg.RunsFilter(tags={PARTITION_NAME_TAG: tenant_id},
                      statuses=[dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE]),
        limit=lookback)
    failures = 0
    for record in records:  # newest first
        if record.dagster_run.job_name not in jobs:
            continue
        if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS:
            return failures, record.create_timestamp
        failures += 1
    return failures, None


def failure_evaluation(instance: dg.DagsterInstance, run: dg.DagsterRun, message: str | None) -> dg.AssetCheckEvaluation | None:
    """The `sync_health` evaluation for the tenant of a failed sync run (None: not a tenant run)."""
    tenant_id = run.tags.get(PARTITION_NAME_TAG)
    if not tenant_id:
        return None
    failures, last_success = consecutive_failed_runs(instance, tenant_id)
    failures = max(failures, 1)  # the run that triggered us failed, even if storage lags
    passed = failures < FAILURES_BEFORE_WARN
    metadata: dict[str, Any] = {
        "consecutive_failed_syncs": failures,
        "failed_run": dg.MetadataValue.dagster_run(run.run_id),
        "failed_job": run.job_name,
    }
    if last_success is not None:
        metadata["last_successful_sync_at"] = dg.MetadataValue.timestamp(last_success)
    if message:  # Dagster's own summary (e.g. which steps failed); the engine keeps secrets out of errors
        metadata["failure"] = message[:500]
    return dg.AssetCheckEvaluation(
        asset_key=LEADS, check_name=CHECK_NAME, passed=passed, severity=dg.AssetCheckSeverity.WARN,
        partition=tenant_id, metadata=metadata,
        description=(f"{failures} consecutive failed syncs for tenant {tenant_id!r}" if not passed else
                     f"the last sync of tenant {tenant_id!r} failed (warns from {FAILURES_BEFORE_WARN} in a row)"))


def report_in_run(instance: dg.DagsterInstance, run: dg.DagsterRun, evaluation: dg.AssetCheckEvaluation) -> None:
    """Record the evaluation in the failed run itself: it completes the check execution the run
    planned (and skipped), so the UI links the warning to the run that failed. (A runless report
    would not do: Dagster keeps one runless execution per check and partition.)"""
    report_event_in_run(
        instance, run,
        dg.DagsterEvent(event_type_value=dg.DagsterEventType.ASSET_CHECK_EVALUATION.value, job_name=run.job_name,
                        event_specific_data=evaluation, message=evaluation.description))


def build_failure_sensor(jobs: dict[str, Any]) -> dg.SensorDefinition:
    monitored = [jobs[name] for name in SYNC_JOBS if name in jobs]

    @dg.run_failure_sensor(
        name="sync_health_on_failure", monitored_jobs=monitored, minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,  # passive: it only records check results
        description="Records the crm/leads sync_health check (WARN) for the tenant of every failed sync run.")
    def sync_health_on_failure(context: dg.RunFailureSensorContext):
        message = context.failure_event.message if context.failure_event else None
        evaluation = failure_evaluation(context.instance, context.dagster_run, message)
        if evaluation is not None:
            report_in_run(context.instance, context.dagster_run, evaluation)
            context.log.info(f"sync_health for {evaluation.partition}: "
                             f"{evaluation.metadata['consecutive_failed_syncs'].value} consecutive failed syncs")

    return sync_health_on_failure
