"""Fast tests of the Zoho CRM fake over real HTTP."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
import requests

from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.zoho_crm import ZohoSandbox

OFFSET = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+05:30$")


@pytest.fixture
def make():
    running = []

    def _make(**kwargs) -> RunningSandbox:
        sb = RunningSandbox(ZohoSandbox(**kwargs))
        running.append(sb)
        return sb

    yield _make
    for sb in running:
        sb.stop()


@pytest.fixture
def small(make):
    return make(n_accounts=30)


def token(sb: RunningSandbox, **overrides) -> dict:
    params = {"grant_type": "refresh_token", "client_id": "zoho_client", "client_secret": "zoho_secret",
              "refresh_token": "zoho_refresh", **overrides}
    resp = requests.post(f"{sb.url}/oauth/v2/token", params=params, timeout=10)
    assert resp.status_code == 200
    return resp.json()


def api(sb: RunningSandbox, method: str = "GET", path: str = "Accounts", tok: str | None = None, **kwargs):
    tok = tok or token(sb)["access_token"]
    headers = {"Authorization": f"Zoho-oauthtoken {tok}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{sb.url}/crm/v8/{path}", headers=headers, timeout=10, **kwargs)


def test_token_refresh_and_errors(small):
    body = token(small)
    assert body["access_token"].startswith("1000.") and body["expires_in"] == 3600
    assert body["api_domain"] == small.url and body["token_type"] == "Bearer"
    # form-encoded body works too
    form = requests.post(f"{small.url}/oauth/v2/token", timeout=10, data={
        "grant_type": "refresh_token", "client_id": "zoho_client", "client_secret": "zoho_secret",
        "refresh_token": "zoho_refresh"}).json()
    assert "access_token" in form
    assert token(small, refresh_token="nope") == {"error": "invalid_code"}  # HTTP 200!
    assert token(small, client_id="other") == {"error": "invalid_client"}
    SandboxControl(small.url).mutate("revoke_refresh_token", "oauth")
    assert token(small) == {"error": "invalid_code"}
    fresh = SandboxControl(small.url).mutate("issue_refresh_token", "oauth")["refresh_token"]
    assert "access_token" in token(small, refresh_token=fresh)


def test_invalid_and_expired_access_tokens(make):
    sb = make(n_accounts=5)
    tok = token(sb)["access_token"]
    assert api(sb, tok=tok, params={"fields": "Account_Name"}).status_code == 200
    bearer = requests.get(f"{sb.url}/crm/v8/Accounts", params={"fields": "Account_Name"}, timeout=10,
                          headers={"Authorization": f"Bearer {tok}"})
    assert bearer.status_code == 200
    SandboxControl(sb.url).mutate("expire_access_tokens", "oauth")
    resp = api(sb, tok=tok, params={"fields": "Account_Name"})
    assert resp.status_code == 401
    assert resp.json() == {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}
    short = make(n_accounts=5, token_ttl_seconds=0)
    assert api(short, params={"fields": "Account_Name"}).status_code == 401


def test_fields_param_rules_and_metadata(small):
    tok = token(small)["access_token"]
    missing = api(small, tok=tok)
    assert missing.status_code == 400 and missing.json()["code"] == "REQUIRED_PARAM_MISSING"
    meta = api(small, path="settings/fields", tok=tok, params={"module": "Accounts"}).json()["fields"]
    names = [f["api_name"] for f in meta]
    assert len(names) > 50 and {"Account_Number", "Parent_Account", "Modified_Time"} <= set(names)
    assert {"api_name", "data_type", "json_type", "custom_field", "lookup", "id"} <= set(meta[0])
    too_many = api(small, tok=tok, params={"fields": ",".join(names[:51])})
    assert too_many.status_code == 400 and too_many.json()["details"] == {"limit": 50, "param_name": "fields"}
    # only requested fields (+ id) come back; unknown names are ignored; the two batches merge by id
    first = api(small, tok=tok, params={"fields": ",".join(names[:49]) + ",Nope"}).json()["data"]
    second = api(small, tok=tok, params={"fields": ",".join(names[49:])}).json()["data"]
    assert set(first[0]) == {"id", *names[:49]} and set(second[0]) == {"id", *names[49:]}
    merged = {r["id"]: r for r in first}
    for r in second:
        merged[r["id"]].update(r)
    truth = {r["id"]: r for r in SandboxControl(small.url).state("Accounts")}
    assert all(merged[i] == {k: truth[i][k] for k in merged[i]} for i in merged)
    bad_sort = api(small, tok=tok, params={"fields": "Account_Name", "sort_by": "Account_Name"})
    assert bad_sort.status_code == 400 and bad_sort.json()["details"]["param_name"] == "sort_by"


def test_payload_shapes_and_offsets(small):
    tok = token(small)["access_token"]
    acct = api(small, tok=tok, params={"fields": "Account_Name,Owner,Parent_Account,Created_Time,Modified_Time,"
                                                 "Account_Number", "sort_by": "id", "sort_order": "asc"}).json()
    rows = acct["data"]
    assert rows[0]["id"].isdigit() and rows[0]["Account_Number"] == "Z-00001"
    assert rows[1]["Parent_Account"] == {"name": rows[0]["Account_Name"], "id": rows[0]["id"]}
    assert rows[2]["Parent_Account"]["id"] == rows[1]["id"]  # a 3-level tree: Z-00001 <- Z-00002 <- Z-00003
    assert set(rows[0]["Owner"]) == {"name", "id", "email"}
    assert all(OFFSET.match(r["Created_Time"]) and OFFSET.match(r["Modified_Time"]) for r in rows)
    assert set(acct["info"]) >= {"per_page", "count", "page", "sort_by", "sort_order", "more_records",
                                 "next_page_token", "previous_page_token", "page_token_expiry"}
    deals = api(small, path="Deals", tok=tok, params={"fields": "Amount,Closing_Date,Start_Date,Account_Name"}).json()
    assert all(isinstance(d["Amount"], (int, float)) and re.fullmatch(r"\d{4}-\d\d-\d\d", d["Closing_Date"])
               for d in deals["data"])
    tasks = api(small, path="Tasks", tok=tok, params={"fields": "Status,Closed_Time,What_Id,$se_module"}).json()
    assert all((t["Closed_Time"] is not None) == (t["Status"] == "Completed") for t in tasks["data"])
    assert all(t["$se_module"] == "Accounts" and set(t["What_Id"]) == {"name", "id"} for t in tasks["data"])
    users = api(small, path="users", tok=tok, params={"type": "AllUsers"}).json()
    assert 5 <= len(users["users"]) <= 8
    assert {"status", "role", "profile", "Modified_Time", "email", "full_name"} <= set(users["users"][0])


def test_discrete_pages_stop_at_2000_and_page_token_reaches_everything(make):
    sb = make()  # defaults: 400 accounts, > 2000 contacts
    tok = token(sb)["access_token"]
    total = len(SandboxControl(sb.url).state("Contacts"))
    assert total > 2000
    params = {"fields": "Email", "per_page": 200}
    seen = []
    for page in range(1, 11):
        body = api(sb, path="Contacts", tok=tok, params={**params, "page": page}).json()
        assert body["info"]["next_page_token"]  # issued from the first page on
        seen += [r["id"] for r in body["data"]]
    assert len(seen) == len(set(seen)) == 2000
    over = api(sb, path="Contacts", tok=tok, params={**params, "page": 11})
    assert over.status_code == 400 and over.json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"

    ids, page_token, pages = [], None, 0
    while True:
        query = {**params, **({"page_token": page_token} if page_token else {})}
        body = api(sb, path="Contacts", tok=tok, params=query).json()
        ids += [r["id"] for r in body["data"]]
        pages += 1
        if not body["info"]["more_records"]:
            break
        page_token = body["info"]["next_page_token"]
    assert len(ids) == len(set(ids)) == total and pages == -(-total // 200)

    first = api(sb, path="Contacts", tok=tok, params=params).json()["info"]["next_page_token"]
    both = api(sb, path="Contacts", tok=tok, params={**params, "page": 2, "page_token": first})
    assert both.status_code == 400 and both.json()["code"] == "AMBIGUITY_DURING_PROCESSING"
    altered = api(sb, path="Contacts", tok=tok, params={"fields": "Email,Title", "per_page": 200, "page_token": first})
    assert altered.status_code == 400 and altered.json()["code"] == "TOKEN_BOUND_DATA_MISMATCH"


def test_page_token_record_cap(make):
    sb = make(n_accounts=30, max_discrete_records=20, max_page_token_records=25)
    tok = token(sb)["access_token"]
    params = {"fields": "Account_Name", "per_page": 10}
    assert api(sb, tok=tok, params={**params, "page": 3}).json()["code"] == "DISCRETE_PAGINATION_LIMIT_EXCEEDED"
    body, served = api(sb, tok=tok, params=params).json(), 10
    while served < 25:  # the last allowed page is cut short at the cap
        body = api(sb, tok=tok, params={**params, "page_token": body["info"]["next_page_token"]}).json()
        served += body["info"]["count"]
    capped = api(sb, tok=tok, params={**params, "page_token": body["info"]["next_page_token"]})
    assert capped.status_code == 400 and capped.json()["code"] == "PAGINATION_LIMIT_EXCEEDED"


def test_if_modified_since_304_then_changes(small):
    tok = token(small)["access_token"]
    since = datetime.now().astimezone().isoformat(timespec="seconds")
    fields = {"fields": "Account_Name,Modified_Time", "sort_by": "Modified_Time", "sort_order": "asc"}
    none = api(small, tok=tok, params=fields, headers={"If-Modified-Since": since})
    assert none.status_code == 304 and none.content == b""
    ctl = SandboxControl(small.url)
    target = ctl.state("Accounts")[5]
    updated = ctl.mutate("update", "Accounts", id=target["id"], data={"Account_Name": "Renamed Ltd"})
    assert updated["Modified_Time"] > target["Modified_Time"] and OFFSET.match(updated["Modified_Time"])
    changed = api(small, tok=tok, params=fields, headers={"If-Modified-Since": since}).json()["data"]
    assert [r["id"] for r in changed] == [target["id"]] and changed[0]["Account_Name"] == "Renamed Ltd"
    # inclusive: the record's own Modified_Time still matches
    again = api(small, tok=tok, params=fields, headers={"If-Modified-Since": updated["Modified_Time"]})
    assert [r["id"] for r in again.json()["data"]] == [target["id"]]


def test_empty_module_is_204(make):
    sb = make(n_accounts=0)
    resp = api(sb, path="Deals", params={"fields": "Deal_Name"})
    assert resp.status_code == 204 and resp.content == b""


def test_deleted_after_control_delete(small):
    tok = token(small)["access_token"]
    assert api(small, path="Accounts/deleted", tok=tok, params={"type": "all"}).status_code == 204
    ctl = SandboxControl(small.url)
    a, b = ctl.state("Accounts")[:2]
    ctl.mutate("delete", "Accounts", id=a["id"])
    ctl.mutate("delete", "Accounts", id=b["id"], permanent=True)
    body = api(small, path="Accounts/deleted", tok=tok, params={"type": "all", "per_page": 200}).json()
    by_id = {r["id"]: r for r in body["data"]}
    assert by_id[a["id"]]["type"] == "recycle" and by_id[a["id"]]["display_name"] == a["Account_Name"]
    assert by_id[a["id"]]["deleted_by"]["id"].isdigit() and OFFSET.match(by_id[a["id"]]["deleted_time"])
    assert by_id[b["id"]]["type"] == "permanent"
    assert by_id[b["id"]]["display_name"] is None and by_id[b["id"]]["deleted_by"] is None
    recycle = api(small, path="Accounts/deleted", tok=tok, params={"type": "recycle"}).json()["data"]
    assert [r["id"] for r in recycle] == [a["id"]]
    live = api(small, tok=tok, params={"fields": "Account_Name", "per_page": 200}).json()["data"]
    assert a["id"] not in {r["id"] for r in live}
    assert len(ctl.state("deleted:Accounts")) == 2


def test_put_update_and_invalid_field(small):
    tok = token(small)["access_token"]
    deal = SandboxControl(small.url).state("Deals")[0]
    ok = api(small, "PUT", f"Deals/{deal['id']}", tok=tok, json={"data": [{"Proposal_URL": "https://cz/x"}]})
    assert ok.status_code == 200
    result = ok.json()["data"][0]
    assert result["code"] == "SUCCESS" and result["details"]["id"] == deal["id"]
    assert OFFSET.match(result["details"]["Modified_Time"])
    bad = api(small, "PUT", f"Deals/{deal['id']}", tok=tok, json={"data": [{"No_Such_Field": 1}]})
    assert bad.status_code == 400
    assert bad.json()["data"][0]["code"] == "INVALID_DATA"
    assert bad.json()["data"][0]["details"]["api_name"] == "No_Such_Field"
    bulk = api(small, "PUT", "Deals", tok=tok, json={"data": [{"id": deal["id"], "Stage": "Closed Won"},
                                                              {"id": "1", "Stage": "Closed Won"}]})
    assert bulk.status_code == 207 and [r["status"] for r in bulk.json()["data"]] == ["success", "error"]


def test_rate_limit_429(small):
    tok = token(small)["access_token"]
    SandboxControl(small.url).rate_limit(2, 60)
    codes = [api(small, tok=tok, params={"fields": "Account_Name"}) for _ in range(3)]
    assert [r.status_code for r in codes] == [200, 200, 429]
    assert codes[2].json()["code"] == "TOO_MANY_REQUESTS" and int(codes[2].headers["Retry-After"]) >= 1
    assert SandboxControl(small.url).stats()["credits"] >= 2
