"""Fault, rewrite and statistics controls, which every vendor sandbox shares: each test runs
against the Close, Zoho CRM and Teamwork Desk fakes over real HTTP."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import requests

from cz_pipeline.sandbox.close import CloseSandbox
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.teamwork_desk import TeamworkDeskSandbox
from cz_pipeline.sandbox.zoho_crm import ZohoSandbox


@dataclass
class Vendor:
    running: RunningSandbox
    control: SandboxControl
    list_path: str  # a list endpoint, path only
    get: Callable[..., requests.Response]  # authenticated GET of the list endpoint
    records: Callable[[Any], list[dict]]  # the records of a list answer
    auth_header: str


def _close() -> Vendor:
    sb = RunningSandbox(CloseSandbox(n_leads=12))
    session = requests.Session()
    session.auth = ("api_sandbox_key", "")
    path = "/api/v1/lead/"
    auth = session.get(f"{sb.url}/api/v1/me/", timeout=10).request.headers["Authorization"]
    return Vendor(sb, SandboxControl(sb.url), path,
                  lambda timeout=10: session.get(f"{sb.url}{path}", params={"_limit": 5}, timeout=timeout),
                  lambda body: body["data"], auth)


def _zoho() -> Vendor:
    sb = RunningSandbox(ZohoSandbox(n_accounts=12))
    params = {"grant_type": "refresh_token", "client_id": "zoho_client", "client_secret": "zoho_secret",
              "refresh_token": "zoho_refresh"}
    token = requests.post(f"{sb.url}/oauth/v2/token", params=params, timeout=10).json()["access_token"]
    auth = f"Zoho-oauthtoken {token}"
    path = "/crm/v8/Accounts"
    return Vendor(sb, SandboxControl(sb.url), path,
                  lambda timeout=10: requests.get(f"{sb.url}{path}", params={"fields": "Account_Name,Modified_Time", "per_page": 5},
                                                  headers={"Authorization": auth}, timeout=timeout),
                  lambda body: body["data"], auth)


def _desk() -> Vendor:
    sb = RunningSandbox(TeamworkDeskSandbox(n_tickets=12, rate_limit_per_minute=None))
    auth = "Bearer tw_sandbox_key"
    path = "/desk/api/v2/tickets.json"
    return Vendor(sb, SandboxControl(sb.url), path,
                  lambda timeout=10: requests.get(f"{sb.url}{path}", params={"pageSize": 5},
                                                  headers={"Authorization": auth}, timeout=timeout),
                  lambda body: body["tickets"], auth)


@pytest.fixture(params=[_close, _zoho, _desk], ids=["close", "zoho_crm", "teamwork_desk"])
def vendor(request):
    v = request.param()
    yield v
    v.running.stop()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return False


def test_truncated_body_is_a_200_whose_json_does_not_parse(vendor):
    whole = vendor.get().text
    vendor.control.truncated_body(path_contains=vendor.list_path)
    cut = vendor.get()
    assert cut.status_code == 200 and cut.headers["Content-Type"].startswith("application/json")
    assert whole[:40] == cut.text[:40] and 1 <= len(cut.text) < len(whole)  # the real answer, cut
    assert not _is_json(cut.text)
    again = vendor.get().json()  # count=1: the next answer is whole again
    assert vendor.records(again) == vendor.records(json.loads(whole))


@pytest.mark.parametrize("kind, content_type", [("non_json", "text/plain"), ("html", "text/html")])
def test_non_json_and_html_bodies_come_with_status_200(vendor, kind, content_type):
    vendor.control.inject(kind, count=2, path_contains=vendor.list_path)
    answers = [vendor.get() for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]
    assert [a.headers["Content-Type"].split(";")[0] for a in answers[:2]] == [content_type] * 2
    assert not _is_json(answers[0].text) and not _is_json(answers[1].text)
    assert vendor.records(answers[2].json())
    if kind == "html":
        assert answers[0].text.lstrip().lower().startswith("<!doctype html>")
    assert vendor.control.stats()[f"faults {kind}"] == 2


def test_rate_fault_hits_about_five_percent_repeatably_with_a_seed(vendor):
    def pattern() -> list[bool]:
        vendor.control.fault_rate(0.05, status=503, seed=11, path_contains=vendor.list_path)
        hits = [vendor.get().status_code == 503 for _ in range(400)]
        vendor.control.clear_faults()
        return hits

    first = pattern()
    assert 8 <= sum(first) <= 32  # 20 expected
    assert pattern() == first  # same seed, same requests hit


def test_slow_response_trips_a_client_timeout_then_answers_normally(vendor):
    vendor.control.slow(1.0, path_contains=vendor.list_path)
    with pytest.raises(requests.exceptions.ReadTimeout):
        vendor.get(timeout=0.2)
    assert vendor.get().status_code == 200


def test_auth_echo_401_repeats_the_authorization_header(vendor):
    vendor.control.auth_echo_401(path_contains=vendor.list_path)
    resp = vendor.get()
    assert resp.status_code == 401
    assert resp.json()["authorization"] == vendor.auth_header and vendor.auth_header in resp.text


def test_unknown_fault_kind_and_bad_rate_are_refused(vendor):
    with pytest.raises(requests.HTTPError):
        vendor.control.inject("explode")
    with pytest.raises(requests.HTTPError):
        vendor.control.fault_rate(1.5)
    assert vendor.get().status_code == 200


def _target(vendor) -> tuple[str, dict]:
    record = vendor.records(vendor.get().json())[1]
    return str(record["id"]), record


def test_rewrite_puts_nul_and_lone_surrogate_escapes_on_the_wire(vendor):
    rid, _ = _target(vendor)
    vendor.control.rewrite(rid, "nul_text", "a\u0000b")
    vendor.control.rewrite(rid, "surrogate", "\ud800")
    text = vendor.get().text
    assert '"a\\u0000b"' in text and '"\\ud800"' in text
    record = next(r for r in vendor.records(json.loads(text)) if str(r.get("id")) == rid)
    assert record["nul_text"] == "a\x00b"
    with pytest.raises(UnicodeEncodeError):
        record["surrogate"].encode("utf-8")


def test_rewrite_zero_timestamp_null_and_missing_id(vendor):
    rid, record = _target(vendor)
    others = [str(r["id"]) for r in vendor.records(vendor.get().json()) if str(r["id"]) != rid]
    stamp_field = next(k for k, v in record.items() if isinstance(v, str) and v[:2] in ("19", "20") and "T" in v)
    vendor.control.rewrite(rid, stamp_field, raw='"0001-01-01T00:00:00+05:00"')
    rows = vendor.records(vendor.get().json())
    assert next(r for r in rows if str(r["id"]) == rid)[stamp_field] == "0001-01-01T00:00:00+05:00"
    vendor.control.clear_rewrites()

    vendor.control.rewrite(rid, "id", None, count=1)
    rows = vendor.records(vendor.get().json())
    assert [r["id"] for r in rows].count(None) == 1 and {str(r["id"]) for r in rows} >= set(others)
    vendor.control.rewrite(rid, "id", remove=True, count=1)
    rows = vendor.records(vendor.get().json())
    assert sum("id" not in r for r in rows) == 1 and len(rows) == len(others) + 1
    assert str(vendor.records(vendor.get().json())[1]["id"]) == rid  # count=1: back to normal


def test_rewrite_nests_a_field_deeper_than_json_dumps_can(vendor):
    rid, _ = _target(vendor)
    vendor.control.rewrite(rid, "deep", nested_depth=1200)
    text = vendor.get().text
    assert text.count('{"a": ') >= 1200 and '{"a": null}' in text
    with pytest.raises(RecursionError):
        json.loads(text)  # what a parser without a depth guard runs into


def test_stats_count_requests_per_path(vendor):
    vendor.control.reset_stats()
    for _ in range(3):
        vendor.get()
    stats = vendor.control.stats()
    assert stats[f"path {vendor.list_path}"] == 3 and stats[f"GET {vendor.list_path}"] == 3
    assert vendor.control.requests_to(vendor.list_path) == 3 and vendor.control.requests_to("/nothing/") == 0
