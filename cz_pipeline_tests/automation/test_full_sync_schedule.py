"""Seeds "Full Syncing — Default: Weekends" (Close) and "Default: Nightly" (Zoho CRM): the full-sync
schedule requests one full_sync per due tenant, in the tenant's time zone, and a tenant's own
`full_sync_cron` wins over its CRM's default."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
from automation_helpers import close_tenant, make_run, zoho_tenant

from cz_pipeline.definitions import build_defs

UTC = timezone.utc
SATURDAY_2AM = datetime(2026, 3, 7, 2, 0, tzinfo=UTC)
TUESDAY_2AM = datetime(2026, 3, 10, 2, 0, tzinfo=UTC)


@pytest.fixture
def defs(write_tenants) -> dg.Definitions:
    path = write_tenants({
        "close_default": close_tenant(),                                    # weekends 02:00 UTC
        "close_new_york": close_tenant(timezone="America/New_York"),        # weekends 02:00 New York
        "close_tuesdays": close_tenant(full_sync_cron="30 2 * * 2"),        # override: Tuesdays 02:30
        "zoho_default": zoho_tenant(),                                      # nightly 02:00 UTC
        "zoho_saturdays": zoho_tenant(full_sync_cron="0 4 * * 6"),          # override: Saturdays 04:00
    })
    return build_defs(str(path))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, at: datetime):
    schedule = defs.get_schedule_def("full_sync_schedule")
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                   repository_def=defs.get_repository_def(),
                                   resources={"tenants": defs.resources["tenants"]}) as context:
        return schedule.evaluate_tick(context)


def due(result) -> dict[str, str]:
    return {r.partition_key: r.run_key for r in result.run_requests or []}


def test_on_a_saturday_the_close_tenants_get_full_syncs(defs, instance):
    result = tick(defs, instance, SATURDAY_2AM)
    # Zoho's default is nightly, so Saturdays too; the override moves zoho_saturdays to 04:00.
    assert due(result) == {"close_default": "full:close_default:2026-03-07T02:00:00+00:00",
                           "zoho_default": "full:zoho_default:2026-03-07T02:00:00+00:00"}
    for request in result.run_requests:
        assert request.tags["cz/tenant"] == request.partition_key
    # 02:00 in New York is 07:00 UTC (EST before the 8 March DST switch).
    assert set(due(tick(defs, instance, SATURDAY_2AM + timedelta(hours=5)))) == {"close_new_york"}
    assert set(due(tick(defs, instance, SATURDAY_2AM + timedelta(hours=2)))) == {"zoho_saturdays"}


def test_on_a_tuesday_night_only_the_zoho_tenants_get_full_syncs(defs, instance):
    assert due(tick(defs, instance, TUESDAY_2AM)) == {"zoho_default": "full:zoho_default:2026-03-10T02:00:00+00:00"}


def test_a_tenant_override_wins_over_the_crm_default(defs, instance):
    # close_tuesdays: a Close tenant synced fully on Tuesdays at 02:30, not at the weekend.
    assert due(tick(defs, instance, TUESDAY_2AM + timedelta(minutes=30))) == {
        "close_tuesdays": "full:close_tuesdays:2026-03-10T02:30:00+00:00"}
    assert "close_tuesdays" not in due(tick(defs, instance, SATURDAY_2AM))
    assert "zoho_saturdays" not in due(tick(defs, instance, TUESDAY_2AM))


def test_a_late_tick_requests_the_same_run_key_and_quiet_ticks_skip(defs, instance):
    late = due(tick(defs, instance, SATURDAY_2AM + timedelta(minutes=10)))
    assert late == due(tick(defs, instance, SATURDAY_2AM))  # same fire time -> same key -> one run
    quiet = tick(defs, instance, SATURDAY_2AM + timedelta(minutes=15))
    assert not quiet.run_requests and "no full sync due" in quiet.skip_message


def test_a_tenant_whose_full_sync_is_still_running_is_not_queued_twice(defs, instance):
    make_run(instance, "full_sync", "close_default", dg.DagsterRunStatus.STARTED, SATURDAY_2AM - timedelta(hours=20))
    assert set(due(tick(defs, instance, SATURDAY_2AM))) == {"zoho_default"}
