"""End to end for a Close tenant: sandbox over real HTTP -> connector -> engine -> Postgres ->
cs model, through the real `full_sync` / `routine_sync` jobs."""

from __future__ import annotations

from decimal import Decimal

import pytest

from cz_pipeline.sandbox.close import STATUS_IDS, CloseSandbox
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline_tests.conftest import CF, CLOSE_KEY, SyncRunner, close_crm_config, rows, scalar

SYNCED = {"Customer", "Trial"}


def raw_ids(engine, table: str, tenant: str, live: bool = True) -> set[str]:
    where = " AND deleted_at IS NULL" if live else ""
    return {r["source_id"] for r in rows(engine, f"SELECT source_id FROM raw.{table} WHERE tenant_id = :t{where}", t=tenant)}


def synced_leads(app: CloseSandbox) -> list[dict]:
    return [lead for lead in app.dump("lead") if lead["status_label"] in SYNCED]


def test_full_sync_lands_exactly_the_sandbox_records(close_tenant, tenant_id, engine, close_app):
    close_tenant.run("full_sync", tenant_id)

    for table, obj in [("leads", "lead"), ("contacts", "contact"), ("deals", "opportunity"),
                       ("tasks", "task"), ("users", "user")]:
        assert raw_ids(engine, table, tenant_id) == {o["id"] for o in close_app.dump(obj)}, table

    # cs.accounts: exactly the leads meeting the sync filter, keyed by their AccountExternalID.
    leads = synced_leads(close_app)
    accounts = {r["account_external_id"]: r for r in rows(engine, "SELECT * FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)}
    assert set(accounts) == {lead[CF["account_id"]] for lead in leads}
    with_tier = next(lead for lead in leads if lead.get(CF["tier"]))
    account = accounts[with_tier[CF["account_id"]]]
    assert account["crm_id"] == with_tier["id"]
    assert account["name"] == with_tier["display_name"]
    assert account["custom_fields"]["tier"] == with_tier[CF["tier"]]  # a custom field

    # cs.contacts: all contacts of synced accounts, keyed by lower-cased email.
    lead_ids = {lead["id"] for lead in leads}
    contacts = [c for c in close_app.dump("contact") if c["lead_id"] in lead_ids]
    cs_contacts = {r["contact_external_id"]: r for r in rows(engine, "SELECT * FROM cs.contacts WHERE tenant_id = :t", t=tenant_id)}
    assert set(cs_contacts) == {c["emails"][0]["email"].lower() for c in contacts}

    # cs.deals: only deals of synced accounts; amounts converted from cents.
    opps = [o for o in close_app.dump("opportunity") if o["lead_id"] in lead_ids]
    deals = {r["crm_id"]: r for r in rows(engine, "SELECT * FROM cs.deals WHERE tenant_id = :t", t=tenant_id)}
    assert set(deals) == {o["id"] for o in opps}
    priced = next(o for o in opps if o["value"])
    assert deals[priced["id"]]["amount"] == Decimal(priced["value"]) / 100
    assert deals[priced["id"]]["status_type"] == priced["status_type"]

    # Tasks: open ones in cs.tasks, completed ones in cs.activities.
    tasks = [t for t in close_app.dump("task") if t["lead_id"] in lead_ids]
    open_ids = {r["crm_id"] for r in rows(engine, "SELECT crm_id FROM cs.tasks WHERE tenant_id = :t", t=tenant_id)}
    done = {r["crm_id"]: r for r in rows(engine, "SELECT * FROM cs.activities WHERE tenant_id = :t", t=tenant_id)}
    assert open_ids == {t["id"] for t in tasks if not t["is_complete"]}
    assert set(done) == {t["id"] for t in tasks if t["is_complete"]}
    assert open_ids and done and all(r["completed_at"] is not None for r in done.values())

    assert scalar(engine, "SELECT count(*) FROM cs.users WHERE tenant_id = :t", t=tenant_id) == len(close_app.dump("user"))
    assert scalar(engine, "SELECT count(*) FROM sync.quarantine WHERE tenant_id = :t", t=tenant_id) == 0


def test_routine_sync_picks_up_changes_but_only_a_full_sync_removes(close_tenant, tenant_id, engine, close_app, close_control):
    close_tenant.run("full_sync", tenant_id)
    # Leads that are nobody's parent: leaving the filter does not orphan a child (a dangling parent
    # would trip the blocking hierarchy check, which is tested with the quality gate).
    parents = {lead.get(CF["parent_account_id"]) for lead in close_app.dump("lead")}
    leads = [lead for lead in synced_leads(close_app) if lead[CF["account_id"]] not in parents]
    renamed, moved_out, deleted = leads[0], leads[1], leads[2]
    newly_meeting = next(lead for lead in close_app.dump("lead")
                         if lead["status_label"] not in SYNCED and not lead.get(CF["parent_account_id"]))

    close_control.mutate("update", "lead", id=renamed["id"], data={"name": "Renamed Holdings"})
    close_control.mutate("update", "lead", id=moved_out["id"], data={"status_id": STATUS_IDS["Potential"]})
    close_control.mutate("delete", "lead", id=deleted["id"])
    close_control.mutate("update", "lead", id=newly_meeting["id"],
                         data={"status_id": STATUS_IDS["Customer"], CF["account_id"]: "A-NEW-1"})
    created = close_control.mutate("create", "lead", data={"name": "Brand New Co", "status_id": STATUS_IDS["Trial"],
                                                           CF["account_id"]: "A-NEW-2"})
    close_control.mutate("create", "contact", data={"lead_id": created["id"], "name": "Ada Lovelace",
                                                    "emails": [{"type": "office", "email": "Ada@BrandNew.example"}]})

    close_tenant.run("routine_sync", tenant_id)
    accounts = {r["account_external_id"]: r for r in rows(engine, "SELECT * FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)}
    assert accounts[renamed[CF["account_id"]]]["name"] == "Renamed Holdings"
    assert {"A-NEW-1", "A-NEW-2"} <= set(accounts)  # created, and newly meeting the filter
    assert "ada@brandnew.example" in {r["contact_external_id"] for r in rows(
        engine, "SELECT contact_external_id FROM cs.contacts WHERE tenant_id = :t", t=tenant_id)}
    # A lead that leaves the sync filter, and a deleted lead, stay until the next full sync.
    assert moved_out[CF["account_id"]] in accounts
    assert deleted[CF["account_id"]] in accounts
    assert deleted["id"] in raw_ids(engine, "leads", tenant_id)
    modes = {r["entity"]: r["mode"] for r in rows(engine, "SELECT DISTINCT ON (entity) entity, mode FROM sync.runs "
                                                         "WHERE tenant_id = :t ORDER BY entity, id DESC", t=tenant_id)}
    assert modes == {e: "routine" for e in ("leads", "contacts", "deals", "tasks", "users")}

    close_tenant.run("full_sync", tenant_id)
    accounts = {r["account_external_id"] for r in rows(engine, "SELECT account_external_id FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)}
    assert moved_out[CF["account_id"]] not in accounts
    assert deleted[CF["account_id"]] not in accounts
    assert {"A-NEW-1", "A-NEW-2"} <= accounts
    # Deleted at the source: tombstoned in raw, never hard-deleted; its contacts and deals left cs too.
    assert deleted["id"] in raw_ids(engine, "leads", tenant_id, live=False) - raw_ids(engine, "leads", tenant_id)
    assert scalar(engine, "SELECT count(*) FROM cs.deals d JOIN raw.deals r ON r.tenant_id = d.tenant_id AND "
                          "r.source_id = d.crm_id WHERE d.tenant_id = :t AND r.payload->>'lead_id' = :l",
                  t=tenant_id, l=deleted["id"]) == 0


def test_bad_records_are_quarantined_and_good_ones_still_land(tenant_id, close_server, write_tenants, warehouse_url,
                                                             engine, close_app, close_control):
    # This tenant tolerates up to half its records being bad before the quality gate blocks publication.
    path = write_tenants({tenant_id: {"crm": close_crm_config(close_server.url),
                                      "quality": {"thresholds": {"default": 0.5}}}})
    close_tenant = SyncRunner(path, warehouse_url)
    parents = {lead.get(CF["parent_account_id"]) for lead in close_app.dump("lead")}
    leads = [lead for lead in synced_leads(close_app) if lead[CF["account_id"]] not in parents]
    close_control.mutate("update", "lead", id=leads[0]["id"], data={CF["account_id"]: None})
    close_control.mutate("update", "lead", id=leads[1]["id"], data={CF["account_id"]: leads[2][CF["account_id"]]})
    close_control.mutate("create", "contact", data={"lead_id": leads[3]["id"], "name": "No Email"})

    result = close_tenant.run("full_sync", tenant_id)
    assert result.success
    reasons = {(r["entity"], r["source_id"]): r["reason"] for r in rows(
        engine, "SELECT entity, source_id, reason FROM sync.quarantine WHERE tenant_id = :t", t=tenant_id)}
    assert reasons[("accounts", leads[0]["id"])] == "missing_account_external_id"
    assert reasons[("accounts", leads[1]["id"])] == "duplicate_account_external_id"
    assert reasons[("accounts", leads[2]["id"])] == "duplicate_account_external_id"
    assert "missing_contact_external_id" in {v for (e, _), v in reasons.items() if e == "contacts"}
    count = scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id)
    assert count == len(synced_leads(close_app)) - 3

    # Fixed at the source: the rows leave quarantine and the accounts land.
    close_control.mutate("update", "lead", id=leads[0]["id"], data={CF["account_id"]: "A-FIXED-0"})
    close_control.mutate("update", "lead", id=leads[1]["id"], data={CF["account_id"]: "A-FIXED-1"})
    close_tenant.run("routine_sync", tenant_id)
    assert scalar(engine, "SELECT count(*) FROM sync.quarantine WHERE tenant_id = :t AND entity = 'accounts'",
                  t=tenant_id) == 0
    assert scalar(engine, "SELECT count(*) FROM cs.accounts WHERE tenant_id = :t", t=tenant_id) == len(synced_leads(close_app))


def _warehouse_snapshot(engine, tenant: str) -> dict[str, object]:
    snap: dict[str, object] = {}
    for table in ("leads", "contacts", "deals", "tasks", "users"):
        snap[f"raw.{table}"] = sorted((r["source_id"], str(r["payload"]), r["deleted_at"] is None) for r in rows(
            engine, f"SELECT source_id, payload, deleted_at FROM raw.{table} WHERE tenant_id = :t", t=tenant))
    for table, key in (("accounts", "account_external_id"), ("contacts", "contact_external_id"), ("deals", "crm_id"),
                       ("tasks", "crm_id"), ("activities", "crm_id"), ("users", "crm_id")):
        snap[f"cs.{table}"] = sorted(str({k: v for k, v in r.items() if k not in ("tenant_id", "synced_at")})
                                     for r in rows(engine, f"SELECT * FROM cs.{table} WHERE tenant_id = :t ORDER BY {key}", t=tenant))
    snap["cursors"] = sorted((r["entity"], r["high_water"]) for r in rows(
        engine, "SELECT entity, high_water FROM sync.cursors WHERE tenant_id = :t", t=tenant))
    return snap


def test_a_crash_between_pages_and_a_rerun_leave_the_warehouse_as_an_uninterrupted_run(
        tmp_path, write_tenants, warehouse_url, engine):
    app = CloseSandbox(api_key=CLOSE_KEY, n_leads=260)  # > one 200-lead search page
    with RunningSandbox(app) as server:
        from cz_pipeline.sandbox.control import SandboxControl

        control = SandboxControl(server.url)
        crashed, clean = "crash_" + tmp_path.name[-8:].lower(), "clean_" + tmp_path.name[-8:].lower()
        crashed, clean = (t.replace("-", "_") for t in (crashed, clean))
        path = write_tenants({t: {"crm": close_crm_config(server.url)} for t in (crashed, clean)})
        runner = SyncRunner(path, warehouse_url)

        # The second search page fails hard (a 400 is not retried): the run dies mid-stream.
        control.fault(400, count=1, skip=1, path_contains="/data/search/")
        result = runner.run("full_sync", crashed, raise_on_error=False)
        assert not result.success
        failed = rows(engine, "SELECT entity FROM sync.runs WHERE tenant_id = :t AND status = 'failed'", t=crashed)
        assert len(failed) == 1 and failed[0]["entity"] in ("leads", "contacts")
        entity = failed[0]["entity"]
        # Nothing of the interrupted entity landed, and its cursor did not move.
        assert scalar(engine, f"SELECT count(*) FROM raw.{entity} WHERE tenant_id = :t", t=crashed) == 0
        assert scalar(engine, "SELECT count(*) FROM sync.cursors WHERE tenant_id = :t AND entity = :e",
                      t=crashed, e=entity) == 0

        runner.run("full_sync", crashed)
        runner.run("full_sync", clean)
        assert _warehouse_snapshot(engine, crashed) == _warehouse_snapshot(engine, clean)
        assert scalar(engine, "SELECT count(*) FROM raw.leads WHERE tenant_id = :t", t=crashed) == 260


def test_rate_limits_and_server_errors_are_retried_and_the_result_is_complete(close_tenant, tenant_id, engine, close_app, close_control):
    # A tight per-key limit (the connector paces on `RateLimit: remaining=0`), explicit 429s with
    # Close's header, and transient 5xx on two endpoints.
    close_control.rate_limit(15, window_seconds=1.0)
    close_control.fault(429, count=2, path_contains="/task/", body={"error": {"rate_reset": 1, "message": "slow down"}},
                        headers={"RateLimit": "limit=15, remaining=0, reset=1"})
    close_control.fault(503, count=2, path_contains="/opportunity/")
    close_control.fault(502, count=1, path_contains="/data/search/")
    close_tenant.run("full_sync", tenant_id)
    assert close_control.stats().get("faults", 0) == 5
    for table, obj in [("leads", "lead"), ("contacts", "contact"), ("deals", "opportunity"), ("tasks", "task")]:
        assert raw_ids(engine, table, tenant_id) == {o["id"] for o in close_app.dump(obj)}, table


def test_a_bad_api_key_fails_the_run_clearly_without_the_secret(tenant_id, close_server, write_tenants, warehouse_url,
                                                               engine, monkeypatch):
    path = write_tenants({tenant_id: {"crm": close_crm_config(close_server.url)}})
    wrong_key = "api_WRONG_secret_value_987"
    monkeypatch.setenv("TEST_CLOSE_API_KEY", wrong_key)
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id, raise_on_error=False)
    assert not result.success
    failures = [e for e in result.all_events if e.is_step_failure]
    assert failures
    messages = " ".join(str(e.event_specific_data.error.message) for e in failures)
    assert "credentials were refused" in messages and tenant_id in messages
    assert wrong_key not in messages
    for event in result.all_events:
        assert wrong_key not in str(event)
    errors = " ".join(r["error"] or "" for r in rows(engine, "SELECT error FROM sync.runs WHERE tenant_id = :t", t=tenant_id))
    assert wrong_key not in errors
    # No Dagster retry storm: one attempt per raw asset.
    assert scalar(engine, "SELECT count(*) FROM sync.runs WHERE tenant_id = :t AND entity = 'leads'", t=tenant_id) <= 1


@pytest.mark.parametrize("bad_field", ["custom.cf_doesNotExist"])
def test_a_configured_custom_field_missing_at_the_source_names_tenant_object_and_field(
        bad_field, tenant_id, close_server, write_tenants, warehouse_url):
    cfg = close_crm_config(close_server.url, account_fields={"renewal_owner": {"source": bad_field}})
    path = write_tenants({tenant_id: {"crm": cfg}})
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id, raise_on_error=False)
    assert not result.success
    message = " ".join(str(e.event_specific_data.error.message) for e in result.all_events if e.is_step_failure)
    assert tenant_id in message and bad_field in message and "leads" in message
