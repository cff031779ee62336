"""The Zoho CRM connector against the Zoho fake over real HTTP: OAuth edge cases, field batching,
paging, credits and the write-ready update call."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

import pytest

from cz_pipeline.core.http import ApiError, AuthError, RetryPolicy
from cz_pipeline.sources.zoho_crm.connector import MAX_FIELDS, ZohoCrmConnector
from cz_pipeline_tests.zoho.conftest import ZOHO_SECRETS


def connector(url: str, **kwargs) -> ZohoCrmConnector:
    return ZohoCrmConnector(**{**ZOHO_SECRETS, "accounts_url": url, "base_url": url, **kwargs})


def read_all(conn: ZohoCrmConnector, entity: str, since=None) -> list:
    return [page for page in conn.stream(entity, since)]


def test_refused_refresh_token_stops_at_once_with_a_clear_message_and_no_secret(zoho):
    app, server, control = zoho
    conn = connector(server.url, refresh_token="1000.revoked.grant")
    with pytest.raises(AuthError) as err:
        read_all(conn, "leads")
    message = str(err.value)
    assert "refused the refresh token (invalid_code)" in message and "re-authorize" in message
    assert "1000.revoked.grant" not in message and "zoho_secret" not in message and "zoho_client" not in message
    stats = control.stats()
    assert stats["POST /oauth/v2/token"] == 1 and stats.get("credits", 0) == 0  # asked once, read nothing


def test_token_endpoint_throttle_is_waited_out_then_the_read_goes_on(zoho):
    app, server, control = zoho
    control.fault(400, count=2, path_contains="/oauth/v2/token", body={
        "error": "Access Denied",
        "error_description": "You have made too many requests continuously. Please try again after some time."})
    waits: list[float] = []
    conn = connector(server.url, sleep=waits.append, policy=RetryPolicy(max_rate_limit_wait=30))
    pages = read_all(conn, "users")
    assert sum(len(p) for p in pages) == len(app.dump("users"))
    assert waits == [5.0, 10.0]  # growing waits, no busy loop
    assert control.stats()["POST /oauth/v2/token"] == 3


def test_a_401_that_a_new_token_cannot_fix_fails_without_refreshing(zoho):
    app, server, control = zoho
    conn = connector(server.url)
    control.fault(401, count=5, path_contains="/crm/v8/users", body={
        "code": "OAUTH_SCOPE_MISMATCH", "message": "Unauthorized", "status": "error", "details": {}})
    with pytest.raises(AuthError, match="OAUTH_SCOPE_MISMATCH|Unauthorized"):
        read_all(conn, "users")
    assert control.stats()["POST /oauth/v2/token"] == 1
    assert control.stats()["GET /crm/v8/users"] == 1


def test_access_token_about_to_expire_is_refreshed_before_use(zoho):
    app, server, control = zoho
    now = [time.time()]
    conn = connector(server.url, clock=lambda: now[0])
    read_all(conn, "users")
    now[0] += 3600 - 30  # the token has half a minute left: refresh before sending it
    read_all(conn, "users")
    stats = control.stats()
    assert stats["POST /oauth/v2/token"] == 2 and "status 401" not in stats


def test_api_calls_go_to_the_api_domain_from_the_token_response(zoho):
    app, server, control = zoho
    # the configured base_url is the US default; the token's api_domain (the fake) wins
    conn = connector(server.url, base_url="http://127.0.0.1:9")
    assert sum(len(p) for p in read_all(conn, "users")) == len(app.dump("users"))
    assert conn.http.base_url == f"{server.url}/crm/v8"


def test_fields_are_batched_by_50_and_pages_merge_by_id(make_zoho):
    app, server, control = make_zoho(n_accounts=400)
    conn = connector(server.url)
    batches = conn.field_batches("Accounts")
    names = [f.api for f in app.fields["Accounts"]]
    assert len(names) > MAX_FIELDS and len(batches) == 2
    assert all(len(b) <= MAX_FIELDS and b[:2] == ["id", "Modified_Time"] for b in batches)
    assert {n for b in batches for n in b} == set(names) | {"id"}

    pages = read_all(conn, "leads")
    assert [len(p) for p in pages] == [200, 200]  # a page at a time, never the whole module
    truth = {a["id"]: a for a in app.dump("Accounts")}
    for record in (pages[0][0], pages[1][-1]):
        assert {k: record.payload[k] for k in names} == {k: truth[record.source_id][k] for k in names}
        # Modified_Time arrives as +05:30; updated_at is the same instant in UTC
        assert record.updated_at.utcoffset() == timedelta(0)
        assert record.updated_at == datetime.fromisoformat(truth[record.source_id]["Modified_Time"])
    stats = control.stats()
    # per page: the driving batch, then the second batch for that page's ids (≤100 per request)
    assert stats["GET /crm/v8/Accounts"] == 2 * (1 + 2)
    assert conn.credits == stats["credits"] == stats["GET /crm/v8/Accounts"] + 1  # + field metadata


def test_empty_module_and_unchanged_module_are_read_without_parsing_a_body(make_zoho):
    app, server, control = make_zoho(n_accounts=0)
    conn = connector(server.url)
    assert read_all(conn, "deals") == []  # 204
    assert list(conn.deletions("deals", app.started_at)) == []  # 304 from /deleted
    app2, server2, control2 = make_zoho(n_accounts=5)
    conn2 = connector(server2.url)
    assert read_all(conn2, "contacts", since=app2.started_at + timedelta(seconds=5)) == []  # 304 on the probe
    assert control2.stats()["status 304"] == 1 and "GET /crm/v8/settings/fields" not in control2.stats()


def test_429_is_waited_out_and_refused_calls_cost_no_credit(zoho):
    app, server, control = zoho
    conn = connector(server.url)
    read_all(conn, "users")  # the token is cached from here on
    control.rate_limit(2, 1.0)
    pages = read_all(conn, "tasks")
    control.rate_limit(None)
    assert sum(len(p) for p in pages) == len(app.dump("Tasks"))
    stats = control.stats()
    assert conn.http.throttled >= 1 and stats["throttled"] == conn.http.throttled
    assert conn.credits == stats["credits"]


def test_update_record_puts_a_data_array_and_reports_refusals(zoho):
    app, server, control = zoho
    conn = connector(server.url)
    deal = app.dump("Deals")[0]
    details = conn.update_record("deals", deal["id"], {"Proposal_URL": "https://cz.example/p/1"})
    assert details["id"] == deal["id"] and details["Modified_Time"].endswith("+05:30")
    assert next(d for d in control.state("Deals") if d["id"] == deal["id"])["Proposal_URL"] == "https://cz.example/p/1"
    with pytest.raises(ApiError, match=r"INVALID_DATA.*No_Such_Field"):
        conn.update_record("Deals", deal["id"], {"No_Such_Field": 1})


def test_a_misspelled_zoho_field_fails_naming_tenant_key_object_and_field(zoho, tenant_id, write_tenants, warehouse_url):
    from cz_pipeline_tests.conftest import SyncRunner
    from cz_pipeline_tests.zoho.conftest import zoho_crm_config

    _, server, _ = zoho
    cfg = zoho_crm_config(server.url, account_fields={"churn_score": {"source": "ChurnScor"}})
    path = write_tenants({tenant_id: {"crm": cfg}})
    result = SyncRunner(path, warehouse_url).run("full_sync", tenant_id, raise_on_error=False)
    assert not result.success
    message = " ".join(str(e.event_specific_data.error.message) for e in result.all_events if e.is_step_failure)
    assert tenant_id in message and "crm.account_fields.churn_score.source" in message and "'ChurnScor'" in message
    assert "zoho_crm leads object" in message
