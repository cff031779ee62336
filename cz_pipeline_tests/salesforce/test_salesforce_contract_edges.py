"""Contract edges of the Salesforce connector with `responses` stubs: the sandbox login host,
calls to the token's instance_url, one refresh per 401, no retry on the daily cap, a field
refused mid-run re-described, and the routine query's URL encoding."""

from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from cz_pipeline.sources.salesforce import SANDBOX_LOGIN_URL, DailyApiLimitReached, SalesforceConnector

INSTANCE = "https://acme--dev.sandbox.my.salesforce.com"
API = f"{INSTANCE}/services/data/v60.0"
LIMIT = {"Sforce-Limit-Info": "api-usage=10/15000"}
DESCRIBE = {"fields": [{"name": n, "type": "string", "custom": n.endswith("__c")}
                       for n in ("Id", "Name", "Old__c", "IsDeleted", "SystemModstamp")]}


def token(rsps: responses.RequestsMock, login: str = SANDBOX_LOGIN_URL, n: int = 1) -> None:
    for i in range(n):
        rsps.post(f"{login}/services/oauth2/token", json={"access_token": f"sess{i}", "instance_url": INSTANCE,
                                                          "token_type": "Bearer"})


def sf(**kw) -> SalesforceConnector:
    return SalesforceConnector(client_id="cid", client_secret="sec", refresh_token="rt",
                               login_url=kw.pop("login_url", SANDBOX_LOGIN_URL), **kw)


def rows(*names: str) -> dict:
    return {"done": True, "totalSize": len(names), "records": [
        {"attributes": {"type": "Account"}, "Id": n, "Name": n, "SystemModstamp": "2024-03-01T10:00:00.000+0000"}
        for n in names]}


@responses.activate
def test_sandbox_org_refreshes_on_test_salesforce_and_calls_the_instance():
    token(responses)
    responses.get(f"{API}/sobjects/Account/describe", json=DESCRIBE, headers=LIMIT)
    responses.get(f"{API}/queryAll", json=rows("001A"), headers=LIMIT)
    got = [r.source_id for p in sf().stream("leads", None) for r in p]
    assert got == ["001A"]
    assert responses.calls[0].request.url == f"{SANDBOX_LOGIN_URL}/services/oauth2/token"
    assert parse_qs(responses.calls[0].request.body)["grant_type"] == ["refresh_token"]
    assert all(c.request.url.startswith(INSTANCE) for c in responses.calls[1:])
    assert responses.calls[1].request.headers["Authorization"] == "Bearer sess0"


@responses.activate
def test_default_login_host_is_production():
    token(responses, login="https://login.salesforce.com")
    responses.get(f"{API}/sobjects/", json={"sobjects": []}, headers=LIMIT)
    sf(login_url=None).check()
    assert responses.calls[0].request.url.startswith("https://login.salesforce.com/")


@responses.activate
def test_401_invalid_session_refreshes_once_and_retries_once():
    token(responses, n=2)
    expired = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    responses.get(f"{API}/sobjects/", json=expired, status=401)
    responses.get(f"{API}/sobjects/", json={"sobjects": []}, headers=LIMIT)
    c = sf()
    assert c.check() == {"sobjects": []}
    assert c.auth.refreshes == 2 and c.http.calls == 2
    assert responses.calls[-1].request.headers["Authorization"] == "Bearer sess1"


@responses.activate
def test_request_limit_exceeded_is_not_retried():
    token(responses)
    responses.get(f"{API}/sobjects/", status=403, headers={"Sforce-Limit-Info": "api-usage=15000/15000"},
                  json=[{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}])
    c = sf()
    with pytest.raises(DailyApiLimitReached, match="daily API request limit reached"):
        c.check()
    assert c.http.calls == 1 and c.api_usage()["api_usage"] == 15000


@responses.activate
def test_field_refused_mid_run_is_described_again_and_the_query_resent():
    token(responses)
    responses.get(f"{API}/sobjects/Account/describe", json=DESCRIBE, headers=LIMIT)
    responses.get(f"{API}/query", status=400, headers=LIMIT,
                  json=[{"message": "No such column 'Old__c' on entity 'Account'", "errorCode": "INVALID_FIELD"}])
    responses.get(f"{API}/sobjects/Account/describe", headers=LIMIT,
                  json={"fields": [f for f in DESCRIBE["fields"] if f["name"] != "Old__c"]})
    responses.get(f"{API}/query", json=rows("001A", "001B"), headers=LIMIT)
    c = sf()
    since = datetime(2024, 3, 1, 9, 59, 59, 750_000, tzinfo=timezone.utc)
    assert [r.source_id for p in c.stream("leads", since) for r in p] == ["001A", "001B"]
    sent = [c.request.url for c in responses.calls if "/query" in c.request.url]
    assert "Old__c" in parse_qs(urlsplit(sent[0]).query)["q"][0]
    final = parse_qs(urlsplit(sent[1]).query)["q"][0]
    assert "Old__c" not in final and "WHERE SystemModstamp >= 2024-03-01T09:59:59Z ORDER BY" in final
    assert "%3E%3D+2024-03-01T09%3A59%3A59Z" in sent[1]  # encoded, unquoted


@responses.activate
def test_next_records_url_is_followed_and_a_repeated_one_fails():
    token(responses)
    page = {"done": False, "totalSize": 4, "nextRecordsUrl": "/services/data/v60.0/query/01g-2",
            "records": rows("001A", "001B")["records"]}
    responses.get(f"{API}/query", json=page, headers=LIMIT)
    responses.get(f"{API}/query/01g-2", json=page, headers=LIMIT)  # a server that never advances
    with pytest.raises(Exception, match="repeats"):
        list(sf().query_pages("SELECT Id FROM Account"))
