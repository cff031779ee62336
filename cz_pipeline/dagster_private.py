"""Every private Dagster API this project uses, in one place, each with what would replace it.

Dagster 1.13 has no public equivalent for these; when one appears, change it here only. The
automation and config code import from this module, never from `dagster._…` directly."""

from __future__ import annotations

from datetime import datetime

import dagster as dg

from dagster._core.storage.dagster_run import NOT_FINISHED_STATUSES as _NOT_FINISHED
from dagster._core.storage.tags import PARTITION_NAME_TAG as _PARTITION_NAME_TAG
from dagster._time import get_current_datetime as _get_current_datetime
from dagster._utils.schedules import get_latest_completed_cron_tick as _latest_tick
from dagster._utils.schedules import is_valid_cron_string as _is_valid_cron

# The run tag holding a run's partition key ("dagster/partition"); public replacement: a
# documented constant on `dg` (today only the string is documented).
PARTITION_NAME_TAG: str = _PARTITION_NAME_TAG

# Run statuses of runs that have not finished (queued, starting, started, canceling, …);
# public replacement: a `DagsterRunStatus` helper or `RunsFilter(finished=False)`.
NOT_FINISHED_STATUSES = list(_NOT_FINISHED)


def now() -> datetime:
    """Dagster's clock: the one its run storage stamps runs with, and the one its test utilities
    freeze. Public replacement: none (datetime.now(timezone.utc) is not frozen by `freeze_time`)."""
    return _get_current_datetime()


def latest_completed_cron_tick(cron: str, at: datetime, timezone: str) -> datetime | None:
    """The most recent tick of a cron schedule at or before `at`, in the schedule's time zone, with
    Dagster's own cron semantics (so it agrees with the schedules it builds). Public
    replacement: none."""
    return _latest_tick(cron, at, timezone)


def is_valid_cron(cron: str) -> bool:
    """Whether Dagster accepts a cron string for a schedule (validated when the tenants file is
    loaded, so an invalid cron names its tenant). Public replacement: none."""
    return _is_valid_cron(cron)


def report_event_in_run(instance: dg.DagsterInstance, run: dg.DagsterRun, event: dg.DagsterEvent) -> None:
    """Store an event in an existing (finished) run's event log. Public replacement:
    `instance.report_runless_asset_event` covers runless events only, and keeps one runless check
    execution per check and partition, which would hide the run the event belongs to."""
    instance.report_dagster_event(event, run_id=run.run_id)
