"""The Zoho connector against behaviour the contract (docs/crm-api-contracts.md section 2) allows
but our Zoho fake does not produce: a strict `If-Modified-Since`, edits during a walk, a server
that refuses `$se_module` in `fields`, ignores `ids`/`page`/`per_page`, leaves out
`more_records`, repeats a `page_token`, answers field metadata with 204, or throttles token
refreshes with HTTP 200. The fake (real HTTP) where it can be configured that way; `responses`
stubs for one connector edge case each otherwise."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from cz_pipeline.core.http import ApiError, AuthError, RetryPolicy
from cz_pipeline.sources.zoho_crm.connector import ZohoCrmConnector, clear_token_cache
from cz_pipeline.sandbox.zoho_crm import ZohoSandbox
from cz_pipeline_tests.conftest import SyncRunner, rows
from cz_pipeline_tests.zoho.conftest import ZOHO_SECRETS, zoho_crm_config


def connector(url: str, **kwargs: Any) -> ZohoCrmConnector:
    return ZohoCrmConnector(**{**ZOHO_SECRETS, "accounts_url": url, "base_url": url, **kwargs})


def ids_of(pages: list) -> list[str]:
    return [r.source_id for page in pages for r in page]


def iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


# ---- a strict If-Modified-Since server (the fake, configured so) ------------------------------

def test_strict_if_modified_since_server_still_returns_what_changed_in_the_second_after_the_cursor(make_zoho):
    # "records modified after that time" read literally; the old `cursor + 1 s` header then
    # skipped every change made in the second after the cursor
    app, server, control = make_zoho(if_modified_since_inclusive=False)
    a, b = sorted(app.dump("Accounts"), key=lambda r: r["id"])[:2]
    cursor = datetime.fromisoformat(max(r["Modified_Time"] for r in app.dump("Accounts"))) + timedelta(seconds=10)
    control.mutate("update", "Accounts", id=a["id"], data={"Modified_Time": iso(cursor)})  # landed last run
    control.mutate("update", "Accounts", id=b["id"], data={"Modified_Time": iso(cursor + timedelta(seconds=1)),
                                                           "Account_Name": "One Second Later Ltd"})
    users = sorted(app.dump("users"), key=lambda u: u["id"])
    control.mutate("update", "users", id=users[0]["id"], data={"Modified_Time": iso(cursor)})
    control.mutate("update", "users", id=users[1]["id"], data={"Modified_Time": iso(cursor + timedelta(seconds=1))})

    conn = connector(server.url)
    pages = list(conn.stream("leads", cursor))
    assert ids_of(pages) == [b["id"]]
    assert pages[0][0].payload["Account_Name"] == "One Second Later Ltd"  # all field batches merged in
    assert ids_of(list(conn.stream("users", cursor))) == [users[1]["id"]]


def test_strict_server_routine_sync_without_overlap_lands_a_change_one_second_after_the_cursor(
        make_zoho, write_tenants, warehouse_url, engine, tenant_id):
    app, server, control = make_zoho(if_modified_since_inclusive=False)
    path = write_tenants({tenant_id: {"crm": zoho_crm_config(server.url, overlap_seconds=0, settle_lag_seconds=0)}})
    runner = SyncRunner(path, warehouse_url)
    runner.run("full_sync", tenant_id)
    cursor = rows(engine, "SELECT high_water FROM sync.cursors WHERE tenant_id = :t AND entity = 'leads'",
                  t=tenant_id)[0]["high_water"]
    target = sorted(app.dump("Accounts"), key=lambda r: r["id"])[4]
    control.mutate("update", "Accounts", id=target["id"],
                   data={"Modified_Time": iso(cursor + timedelta(seconds=1)), "Account_Name": "Edge Second GmbH"})
    runner.run("routine_sync", tenant_id)
    landed = rows(engine, "SELECT payload->>'Account_Name' AS name FROM raw.leads WHERE tenant_id = :t AND source_id = :s",
                  t=tenant_id, s=target["id"])
    assert landed == [{"name": "Edge Second GmbH"}]


def test_inclusive_server_with_only_the_cursor_second_in_the_window_costs_one_probe(zoho):
    app, server, control = zoho
    newest = max(app.dump("Contacts"), key=lambda r: r["Modified_Time"])
    conn = connector(server.url)
    control.reset_stats()
    # the engine's since = the newest landed Modified_Time: the fake returns that record again
    assert list(conn.stream("contacts", datetime.fromisoformat(newest["Modified_Time"]))) == []
    stats = control.stats()
    assert stats["GET /crm/v8/Contacts"] == 1 and "GET /crm/v8/settings/fields" not in stats


# ---- an edit during an incremental walk (the fake, with a hook) --------------------------------

class EditDuringWalk(ZohoSandbox):
    """After serving page 1 of the Contacts walk, the first record of that page is edited (a user
    saving a contact while the sync runs)."""

    def route(self, req):
        resp = super().route(req)
        if req.path.rstrip("/") == "/crm/v8/Contacts" and req.arg("page") == "1" and req.arg("per_page") == "200" \
                and not getattr(self, "edited", False):
            self.edited = True
            first = json.loads(resp.body)["data"][0]["id"]
            self._write("Contacts", self.records["Contacts"][first], {"Title": "Edited mid-walk"}, api=False)
        return resp


def test_a_record_edited_during_an_incremental_walk_does_not_push_another_past_a_page_boundary(make_zoho):
    # in Modified_Time order the edited record jumps to the end and every later record moves one
    # place back: the first record of page 2 slid onto page 1, already read, and was never landed
    app, server, control = make_zoho(cls=EditDuringWalk, n_accounts=50)
    before = {r["id"] for r in app.dump("Contacts")}
    assert len(before) > 200  # two pages
    pages = list(connector(server.url).stream("contacts", datetime(2000, 1, 1, tzinfo=timezone.utc)))
    assert app.edited and set(ids_of(pages)) == before


# ---- responses stubs: one edge case each -------------------------------------------------------

API = "https://zoho-api.test"
ACCOUNTS = "https://zoho-accounts.test"
Handler = Callable[[str, dict[str, str], Any], tuple[int, Any]]


class Stub:
    """A Zoho API for one test: `handler(path, params, headers) -> (status, body|None)`; the token
    endpoint answers `token_answers` in turn (then a valid token). Stops a runaway walk."""

    def __init__(self, rsps: responses.RequestsMock, handler: Handler, token_answers: list | None = None,
                 max_calls: int = 200):
        self.handler, self.token_answers, self.max_calls = handler, list(token_answers or []), max_calls
        self.calls: list[tuple[str, dict[str, str], dict[str, str]]] = []
        self.token_calls = 0
        rsps.add_callback(responses.POST, re.compile(re.escape(ACCOUNTS) + r"/oauth/v2/token.*"), callback=self._token)
        rsps.add_callback(responses.GET, re.compile(re.escape(API) + r"/crm/v8/.*"), callback=self._api)

    def _token(self, request):
        self.token_calls += 1
        if self.token_answers:
            status, body = self.token_answers.pop(0)
            return status, {}, json.dumps(body)
        return 200, {}, json.dumps({"access_token": "1000.stub.token", "expires_in": 3600,
                                    "api_domain": API, "token_type": "Bearer"})

    def _api(self, request):
        url = urlsplit(request.url)
        path, params = url.path.removeprefix("/crm/v8/"), dict(parse_qsl(url.query))
        self.calls.append((path, params, dict(request.headers)))
        if len(self.calls) > self.max_calls:
            return 599, {}, "runaway walk"
        status, body = self.handler(path, params, request.headers)
        return status, {}, "" if body is None else body if isinstance(body, str) else json.dumps(body)

    def paths(self, path: str) -> list[dict[str, str]]:
        return [params for p, params, _ in self.calls if p == path]


@pytest.fixture
def rsps():
    clear_token_cache()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock
    clear_token_cache()


def stub_connector(**kwargs: Any) -> ZohoCrmConnector:
    return ZohoCrmConnector(client_id="c", client_secret="s", refresh_token="r", accounts_url=ACCOUNTS,
                            base_url=API, policy=RetryPolicy(max_attempts=1), **kwargs)


def meta(*names: str) -> dict[str, Any]:
    return {"fields": [{"api_name": n, "data_type": "text", "custom_field": False} for n in names]}


def record(rid: int, fields: list[str], **values: Any) -> dict[str, Any]:
    base = {"id": str(rid), "Modified_Time": "2026-01-01T10:00:00+05:30", "Subject": f"s{rid}",
            "What_Id": {"name": "Deal", "id": "77"}, "$se_module": "Deals", **values}
    return {k: v for k, v in base.items() if k == "id" or k in fields or k == "$se_module"}


def test_a_server_refusing_se_module_in_fields_is_read_without_it_and_tasks_still_land(rsps):
    def handler(path, params, headers):
        if path == "settings/fields":
            return 200, meta("Subject", "What_Id")
        fields = params["fields"].split(",")
        if "$se_module" in fields:  # a strict implementation: not a field of the metadata
            return 400, {"code": "INVALID_DATA", "details": {"param_name": "fields"}, "message": "invalid data",
                         "status": "error"}
        return 200, {"data": [record(i, fields) for i in (1, 2)], "info": {"more_records": False, "per_page": 200}}

    stub = Stub(rsps, handler)
    conn = stub_connector()
    pages = list(conn.stream("tasks", None))
    assert ids_of(pages) == ["1", "2"]
    assert pages[0][0].payload["What_Id"]["id"] == "77" and pages[0][0].payload["$se_module"] == "Deals"
    assert conn.refused_fields["Tasks"] == {"$se_module"}
    list(conn.stream("tasks", None))  # asked once per run, not once per request
    assert sum("$se_module" in p["fields"] for p in stub.paths("Tasks")) == 1


def test_a_field_the_server_names_as_invalid_is_dropped_and_any_other_400_still_fails(rsps):
    def handler(path, params, headers):
        if path == "settings/fields":
            return 200, meta("Subject", "Secret_Formula")
        if params.get("sort_by") not in (None, "id", "Modified_Time", "Created_Time"):
            return 400, {"code": "INVALID_DATA", "details": {"param_name": "sort_by"}, "message": "invalid data",
                         "status": "error"}
        if "Secret_Formula" in params["fields"]:
            return 400, {"code": "INVALID_DATA", "details": {"api_name": "Secret_Formula"},
                         "message": "the field is not available", "status": "error"}
        return 200, {"data": [record(1, params["fields"].split(","))], "info": {"more_records": False}}

    Stub(rsps, handler)
    conn = stub_connector()
    assert ids_of(list(conn.stream("tasks", None))) == ["1"]
    assert conn.refused_fields["Tasks"] == {"Secret_Formula"}
    with pytest.raises(ApiError, match="HTTP 400: invalid data"):
        conn._list("Tasks", ["id"], {"sort_by": "Owner"})


def test_a_server_ignoring_ids_gets_one_record_reads_so_no_record_misses_a_field_batch(rsps):
    names = [f"F{i}" for i in range(60)]  # two field batches

    def full(rid: int, fields: list[str]) -> dict[str, Any]:
        return {"id": str(rid), **{f: f"{f}-{rid}" for f in fields if f != "id"}}

    def handler(path, params, headers):
        if path == "settings/fields":
            return 200, meta(*names)
        fields = params["fields"].split(",")
        if path.startswith("Accounts/"):
            return 200, {"data": [full(int(path.split("/")[1]), fields)]}
        if "ids" in params:  # ignored: the module's default first page instead
            return 200, {"data": [full(rid, fields) for rid in (901, 902)], "info": {"more_records": True}}
        return 200, {"data": [full(rid, fields) for rid in (1, 2, 3)], "info": {"more_records": False}}

    stub = Stub(rsps, handler)
    pages = list(stub_connector().stream("leads", None))
    assert ids_of(pages) == ["1", "2", "3"]
    for rec in pages[0]:
        assert rec.payload["F59"] == f"F59-{rec.source_id}" and rec.payload["F0"] == f"F0-{rec.source_id}"
    assert sorted(p for p, _, _ in stub.calls if p.startswith("Accounts/")) == ["Accounts/1", "Accounts/2", "Accounts/3"]


def test_ids_answered_exactly_need_no_one_record_reads_and_a_vanished_id_is_not_chased(rsps):
    names = [f"F{i}" for i in range(60)]

    def handler(path, params, headers):
        if path == "settings/fields":
            return 200, meta(*names)
        fields = params["fields"].split(",")
        rids = [int(i) for i in params["ids"].split(",")] if "ids" in params else [1, 2, 3]
        rids = [r for r in rids if r != 2 or "ids" not in params]  # 2 was deleted between the two reads
        return 200, {"data": [{"id": str(r), **{f: r for f in fields if f != "id"}} for r in rids],
                     "info": {"more_records": False}}

    stub = Stub(rsps, handler)
    assert ids_of(list(stub_connector().stream("leads", None))) == ["1", "2", "3"]
    assert not [p for p, _, _ in stub.calls if p.startswith("Accounts/")]


def test_field_metadata_answering_204_fails_instead_of_landing_bare_payloads(rsps):
    stub = Stub(rsps, lambda path, params, headers: (204, None) if path == "settings/fields"
                else (200, {"data": [{"id": "1", "Modified_Time": "2026-01-01T10:00:00+05:30"}],
                            "info": {"more_records": False}}))
    with pytest.raises(ApiError, match="no field metadata for module Deals"):
        list(stub_connector().stream("deals", None))
    assert not stub.paths("Deals")


def test_users_without_more_records_go_on_after_a_full_page_and_stop_after_a_short_one(rsps):
    def handler(path, params, headers):
        page = int(params["page"])
        count = 200 if page == 1 else 7
        return 200, {"users": [{"id": str(page * 1000 + i), "Modified_Time": "2026-01-01T10:00:00+05:30"}
                               for i in range(count)], "info": {"page": page}}  # no more_records

    stub = Stub(rsps, handler)
    assert len(ids_of(list(stub_connector().stream("users", None)))) == 207
    assert [p["page"] for p in stub.paths("users")] == ["1", "2"]


@pytest.mark.parametrize("entity,path,key", [("users", "users", "users"), ("deals", "Deals/deleted", "data")])
def test_a_server_ignoring_page_fails_the_walk_instead_of_looping(rsps, entity, path, key):
    same = [{"id": str(i), "Modified_Time": "2026-01-01T10:00:00+05:30",
             "deleted_time": "2026-01-01T10:00:00+05:30"} for i in range(200)]
    stub = Stub(rsps, lambda p, params, headers: (200, {key: same, "info": {"more_records": True}}))
    conn = stub_connector()
    with pytest.raises(ApiError, match="repeats the previous page"):
        if entity == "users":
            list(conn.stream("users", None))
        else:
            list(conn.deletions(entity, datetime(2026, 1, 1, tzinfo=timezone.utc)))
    assert len(stub.paths(path)) == 2


def test_a_repeated_next_page_token_fails_the_walk_instead_of_looping(rsps):
    def handler(path, params, headers):
        if path == "settings/fields":
            return 200, meta("Deal_Name")
        start = int(params.get("page", 0)) * 1000 if "page" in params else 50_000 + len(stub.calls) * 1000
        data = [{"id": str(start + i), "Modified_Time": "2026-01-01T10:00:00+05:30"} for i in range(200)]
        return 200, {"data": data, "info": {"more_records": True, "next_page_token": "stuck"}}

    stub = Stub(rsps, handler)
    with pytest.raises(ApiError, match="next_page_token repeats"):
        list(stub_connector().stream("deals", None))
    walk = stub.paths("Deals")
    assert [p.get("page") for p in walk[:10]] == [str(i) for i in range(1, 11)]
    assert [p.get("page_token") for p in walk[10:]] == ["stuck"]  # the second "stuck" ends it


def test_probe_ignoring_per_page_with_only_the_cursor_second_reads_nothing_more(rsps):
    cursor = datetime(2026, 1, 1, 4, 30, 0, tzinfo=timezone.utc)  # 10:00:00+05:30

    def handler(path, params, headers):
        assert headers["If-Modified-Since"] == "2026-01-01T04:30:00+00:00"  # the cursor's own second
        return 200, {"data": [{"id": str(i), "Modified_Time": "2026-01-01T10:00:00+05:30"} for i in range(3)],
                     "info": {"more_records": False}}

    stub = Stub(rsps, handler)
    assert list(stub_connector().stream("contacts", cursor + timedelta(microseconds=400))) == []
    assert len(stub.calls) == 1 and stub.calls[0][1]["sort_order"] == "desc"


def test_token_throttle_reported_as_http_200_is_waited_out(rsps):
    waits: list[float] = []
    stub = Stub(rsps, lambda path, params, headers: (200, {"users": [{"id": "1"}], "info": {"more_records": False}}),
                token_answers=[(200, {"error": "Access Denied",
                                      "error_description": "You have made too many requests continuously."})])
    conn = stub_connector(sleep=waits.append)
    assert ids_of(list(conn.stream("users", None))) == ["1"]
    assert waits == [5.0] and stub.token_calls == 2


def test_refresh_token_refused_with_an_oauth_style_400_is_an_auth_error(rsps):
    stub = Stub(rsps, lambda *a: (200, {}), token_answers=[(400, {"error": "invalid_code"})])
    with pytest.raises(AuthError, match=r"refused the refresh token \(invalid_code\)"):
        list(stub_connector().stream("users", None))
    assert stub.token_calls == 1 and not stub.calls


def test_a_200_that_is_not_json_fails_clearly(rsps):
    Stub(rsps, lambda *a: (200, "<html>maintenance</html>"))
    # An HTML page with status 200 is retried like a 5xx, then fails naming the request.
    with pytest.raises(ApiError, match=r"GET .*users.*not valid JSON"):
        list(stub_connector().stream("users", None))
