"""The data-quality gate: bad source data never silently reaches analysts.

Within a run, a failing blocking check stops `cs/accounts`, `cs/account_hierarchy` and everything
downstream for the tenant while raw data still lands; across runs, a `cs` asset materialised on
its own refuses while the latest blocking check upstream failed. Thresholds are per tenant and per
check: these tests set strict ones (0: any offending record blocks) where they exercise blocking;
the defaults (quarantine and publish the rest) are covered in test_dirty_tenant.py."""

from __future__ import annotations

import dagster as dg

from cz_pipeline.sandbox.close import STATUS_IDS, CloseSandbox
from cz_pipeline_tests.conftest import CF, rows, scalar
from cz_pipeline_tests.quality.conftest import (check_evaluations, cs_snapshot, failure_messages, materialize,
                                                materialized, new_account, set_lead)

STRICT_UNIQUE = {"account_external_id_unique": 0.0}
DOWNSTREAM_OF_LEADS = {"cs/accounts", "cs/account_hierarchy", "cs/contacts", "cs/deals", "cs/tasks", "cs/activities"}


def _inject_duplicates(control) -> tuple[dict, dict]:
    """Two new synced leads sharing one AccountExternalID (no deals, tasks or children)."""
    return new_account(control, "Q-DUP", name="Dup One"), new_account(control, "Q-DUP", name="Dup Two")


def test_duplicate_account_ids_above_the_threshold_block_cs_in_that_run_and_keep_the_last_good_rows(
        quality_tenant, tenant_id, engine, close_control, close_app: CloseSandbox):
    runner = quality_tenant(STRICT_UNIQUE)
    runner.run("full_sync", tenant_id)
    before = cs_snapshot(engine, tenant_id)
    assert before["accounts"] and before["account_hierarchy"] and before["contacts"]

    first, second = _inject_duplicates(close_control)
    renamed = next(lead for lead in close_app.dump("lead") if lead["status_label"] == "Customer")
    set_lead(close_control, renamed["id"], name="Renamed While Blocked")
    result = runner.run("routine_sync", tenant_id, raise_on_error=False)

    # The run shows the failing check, with counts, the failing expectation and offending ids.
    assert not result.success
    unique = check_evaluations(result)["account_external_id_unique"]
    assert not unique.passed and unique.severity == dg.AssetCheckSeverity.ERROR and unique.blocking
    assert unique.metadata["offending"].value == 2
    assert unique.metadata["failing_expectation"].value == "expect_column_values_to_be_unique"
    assert unique.metadata["threshold"].value == 0.0
    sample = unique.metadata["sample_offending_ids"].value
    assert first["id"] in sample and second["id"] in sample and "Q-DUP" in sample
    assert "account_external_id_unique" in failure_messages(result)
    # Nothing downstream of crm/leads ran; raw data landed; analysts see exactly the last good rows.
    assert not DOWNSTREAM_OF_LEADS & materialized(result)
    assert {"crm/leads", "crm/contacts", "crm/deals", "crm/tasks", "cs/users"} <= materialized(result)
    assert scalar(engine, "SELECT count(*) FROM raw.leads WHERE tenant_id = :t AND source_id IN (:a, :b)",
                  t=tenant_id, a=first["id"], b=second["id"]) == 2
    assert scalar(engine, "SELECT payload->>'name' FROM raw.leads WHERE tenant_id = :t AND source_id = :s",
                  t=tenant_id, s=renamed["id"]) == "Renamed While Blocked"
    assert cs_snapshot(engine, tenant_id) == before
    latest = rows(engine, "SELECT passed, offending, failing_expectation, dagster_run_id FROM sync.check_status "
                          "WHERE tenant_id = :t AND check_name = 'account_external_id_unique'", t=tenant_id)
    assert latest == [{"passed": False, "offending": 2, "failing_expectation": "expect_column_values_to_be_unique",
                       "dagster_run_id": result.run_id}]

    # Fixed at the source: the next run passes and publishes what was held back.
    set_lead(close_control, second["id"], **{CF["account_id"]: "Q-DUP-2"})
    fixed = runner.run("routine_sync", tenant_id)
    assert DOWNSTREAM_OF_LEADS <= materialized(fixed)
    names = {r["account_external_id"]: r["name"] for r in rows(
        engine, "SELECT account_external_id, name FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)}
    assert names["Q-DUP"] == "Dup One" and names["Q-DUP-2"] == "Dup Two"
    assert names[renamed[CF["account_id"]]] == "Renamed While Blocked"
    assert {"Q-DUP", "Q-DUP-2"} <= {r["account_external_id"] for r in rows(
        engine, "SELECT account_external_id FROM cs.account_hierarchy WHERE tenant_id = :t", t=tenant_id)}


def test_a_tenant_threshold_above_the_duplicate_share_lets_good_accounts_publish_and_quarantines_the_duplicates(
        quality_tenant, tenant_id, engine, close_control):
    first, second = _inject_duplicates(close_control)
    strict = quality_tenant({"account_external_id_unique": 0.05}, name="strict.yaml")
    blocked = strict.run("full_sync", tenant_id, raise_on_error=False)
    unique = check_evaluations(blocked)["account_external_id_unique"]
    share = unique.metadata["share"].value
    assert not unique.passed and 0.05 < share < 0.2  # 2 of the ~22 synced leads
    assert scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id) == 0

    tolerant = quality_tenant({"account_external_id_unique": 0.2}, name="tolerant.yaml")
    result = tolerant.run("full_sync", tenant_id)
    unique = check_evaluations(result)["account_external_id_unique"]
    assert unique.passed and unique.metadata["offending"].value == 2 and unique.metadata["share"].value == share
    assert {"cs/accounts", "cs/account_hierarchy"} <= materialized(result)
    total = unique.metadata["total"].value
    assert scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id) == total - 2
    assert {r["source_id"]: r["reason"] for r in rows(
        engine, "SELECT source_id, reason FROM sync.quarantine WHERE tenant_id = :t AND entity = 'accounts'",
        t=tenant_id)} == {first["id"]: "duplicate_account_external_id", second["id"]: "duplicate_account_external_id"}


def test_the_cross_run_gate_refuses_a_standalone_cs_accounts_materialization_after_a_failed_check(
        quality_tenant, tenant_id, engine, close_control):
    runner = quality_tenant(STRICT_UNIQUE)
    runner.run("full_sync", tenant_id)
    _, second = _inject_duplicates(close_control)
    assert not runner.run("routine_sync", tenant_id, raise_on_error=False).success
    before = cs_snapshot(engine, tenant_id)

    for table in ("accounts", "account_hierarchy", "contacts"):
        alone = materialize(runner, tenant_id, dg.AssetSelection.assets(["cs", table]))
        assert not alone.success, table
        message = failure_messages(alone)
        assert f"tenant {tenant_id!r}" in message and "crm/leads:account_external_id_unique" in message, message
        assert f"cs/{table} refused to publish" in message
    assert cs_snapshot(engine, tenant_id) == before

    # Raw data landed WITHOUT its checks (checks deselected) is never taken on trust: the gate
    # sees that the latest results predate it and evaluates the checks itself.
    set_lead(close_control, second["id"], **{CF["account_id"]: "Q-DUP-2"})
    landed = materialize(runner, tenant_id, dg.AssetSelection.assets(["crm", "leads"]).without_checks())
    assert landed.success and not landed.get_asset_check_evaluations()
    published = materialize(runner, tenant_id, dg.AssetSelection.assets(["cs", "accounts"]))
    assert published.success
    assert {"Q-DUP", "Q-DUP-2"} <= {r["account_external_id"] for r in rows(
        engine, "SELECT account_external_id FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)}
    assert rows(engine, "SELECT passed, dagster_run_id FROM sync.check_status WHERE tenant_id = :t "
                        "AND check_name = 'account_external_id_unique'", t=tenant_id) == [
        {"passed": True, "dagster_run_id": published.run_id}]

    # ...and bad raw data landed without checks is refused the same way.
    new_account(close_control, "Q-DUP", name="Dup Three")
    assert materialize(runner, tenant_id, dg.AssetSelection.assets(["crm", "leads"]).without_checks()).success
    refused = materialize(runner, tenant_id, dg.AssetSelection.assets(["cs", "accounts"]))
    assert not refused.success and "crm/leads:account_external_id_unique" in failure_messages(refused)


def test_bad_contacts_past_the_threshold_block_only_the_contacts_side_and_a_drop_under_half_does_not_block(
        quality_tenant, tenant_id, engine, close_control, close_app: CloseSandbox):
    runner = quality_tenant({"contact_external_id_valid": 0.0, "contact_external_id_unique": 0.0})
    runner.run("full_sync", tenant_id)
    synced = [lead for lead in close_app.dump("lead") if lead["status_label"] in ("Customer", "Trial")]
    taken = next(c for c in close_app.dump("contact") if c["lead_id"] == synced[0]["id"])["emails"][0]["email"]
    bad = close_control.mutate("create", "contact", data={"lead_id": synced[1]["id"], "name": "Not An Email",
                                                          "emails": [{"email": "not-an-email"}]})
    twin = close_control.mutate("create", "contact", data={"lead_id": synced[2]["id"], "name": "Twin",
                                                           "emails": [{"email": taken.upper()}]})
    # A drop of the leads meeting the sync filter (none of them a parent), but by less than half.
    parents = {lead.get(CF["parent_account_id"]) for lead in synced}
    leaving = [lead for lead in synced[3:] if lead[CF["account_id"]] not in parents][:8]
    for lead in leaving:
        set_lead(close_control, lead["id"], status_id=STATUS_IDS["Potential"])
    accounts_before = scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)

    result = runner.run("routine_sync", tenant_id, raise_on_error=False)
    evaluations = check_evaluations(result)
    valid, unique = evaluations["contact_external_id_valid"], evaluations["contact_external_id_unique"]
    assert not valid.passed and valid.metadata["offending"].value == 1 and bad["id"] in valid.metadata[
        "sample_offending_ids"].value
    assert not unique.passed and unique.metadata["offending"].value == 2 and twin["id"] in unique.metadata[
        "sample_offending_ids"].value
    drop = evaluations["account_count_drop"]
    assert drop.passed and drop.blocking and drop.metadata["offending"].value == len(leaving)
    assert 0.25 < drop.metadata["share"].value < 0.5
    assert evaluations["contacts_without_account"].severity == dg.AssetCheckSeverity.WARN
    assert evaluations["account_external_id_unique"].passed
    # Contacts and what hangs off them are held back; accounts are not.
    assert {"cs/accounts", "cs/account_hierarchy", "cs/deals"} <= materialized(result)
    assert not {"cs/contacts", "cs/tasks", "cs/activities"} & materialized(result)
    assert rows(engine, "SELECT count(*) AS n FROM cs.contacts WHERE tenant_id = :t AND crm_id IN (:a, :b)",
                t=tenant_id, a=bad["id"], b=twin["id"]) == [{"n": 0}]
    # Routine sync: accounts that left the sync filter stay until a full sync removes them (seed).
    assert scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id) == accounts_before


def test_deals_and_tasks_of_a_lead_that_lost_its_account_id_fail_the_reference_checks(
        quality_tenant, tenant_id, engine, close_control, close_app: CloseSandbox):
    # The tenant tolerates leads without an AccountExternalID (quarantined; the default), but not a
    # single deal or task dropping out of cs with them.
    runner = quality_tenant({"deals_reference_synced_account": 0.0, "tasks_reference_synced_account": 0.0})
    runner.run("full_sync", tenant_id)
    synced_leads = [lead for lead in close_app.dump("lead") if lead["status_label"] in ("Customer", "Trial")]
    synced = {lead["id"] for lead in synced_leads}
    deals = [o for o in close_app.dump("opportunity") if o["lead_id"] in synced]
    tasks = [t for t in close_app.dump("task") if t["lead_id"] in synced]
    # Not a parent: its children's parent references would dangle and fail a leads check first.
    parents = {lead.get(CF["parent_account_id"]) for lead in synced_leads}
    lead = next(lead["id"] for lead in synced_leads
                if lead[CF["account_id"]] not in parents
                and any(o["lead_id"] == lead["id"] for o in deals) and any(t["lead_id"] == lead["id"] for t in tasks))
    set_lead(close_control, lead, **{CF["account_id"]: None})

    result = runner.run("routine_sync", tenant_id, raise_on_error=False)
    evaluations = check_evaluations(result)
    present = evaluations["account_external_id_present"]
    assert present.passed and present.metadata["offending"].value == 1
    for name, records in (("deals_reference_synced_account", deals), ("tasks_reference_synced_account", tasks)):
        check = evaluations[name]
        orphaned = {r["id"] for r in records if r["lead_id"] == lead}
        assert not check.passed and check.blocking, name
        # Counted over the records of leads meeting the sync filter only; deals of other leads are
        # legitimately not synced.
        assert check.metadata["offending"].value == len(orphaned), name
        assert check.metadata["total"].value == len(records), name
        sample = check.metadata["sample_offending_ids"].value.splitlines()[2:]
        assert orphaned & {line.split("|")[1].strip() for line in sample}, name
    assert not {"cs/accounts", "cs/deals", "cs/tasks"} & materialized(result)
