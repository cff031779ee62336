"""The Salesforce fake speaks the contract: token answer with instance_url, SOQL subset with
typed literals, nextRecordsUrl paging at the asked batch size, query vs queryAll, describe,
deleted feed, PATCH, limit header, session expiry, daily cap and removed fields."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import requests

from cz_pipeline.sandbox.salesforce import SalesforceSandbox
from cz_pipeline.sandbox.salesforce.schema import make_id

API = "/services/data/v60.0"


def login(url: str, refresh_token: str = "sf_refresh") -> requests.Response:
    return requests.post(f"{url}/services/oauth2/token", data={
        "grant_type": "refresh_token", "client_id": "sf_client", "client_secret": "sf_secret",
        "refresh_token": refresh_token}, timeout=10)


def session(url: str) -> tuple[str, dict[str, str]]:
    token = login(url).json()
    return token["instance_url"], {"Authorization": f"Bearer {token['access_token']}"}


def soql(url: str, q: str, all_rows: bool = False, **headers: str) -> requests.Response:
    base, auth = session(url)
    return requests.get(f"{base}{API}/{'queryAll' if all_rows else 'query'}", params={"q": q},
                        headers={**auth, **headers}, timeout=10)


def test_ids_are_18_chars_with_the_object_prefix_and_a_case_checksum():
    assert make_id("Account", 1).startswith("001") and len(make_id("Account", 1)) == 18
    assert make_id("Opportunity", 7)[:3] == "006" and make_id("Account", 1) != make_id("Account", 2)


def test_token_answer_names_the_instance_and_rotation_replaces_the_refresh_token(make_sf):
    app, server, control = make_sf(rotate_refresh_tokens=True)
    first = login(server.url).json()
    assert first["instance_url"] == server.url and first["token_type"] == "Bearer" and "expires_in" not in first
    assert first["refresh_token"] != "sf_refresh"
    again = login(server.url)  # the rotated-away token no longer works
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    assert login(server.url, first["refresh_token"]).status_code == 200
    assert [r["grant_type"] for r in control.state("token_requests")] == ["refresh_token"] * 3


def test_query_filters_orders_limits_and_renders_relationships(sf):
    app, server, _ = sf
    body = soql(server.url, "SELECT Id, Name, CloseDate, Account.Name FROM Opportunity WHERE IsClosed = true "
                            "AND Type != 'Partner' AND CloseDate >= 2022-01-01 ORDER BY CloseDate DESC LIMIT 5").json()
    truth = sorted((r for r in app.org.records["Opportunity"].values() if r["IsClosed"] and r["Type"] != "Partner"
                    and str(r["CloseDate"]) >= "2022-01-01"), key=lambda r: r["CloseDate"], reverse=True)[:5]
    assert [r["Id"] for r in body["records"]] == [r["Id"] for r in truth]
    first = body["records"][0]
    assert first["attributes"]["type"] == "Opportunity"
    assert first["Account"]["Name"] == app.org.records["Account"][truth[0]["AccountId"]]["Name"]


def test_quoted_datetime_and_unknown_field_and_bad_syntax_are_refused(sf):
    _, server, _ = sf
    quoted = soql(server.url, "SELECT Id FROM Account WHERE SystemModstamp >= '2024-01-01T00:00:00Z'")
    assert quoted.status_code == 400 and quoted.json()[0]["errorCode"] == "INVALID_FIELD"
    unknown = soql(server.url, "SELECT Id, Nope__c FROM Account")
    assert unknown.status_code == 400 and unknown.json()[0]["errorCode"] == "INVALID_FIELD"
    for bad in ("SELECT Id FROM Account; DROP", "SELECT Id FROM Account WHERE Name = __import__('os')",
                "SELECT FIELDS(ALL) FROM Account"):
        resp = soql(server.url, bad)
        assert resp.status_code == 400 and resp.json()[0]["errorCode"] == "MALFORMED_QUERY", bad


def test_unquoted_datetime_literal_selects_changes_since(sf):
    app, server, control = sf
    acc = control.state("Account")[3]
    control.mutate("update", "Account", id=acc["Id"], data={"Industry": "Media"})
    since = (datetime.now(timezone.utc) - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = soql(server.url, f"SELECT Id, Industry FROM Account WHERE SystemModstamp >= {since}").json()
    assert [(r["Id"], r["Industry"]) for r in body["records"]] == [(acc["Id"], "Media")]


def test_next_records_url_pages_at_the_asked_batch_size(make_sf):
    app, server, _ = make_sf(n_accounts=250)
    base, auth = session(server.url)
    first = requests.get(f"{base}{API}/query", params={"q": "SELECT Id FROM Contact"},
                         headers={**auth, "Sforce-Query-Options": "batchSize=200"}, timeout=10).json()
    assert first["totalSize"] == 500 and len(first["records"]) == 200 and not first["done"]
    ids = [r["Id"] for r in first["records"]]
    nxt = first["nextRecordsUrl"]
    while nxt:
        page = requests.get(f"{base}{nxt}", headers=auth, timeout=10).json()
        ids += [r["Id"] for r in page["records"]]
        nxt = page.get("nextRecordsUrl")
    assert len(ids) == len(set(ids)) == 500


def test_deleted_records_only_through_query_all_and_the_deleted_feed(sf):
    app, server, control = sf
    opp = control.state("Opportunity")[0]
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    control.mutate("delete", "Opportunity", id=opp["Id"])
    q = f"SELECT Id, IsDeleted FROM Opportunity WHERE Id = '{opp['Id']}'"
    assert soql(server.url, q).json()["records"] == []
    assert soql(server.url, q, all_rows=True).json()["records"][0]["IsDeleted"] is True
    base, auth = session(server.url)
    feed = requests.get(f"{base}{API}/sobjects/Opportunity/deleted/", headers=auth, timeout=10, params={
        "start": before.isoformat(), "end": (datetime.now(timezone.utc) + timedelta(seconds=5)).isoformat()}).json()
    assert [d["id"] for d in feed["deletedRecords"]] == [opp["Id"]]
    assert feed["deletedRecords"][0]["deletedDate"].endswith("+0000")
    roles = soql(server.url, f"SELECT Id FROM OpportunityContactRole WHERE OpportunityId = '{opp['Id']}' "
                             "AND IsDeleted = true", all_rows=True).json()
    assert roles["totalSize"] == 2  # contact roles go to the recycle bin with their opportunity


def test_patch_bumps_system_modstamp_and_is_recorded(sf):
    app, server, control = sf
    opp = control.state("Opportunity")[1]
    base, auth = session(server.url)
    resp = requests.patch(f"{base}{API}/sobjects/Opportunity/{opp['Id']}", json={"Clozd_Interview__c": "https://x/1"},
                          headers=auth, timeout=10)
    assert resp.status_code == 204
    now = next(r for r in control.state("Opportunity") if r["Id"] == opp["Id"])
    assert now["Clozd_Interview__c"] == "https://x/1" and now["SystemModstamp"] > opp["SystemModstamp"]
    assert control.state("writes") == [{"method": "PATCH", "object": "Opportunity", "id": opp["Id"],
                                        "body": {"Clozd_Interview__c": "https://x/1"}}]


def test_limit_header_session_expiry_and_daily_cap(sf):
    app, server, control = sf
    base, auth = session(server.url)
    ok = requests.get(f"{base}{API}/sobjects/", headers=auth, timeout=10)
    assert ok.headers["Sforce-Limit-Info"] == f"api-usage={app.api_usage}/{app.api_limit}"
    control.mutate("expire_sessions", "oauth")
    expired = requests.get(f"{base}{API}/sobjects/", headers=auth, timeout=10)
    assert expired.status_code == 401 and expired.json()[0]["errorCode"] == "INVALID_SESSION_ID"
    base, auth = session(server.url)
    control.mutate("set", "limits", usage=500, limit=500)
    capped = requests.get(f"{base}{API}/sobjects/", headers=auth, timeout=10)
    assert capped.status_code == 403 and capped.json()[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert capped.headers["Sforce-Limit-Info"] == "api-usage=500/500"


def test_removed_field_leaves_describe_and_fails_queries_naming_it(sf):
    _, server, control = sf
    control.mutate("remove_field", "Account", field="ChurnScore__c")
    base, auth = session(server.url)
    names = [f["name"] for f in requests.get(f"{base}{API}/sobjects/Account/describe", headers=auth,
                                             timeout=10).json()["fields"]]
    assert "ChurnScore__c" not in names and "Name" in names
    resp = soql(server.url, "SELECT Id, ChurnScore__c FROM Account")
    assert resp.status_code == 400 and "ChurnScore__c" in resp.json()[0]["message"]


def test_generated_org_has_hierarchy_inactive_user_and_many_closed_deals_quickly_enough_to_build():
    app = SalesforceSandbox(n_accounts=3000, opportunities_per_account=4, closed_share=0.9)
    closed = [o for o in app.org.records["Opportunity"].values() if o["IsClosed"]]
    assert len(closed) > 10_000
    accounts = app.org.records["Account"]
    grandchildren = [a for a in accounts.values() if a["ParentId"] and accounts[a["ParentId"]]["ParentId"]]
    assert grandchildren and all(accounts[accounts[a["ParentId"]]["ParentId"]]["ParentId"] is None for a in grandchildren)
    assert [u["IsActive"] for u in app.org.records["User"].values()].count(False) == 1
    assert {o["Type"] for o in closed} >= {"Partner", "New Business"}
    assert {o["IsWon"] for o in closed} == {True, False}


def test_accounts_carry_a_unique_external_id_field_that_describe_flags(sf):
    app, server, _ = sf
    base, auth = session(server.url)
    fields = {f["name"]: f for f in requests.get(f"{base}{API}/sobjects/Account/describe", headers=auth,
                                                 timeout=10).json()["fields"]}
    assert fields["CZ_Account_ID__c"]["externalId"] is True and fields["CZ_Account_ID__c"]["custom"] is True
    assert fields["Name"]["externalId"] is False
    body = soql(server.url, "SELECT Id, CZ_Account_ID__c, Parent.CZ_Account_ID__c FROM Account "
                            "WHERE ParentId != null ORDER BY CZ_Account_ID__c").json()
    values = [a["CZ_Account_ID__c"] for a in app.dump("Account")]
    assert len(set(values)) == len(values) == 30
    child = body["records"][0]
    parent = app.org.records["Account"][app.org.records["Account"][child["Id"]]["ParentId"]]
    assert child["Parent"]["CZ_Account_ID__c"] == parent["CZ_Account_ID__c"]


def test_order_by_defaults_to_ascending_with_nulls_first_and_honours_nulls_last(sf):
    app, server, _ = sf
    plain = soql(server.url, "SELECT Id, ParentId FROM Account ORDER BY ParentId").json()["records"]
    last = soql(server.url, "SELECT Id, ParentId FROM Account ORDER BY ParentId ASC NULLS LAST").json()["records"]
    parents = [r["ParentId"] for r in plain]
    assert parents[:21] == [None] * 21 and parents[21:] == sorted(parents[21:])
    assert [r["ParentId"] for r in last] == parents[21:] + [None] * 21
