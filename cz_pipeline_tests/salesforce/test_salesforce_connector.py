"""The Salesforce connector against the fake over real HTTP on loopback, and into Postgres through
the sync engine: login host and instance_url, session expiry mid-walk, rotated refresh tokens,
daily cap and budget share, removed fields, nextRecordsUrl, split SELECT lists, deletions."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet

from cz_pipeline.sources.salesforce import (SALESFORCE, ApiBudgetExhausted, DailyApiLimitReached,
                                            ReauthorizationRequired, SalesforceConnector)
from cz_pipeline.sources.salesforce.token_store import WarehouseTokenStore
from cz_pipeline.ingest.engine import sync_entity

SF_SECRETS = {"client_id": "sf_client", "client_secret": "sf_secret", "refresh_token": "sf_refresh"}


def connector(url: str, **kwargs) -> SalesforceConnector:
    """A connector whose login host is the fake (the fake's default grant)."""
    return SalesforceConnector(**{**SF_SECRETS, "login_url": url, **kwargs})


def ids(pages) -> list[str]:
    return [r.source_id for page in pages for r in page]


def test_calls_go_to_the_instance_url_and_tokens_to_the_login_host(make_sf):
    app, server, _ = make_sf()
    instance = server.url
    app.instance_url = instance
    login = server.url.replace("127.0.0.1", "localhost")  # same server, another host name
    c = connector(login)
    assert len(ids(c.stream("users", None))) == 6
    assert {r["host"] for r in app.token_requests} == {login.split("//")[1]}
    assert set(app.api_hosts) == {instance.split("//")[1]}


def test_expired_session_mid_walk_is_refreshed_once_and_the_walk_completes(make_sf):
    app, server, control = make_sf(n_accounts=250)
    c = connector(server.url, batch_size=200)
    control.mutate("expire_sessions", "oauth", after_requests=2)  # describe, page 1, then expiry
    got = ids(c.stream("contacts", None))
    assert len(got) == len(set(got)) == 500
    assert c.auth.refreshes == 2 and len(app.token_requests) == 2


def test_next_records_url_followed_whatever_page_size_the_server_picks(make_sf):
    app, server, _ = make_sf(n_accounts=250, batch_size_cap=200)
    c = connector(server.url, batch_size=2000)  # asked for 2,000, the org answers 200 at a time
    pages = list(c.stream("contacts", None))
    assert [len(p) for p in pages] == [200, 200, 100]
    assert app.queries[0]["batch_size"] == 200


def test_rotated_refresh_token_is_stored_encrypted_and_used_next_run(make_sf, engine, tenant_id):
    app, server, _ = make_sf(rotate_refresh_tokens=True)
    store = WarehouseTokenStore(engine, tenant_id, Fernet.generate_key())
    list(connector(server.url, token_store=store).stream("users", None))
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT ciphertext FROM sync.oauth_tokens WHERE tenant_id = :t"),
                              {"t": tenant_id}).scalar_one()
    rotated = next(iter(app.refresh_tokens))
    assert rotated.encode() not in bytes(stored) and b"sf_refresh" not in bytes(stored)
    # the configured token was rotated away: a second run works only with the stored one
    assert len(ids(connector(server.url, token_store=store).stream("users", None))) == 6
    with pytest.raises(ReauthorizationRequired):
        list(connector(server.url).stream("users", None))


def test_revoked_refresh_token_says_reauthorise_and_calls_the_hook_once(sf):
    app, server, control = sf
    control.mutate("revoke_refresh_token", "oauth")
    notices: list[str] = []
    c = connector(server.url, on_auth_invalid=notices.append)
    with pytest.raises(ReauthorizationRequired, match="re-authorised") as exc:
        list(c.stream("leads", None))
    assert "sf_refresh" not in str(exc.value) and len(notices) == 1
    assert c.http.calls == 0


def test_daily_cap_stops_at_once_without_retries(sf):
    app, server, control = sf
    control.mutate("set", "limits", usage=1000, limit=1000)
    c = connector(server.url)
    with pytest.raises(DailyApiLimitReached, match="daily API request limit reached"):
        list(c.stream("leads", None))
    assert c.http.calls <= 2


def test_budget_share_stops_before_the_cap(sf):
    app, server, control = sf
    control.mutate("set", "limits", usage=795, limit=1000)
    c = connector(server.url, batch_size=200, max_api_share=0.8)
    with pytest.raises(ApiBudgetExhausted, match="80%"):
        for entity in c.entities:
            list(c.stream(entity, None))
    assert app.api_usage == 800 and c.api_usage()["api_usage"] == app.api_usage


def test_field_removed_between_full_reads_does_not_fail_the_next_one(sf):
    _, server, control = sf
    c = connector(server.url)
    assert "ChurnScore__c" in next(iter(c.stream("leads", None)))[0].payload
    control.mutate("remove_field", "Account", field="ChurnScore__c")
    pages = list(c.stream("leads", None))  # same connector: the full read describes again
    assert len(ids(pages)) == 30 and "ChurnScore__c" not in pages[0][0].payload


def test_long_select_list_is_split_and_stitched_by_id(make_sf):
    app, server, _ = make_sf(extra_custom_fields=60, max_url_length=1500)
    c = connector(server.url, max_url_length=1500, batch_size=200)
    records = [r for page in c.stream("leads", None) for r in page]
    assert len(records) == 30 and len(app.queries) >= 2
    assert "Custom_Field_60__c" not in app.queries[0]["q"] and "Id IN (" in app.queries[1]["q"]
    assert all(len(q["q"]) < 1500 for q in app.queries)  # the fake also refuses URLs over 1,500
    truth = {a["Id"]: a for a in app.dump("Account")}
    for rec in records:
        expected = {k: v for k, v in truth[rec.source_id].items() if k != "attributes"}
        assert rec.payload == expected


def test_routine_read_uses_query_with_an_unquoted_datetime_and_sees_changes(sf):
    app, server, control = sf
    c = connector(server.url)
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    deal = control.state("Opportunity")[0]
    control.mutate("update", "Opportunity", id=deal["Id"], data={"StageName": "Closed Won"})
    created = control.mutate("create", "Opportunity", data={"Name": "New", "StageName": "Prospecting",
                                                            "CloseDate": "2026-05-01"})
    assert sorted(ids(c.stream("deals", since))) == sorted([deal["Id"], created["Id"]])
    q = app.queries[-1]
    assert q["endpoint"] == "query" and f"SystemModstamp >= {since:%Y-%m-%dT%H:%M:%S}Z" in q["q"]


def test_deletions_come_from_query_all_with_their_time(sf):
    app, server, control = sf
    c = connector(server.url)
    since = datetime.now(timezone.utc) - timedelta(seconds=2)
    contact = control.state("Contact")[0]
    deleted = control.mutate("delete", "Contact", id=contact["Id"])
    got = [d for batch in c.deletions("contacts", since) for d in batch]
    assert got == [(contact["Id"], datetime.fromisoformat(deleted["deletedDate"].replace("+0000", "+00:00")))]
    assert app.queries[-1]["endpoint"] == "queryAll" and "IsDeleted = true" in app.queries[-1]["q"]


def test_sync_engine_lands_salesforce_records_and_tombstones_deletions(sf, engine, tenant_id):
    app, server, control = sf
    c = connector(server.url)
    first = sync_entity(engine, tenant_id=tenant_id, source_system="salesforce", entity="deals", connector=c,
                        requested_mode="full", settle_lag_seconds=0)
    assert first.records_read == 90 and first.api_calls >= 2
    gone = control.state("Opportunity")[5]["Id"]
    control.mutate("delete", "Opportunity", id=gone)
    sync_entity(engine, tenant_id=tenant_id, source_system="salesforce", entity="deals", connector=c,
                requested_mode="routine", settle_lag_seconds=0)
    with engine.connect() as conn:
        live = conn.execute(sa.text("SELECT count(*) FROM raw.deals WHERE tenant_id = :t AND deleted_at IS NULL"),
                            {"t": tenant_id}).scalar_one()
        tomb = conn.execute(sa.text("SELECT deleted_at FROM raw.deals WHERE tenant_id = :t AND source_id = :i"),
                            {"t": tenant_id, "i": gone}).scalar_one()
    assert live == 89 and tomb is not None


def test_canonical_mapping_sql_reads_salesforce_payloads(sf, engine, tenant_id):
    app, server, control = sf
    c = connector(server.url)
    for entity in ("deals", "tasks", "users", "leads"):
        sync_entity(engine, tenant_id=tenant_id, source_system="salesforce", entity=entity, connector=c,
                    requested_mode="full", settle_lag_seconds=0)
    cols = SALESFORCE["deals"]
    with engine.connect() as conn:
        deals = conn.execute(sa.text(f"SELECT source_id, {cols['status_type']}, {cols['amount']}, {cols['close_date']} "
                                     "FROM raw.deals p0, LATERAL (SELECT p0.payload AS p) x WHERE tenant_id = :t"),
                             {"t": tenant_id}).all()
        t = SALESFORCE["tasks"]
        tasks = conn.execute(sa.text(f"SELECT source_id, {t['account_crm_id']}, {t['deal_crm_id']}, {t['is_complete']}, "
                                     f"{t['completed_at']} FROM raw.tasks p0, LATERAL (SELECT p0.payload AS p) x "
                                     "WHERE tenant_id = :t"), {"t": tenant_id}).all()
        users = conn.execute(sa.text(f"SELECT {SALESFORCE['users']['is_active']} FROM raw.users p0, "
                                     "LATERAL (SELECT p0.payload AS p) x WHERE tenant_id = :t"), {"t": tenant_id}).scalars().all()
        parents = conn.execute(sa.text(f"SELECT count({SALESFORCE['accounts']['native_parent_crm_id']}) FROM raw.leads p0, "
                                       "LATERAL (SELECT p0.payload AS p) x WHERE tenant_id = :t"), {"t": tenant_id}).scalar_one()
    truth = app.org.records["Opportunity"]
    for rid, status, amount, close in deals:
        o = truth[rid]
        assert status == ("won" if o["IsWon"] else "lost" if o["IsClosed"] else "active")
        assert float(amount) == o["Amount"] and close == o["CloseDate"]
    assert {s for _, s, *_ in deals} == {"won", "lost", "active"}
    for rid, account, deal, done, completed in tasks:
        what = app.org.records["Task"][rid]["WhatId"]
        assert (account or deal) == what and (account is None) != (deal is None)
        assert done == app.org.records["Task"][rid]["IsClosed"] and (completed is not None) == done
    assert sorted(users) == [False] + [True] * 5 and parents == 9  # 3 parented accounts per 10
