"""End to end for a Salesforce tenant: the Salesforce fake over real HTTP -> connector -> engine
-> Postgres -> cs model, through the real `full_sync` / `routine_sync` jobs. The tenant lands in
the same raw and cs tables as a Close or Zoho tenant."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from cryptography.fernet import Fernet

from cz_pipeline_tests.conftest import SyncRunner, failure_messages, rows, scalar

TOKEN_KEY = Fernet.generate_key().decode()
RAW = {"leads": "Account", "contacts": "Contact", "deals": "Opportunity", "tasks": "Task"}


def sf_crm_config(login_url: str, **overrides):
    cfg = {
        "system": "salesforce",
        "credentials": {"login_url": login_url, "client_id": {"env": "TEST_SF_CLIENT_ID"},
                        "client_secret": {"env": "TEST_SF_CLIENT_SECRET"},
                        "refresh_token": {"env": "TEST_SF_REFRESH_TOKEN"}},
        "account_external_id": "CZ_Account_ID__c",
        "contact_external_id": "email",
        "users": {"filter_field": "Sync_to_ChurnZero__c", "access_field": "ChurnZero_Access__c"},
        "account_fields": {"churn_score": {"source": "ChurnScore__c"}},
        "contact_fields": {"nps_rating": {"source": "NPS_Rating__c"}},
    }
    cfg.update(overrides)
    return cfg


@pytest.fixture
def sf_env(monkeypatch):
    monkeypatch.setenv("TEST_SF_CLIENT_ID", "sf_client")
    monkeypatch.setenv("TEST_SF_CLIENT_SECRET", "sf_secret")
    monkeypatch.setenv("TEST_SF_REFRESH_TOKEN", "sf_refresh")
    monkeypatch.setenv("CZ_TOKEN_KEY", TOKEN_KEY)
    monkeypatch.delenv("CZ_SMTP_URL", raising=False)
    return monkeypatch


def by(rows_, key):
    return {r[key]: r for r in rows_}


def cs(engine, table, tenant):
    return rows(engine, f"SELECT * FROM cs.{table} WHERE tenant_id = :t", t=tenant)




def test_full_sync_of_a_salesforce_tenant_fills_every_cs_table(sf, sf_env, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url)}})
    SyncRunner(path, warehouse_url).run("full_sync", tenant_id)

    for entity, obj in RAW.items():
        landed = {r["source_id"] for r in rows(engine, f"SELECT source_id FROM raw.{entity} "
                                                       "WHERE tenant_id = :t AND deleted_at IS NULL", t=tenant_id)}
        assert landed == {r["Id"] for r in app.dump(obj)}, entity

    accounts = app.dump("Account")
    by_id = {a["Id"]: a for a in accounts}
    published = by(cs(engine, "accounts", tenant_id), "crm_id")
    assert set(published) == set(by_id)
    # the native ParentId hierarchy: the parent's AccountExternalID (CZ_Account_ID__c)
    with_parent = [a for a in accounts if a["ParentId"]]
    assert with_parent, "the fake org has a hierarchy"
    for a in accounts:
        row = published[a["Id"]]
        assert row["account_external_id"] == a["CZ_Account_ID__c"] and row["name"] == a["Name"]
        expected_parent = by_id[a["ParentId"]]["CZ_Account_ID__c"] if a["ParentId"] else None
        assert row["parent_account_external_id"] == expected_parent
        assert row["custom_fields"]["churn_score"] == a["ChurnScore__c"]

    deals = by(cs(engine, "deals", tenant_id), "crm_id")
    opportunities = app.dump("Opportunity")
    assert set(deals) == {o["Id"] for o in opportunities}
    for o in opportunities:
        expected = "won" if o["IsClosed"] and o["IsWon"] else "lost" if o["IsClosed"] else "active"
        d = deals[o["Id"]]
        assert (d["status_type"], d["status_label"]) == (expected, o["StageName"])
        assert d["account_external_id"] == by_id[o["AccountId"]]["CZ_Account_ID__c"]
        assert d["amount"] == (Decimal(str(o["Amount"])) if o["Amount"] is not None else None)
    assert {d["status_type"] for d in deals.values()} == {"won", "lost", "active"}

    contacts = by(cs(engine, "contacts", tenant_id), "crm_id")
    assert set(contacts) == {c["Id"] for c in app.dump("Contact") if c["Email"]}
    # open tasks in cs.tasks, closed ones in cs.activities
    sf_tasks = {t["Id"]: t for t in app.dump("Task")}
    open_tasks = set(by(cs(engine, "tasks", tenant_id), "crm_id"))
    closed_tasks = set(by(cs(engine, "activities", tenant_id), "crm_id"))
    assert open_tasks == {i for i, t in sf_tasks.items() if not t["IsClosed"]} and open_tasks
    assert closed_tasks == {i for i, t in sf_tasks.items() if t["IsClosed"]} and closed_tasks
    users = {u["crm_id"] for u in cs(engine, "users", tenant_id)}
    assert users == {u["Id"] for u in app.dump("User") if u["Sync_to_ChurnZero__c"]}


def test_a_routine_sync_picks_up_changes_and_deletions_through_queryall(sf, sf_env, write_tenants, warehouse_url,
                                                                       engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url, overlap_seconds=0, settle_lag_seconds=0)}})
    runner = SyncRunner(path, warehouse_url)
    runner.run("full_sync", tenant_id)

    account = next(a for a in app.dump("Account") if not a["ParentId"])
    control.mutate("update", "Account", id=account["Id"], data={"Name": "Renamed Holdings Inc"})
    gone = next(c for c in app.dump("Contact") if c["Email"])
    control.mutate("delete", "Contact", id=gone["Id"])
    app.queries.clear()
    result = runner.run("routine_sync", tenant_id)

    assert by(cs(engine, "accounts", tenant_id), "crm_id")[account["Id"]]["name"] == "Renamed Holdings Inc"
    assert gone["Id"] not in by(cs(engine, "contacts", tenant_id), "crm_id")
    tomb = rows(engine, "SELECT deleted_at FROM raw.contacts WHERE tenant_id = :t AND source_id = :s",
                t=tenant_id, s=gone["Id"])
    assert len(tomb) == 1 and tomb[0]["deleted_at"] is not None
    # routine reads are incremental on SystemModstamp; deletions come from queryAll + IsDeleted
    routine = [q for q in app.queries if "FROM Contact" in q["q"]]
    assert any(q["endpoint"] == "queryAll" and "IsDeleted = true" in q["q"] for q in routine)
    assert all("SystemModstamp" in q["q"] for q in routine)
    ledger = by(rows(engine, "SELECT * FROM sync.runs WHERE tenant_id = :t AND dagster_run_id = :r",
                     t=tenant_id, r=result.run_id), "entity")
    assert ledger["leads"]["mode"] == "routine" and ledger["leads"]["updated"] >= 1
    assert ledger["contacts"]["tombstoned"] == 1


def test_a_rotated_refresh_token_is_kept_encrypted_and_used_by_the_next_run(make_sf, sf_env, write_tenants,
                                                                           warehouse_url, engine, tenant_id):
    app, server, control = make_sf(rotate_refresh_tokens=True)
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url)}})
    SyncRunner(path, warehouse_url).run("full_sync", tenant_id)
    # the configured token was given up for a rotated one: only the stored token works now
    assert "sf_refresh" not in app.refresh_tokens and len(app.refresh_tokens) == 1
    (rotated,) = app.refresh_tokens
    stored = rows(engine, "SELECT ciphertext FROM sync.oauth_tokens WHERE tenant_id = :t", t=tenant_id)
    assert len(stored) == 1
    ciphertext = bytes(stored[0]["ciphertext"])
    assert rotated.encode() not in ciphertext and Fernet(TOKEN_KEY).decrypt(ciphertext).decode() == rotated

    # a new process (no memory of the run before) syncs with the stored token
    result = SyncRunner(path, warehouse_url).run("routine_sync", tenant_id, raise_on_error=False)
    assert result.success, failure_messages(result)
    assert scalar(engine, "SELECT count(*) FROM sync.notifications WHERE tenant_id = :t", t=tenant_id) == 0


def test_invalid_grant_stops_the_tenant_with_a_reauthorise_message_and_notifies_once(
        sf, sf_env, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"notify": ["cs-admin@acme.example"], "crm": sf_crm_config(server.url)}})
    runner = SyncRunner(path, warehouse_url)
    control.mutate("revoke_refresh_token", "oauth")
    first = runner.run("routine_sync", tenant_id, raise_on_error=False)
    assert not first.success
    messages = " ".join(failure_messages(first))
    assert "re-authorised" in messages and tenant_id in messages and "sf_refresh" not in messages
    # no Dagster retries: one failed attempt per entity, not three
    retries = [e for e in first.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    assert retries == []
    runner.run("routine_sync", tenant_id, raise_on_error=False)
    notes = rows(engine, "SELECT kind, recipients, subject, body FROM sync.notifications WHERE tenant_id = :t "
                         "ORDER BY id", t=tenant_id)
    assert [n["kind"] for n in notes] == ["credentials_refused"]  # once per incident, not per run
    assert notes[0]["recipients"] == ["cs-admin@acme.example"] and "re-authorised" in notes[0]["body"]
    assert "sf_refresh" not in notes[0]["body"] and "sf_secret" not in notes[0]["body"]

    # re-authorised: a new refresh token in the secret store; the next sync works and says so, once
    new_token = control.mutate("issue_refresh_token", "oauth")["refresh_token"]
    sf_env.setenv("TEST_SF_REFRESH_TOKEN", new_token)
    assert runner.run("routine_sync", tenant_id, raise_on_error=False).success
    runner.run("routine_sync", tenant_id)
    kinds = [r["kind"] for r in rows(engine, "SELECT kind FROM sync.notifications WHERE tenant_id = :t ORDER BY id",
                                     t=tenant_id)]
    assert kinds == ["credentials_refused", "credentials_refused_resolved"]


def test_the_daily_cap_stops_the_run_at_once_with_a_clear_message_and_no_retries(
        sf, sf_env, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url)}})
    control.mutate("set", "limits", usage=100_000, limit=100_000)
    app.queries.clear()
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id, raise_on_error=False)
    assert not result.success
    assert "daily API request limit" in " ".join(failure_messages(result))
    assert [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"] == []
    assert len(app.queries) <= 5  # a handful of calls, never a retry loop


def test_the_budget_share_stops_the_run_before_the_cap(sf, sf_env, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url)}})
    control.mutate("set", "limits", usage=85_000, limit=100_000)  # above the default 80 % share
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id, raise_on_error=False)
    assert not result.success
    messages = " ".join(failure_messages(result))
    assert re.search(r"used 850\d\d of its 100000 daily API requests, at or above the configured share of 80%", messages)
    assert app.api_usage < 100_000


def test_an_expired_session_mid_sync_is_refreshed_and_the_sync_completes(
        sf, sf_env, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url)}})
    control.mutate("expire_sessions", "oauth", after_requests=6)
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id, raise_on_error=False)
    assert result.success, failure_messages(result)
    assert len(app.dump("token_requests")) >= 2  # the first token and the refresh after the 401
    assert scalar(engine, "SELECT count(*) FROM cs.contacts WHERE tenant_id = :t", t=tenant_id) == \
        len([c for c in app.dump("Contact") if c["Email"]])


def test_a_field_removed_from_the_org_between_syncs_does_not_fail_the_full_sync(
        sf, sf_env, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = sf
    path = write_tenants({tenant_id: {"crm": sf_crm_config(server.url)}})
    runner = SyncRunner(path, warehouse_url)
    runner.run("full_sync", tenant_id)
    control.mutate("remove_field", "Account", field="Health_Notes__c")
    result = runner.run("full_sync", tenant_id, raise_on_error=False)
    assert result.success, failure_messages(result)
    payload = rows(engine, "SELECT payload FROM raw.leads WHERE tenant_id = :t LIMIT 1", t=tenant_id)[0]["payload"]
    assert "Health_Notes__c" not in payload and "Name" in payload
