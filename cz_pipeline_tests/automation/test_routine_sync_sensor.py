"""Seed "Routine Syncing — Default: Every 15 minutes": the sensor requests a routine sync for exactly
the tenants whose interval has elapsed since their last routine sync, once per window, never for a
tenant whose previous sync is still queued or running."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from dagster._core.storage.tags import PARTITION_NAME_TAG
from dagster._core.test_utils import freeze_time

from cz_pipeline.definitions import build_defs
from cz_pipeline.defs.automation.automation import ROUTINE_TOLERANCE_SECONDS

from automation_helpers import close_tenant, finish_run, make_run, zoho_tenant

UTC = timezone.utc
NOW = datetime(2026, 3, 10, 10, 7, 30, tzinfo=UTC)  # a Tuesday morning
S = dg.DagsterRunStatus


def window(minutes: int, at: datetime = NOW) -> int:
    size = minutes * 60
    return int(at.timestamp()) // size * size


@pytest.fixture
def defs(write_tenants) -> dg.Definitions:
    path = write_tenants({
        "fast_due": close_tenant(routine_sync_minutes=5),        # last routine 6.5 min ago -> due
        "default_recent": close_tenant(),                         # 15 min, last 7.5 min ago -> not due
        "never_synced": zoho_tenant(),                             # no routine run yet -> due
        "busy_full": close_tenant(routine_sync_minutes=5),        # a full sync is running -> skipped
        "queued_routine": zoho_tenant(routine_sync_minutes=5),    # its routine run is still queued -> skipped
        "hourly_recent": close_tenant(routine_sync_minutes=60),   # last 37.5 min ago -> not due
        "hourly_due": zoho_tenant(routine_sync_minutes=60),       # last 67.5 min ago -> due
    })
    return build_defs(str(path))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, at: datetime):
    sensor = defs.get_sensor_def("routine_sync_sensor")
    with freeze_time(at), dg.build_sensor_context(instance=instance, definitions=defs, sensor_name=sensor.name,
                                                  resources={"tenants": defs.resources["tenants"]}) as context:
        return sensor.evaluate_tick(context)


def launch(instance: dg.DagsterInstance, result, at: datetime, status: dg.DagsterRunStatus) -> None:
    """What the daemon does with the tick's requests: one run per request, tagged like it."""
    for request in result.run_requests:
        make_run(instance, "routine_sync", request.partition_key, status, at,
                 extra_tags={**request.tags, "dagster/run_key": request.run_key})


@pytest.fixture
def history(instance: dg.DagsterInstance) -> dg.DagsterInstance:
    make_run(instance, "routine_sync", "fast_due", S.SUCCESS, NOW - timedelta(minutes=6.5))
    make_run(instance, "routine_sync", "fast_due", S.SUCCESS, NOW - timedelta(minutes=11.5))
    make_run(instance, "routine_sync", "default_recent", S.SUCCESS, NOW - timedelta(minutes=7.5))
    make_run(instance, "routine_sync", "busy_full", S.SUCCESS, NOW - timedelta(minutes=30))
    make_run(instance, "full_sync", "busy_full", S.STARTED, NOW - timedelta(minutes=20))
    make_run(instance, "routine_sync", "queued_routine", S.QUEUED, NOW - timedelta(minutes=9))
    make_run(instance, "routine_sync", "hourly_recent", S.FAILURE, NOW - timedelta(minutes=37.5))
    make_run(instance, "routine_sync", "hourly_due", S.SUCCESS, NOW - timedelta(minutes=67.5))
    # Neither a finished full sync nor another job's running run delays a routine sync.
    make_run(instance, "full_sync", "never_synced", S.SUCCESS, NOW - timedelta(minutes=3))
    make_run(instance, "writeback", "never_synced", S.STARTED, NOW - timedelta(minutes=1))
    return instance


def test_tick_requests_exactly_the_due_tenants_with_window_run_keys_and_tenant_tags(defs, history):
    result = tick(defs, history, NOW)
    requests = {r.partition_key: r for r in result.run_requests}
    assert set(requests) == {"fast_due", "never_synced", "hourly_due"}
    assert requests["fast_due"].run_key == f"routine:fast_due:{window(5)}"
    assert requests["never_synced"].run_key == f"routine:never_synced:{window(15)}"
    assert requests["hourly_due"].run_key == f"routine:hourly_due:{window(60)}"
    for tenant, request in requests.items():
        assert request.tags["cz/tenant"] == tenant
        assert request.job_name in (None, "routine_sync")


def test_second_tick_in_the_same_window_requests_nothing(defs, history):
    first = tick(defs, history, NOW)
    assert first.run_requests
    launch(history, first, NOW, S.QUEUED)
    # Still queued: skipped as in progress.
    second = tick(defs, history, NOW + timedelta(seconds=60))
    assert second.run_requests == [] and "still queued or running" in second.skip_message
    # Finished: the interval has not elapsed since, so nothing either.
    for record in history.get_run_records(dg.RunsFilter(statuses=[S.QUEUED], job_name="routine_sync")):
        if record.dagster_run.tags["cz/tenant"] != "queued_routine":
            finish_run(history, record.dagster_run)
    third = tick(defs, history, NOW + timedelta(seconds=120))
    assert third.run_requests == [] and "last routine sync" in third.skip_message


def test_a_tenant_is_requested_again_once_its_interval_has_elapsed_with_a_new_key(defs, history):
    first = tick(defs, history, NOW)
    launch(history, first, NOW, S.SUCCESS)
    assert not tick(defs, history, NOW + timedelta(minutes=4)).run_requests
    # Due once the interval has elapsed, give or take half a tick (ticks drift by fractions of a
    # second; without the slack a 5-minute tenant would sync every 6 minutes).
    later = NOW + timedelta(minutes=5) - timedelta(seconds=ROUTINE_TOLERANCE_SECONDS - 1)
    result = tick(defs, history, later)
    requests = {r.partition_key: r.run_key for r in result.run_requests}
    assert requests == {"fast_due": f"routine:fast_due:{window(5, later)}"}
    assert window(5, later) != window(5)  # a new window, so a new key


def test_a_tenant_with_an_in_progress_sync_is_skipped_until_it_finishes(defs, history):
    result = tick(defs, history, NOW)
    assert "busy_full" not in {r.partition_key for r in result.run_requests}
    assert "queued_routine" not in {r.partition_key for r in result.run_requests}
    (busy,) = history.get_run_records(dg.RunsFilter(job_name="full_sync", tags={PARTITION_NAME_TAG: "busy_full"}))
    finish_run(history, busy.dagster_run)
    result = tick(defs, history, NOW + timedelta(seconds=60))
    assert "busy_full" in {r.partition_key for r in result.run_requests}


def test_sensor_is_stopped_by_default_and_running_for_the_demo(write_tenants, monkeypatch):
    path = str(write_tenants({"a": close_tenant()}))
    monkeypatch.delenv("CZ_DEMO", raising=False)
    defs = build_defs(path)
    assert defs.get_sensor_def("routine_sync_sensor").default_status == dg.DefaultSensorStatus.STOPPED
    assert defs.get_schedule_def("full_sync_schedule").default_status == dg.DefaultScheduleStatus.STOPPED
    monkeypatch.setenv("CZ_DEMO", "1")
    defs = build_defs(path)
    assert defs.get_sensor_def("routine_sync_sensor").default_status == dg.DefaultSensorStatus.RUNNING
    assert defs.get_schedule_def("full_sync_schedule").default_status == dg.DefaultScheduleStatus.RUNNING
