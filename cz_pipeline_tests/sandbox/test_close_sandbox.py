"""The Close fake itself, over real HTTP: auth, paging caps, `_fields`, filters, search cursors,
the event log, writes and rate limiting."""

from __future__ import annotations

import json

import pytest
import requests

from cz_pipeline.sandbox.close import CUSTOM_FIELD_IDS, CloseSandbox, parse_dt
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox

KEY = "api_sandbox_key"
ACCOUNT = f"custom.{CUSTOM_FIELD_IDS['account_id']}"
PARENT = f"custom.{CUSTOM_FIELD_IDS['parent_account_id']}"


@pytest.fixture(scope="module")
def sandbox():
    with RunningSandbox(CloseSandbox(n_leads=30)) as running:
        yield running


@pytest.fixture
def api(sandbox):
    session = requests.Session()
    session.auth = (KEY, "")
    base = f"{sandbox.url}/api/v1"

    def call(method: str, path: str, **kwargs):
        return session.request(method, base + path, timeout=10, **kwargs)

    return call


def walk(api, path: str, limit: int, **params) -> list[dict]:
    rows, skip = [], 0
    while True:
        body = api("GET", path, params={**params, "_skip": skip, "_limit": limit}).json()
        rows += body["data"]
        if not body["has_more"]:
            return rows
        skip += limit


def test_auth(sandbox, api):
    url = f"{sandbox.url}/api/v1/me/"
    assert requests.get(url, timeout=10).status_code == 401
    bad = requests.get(url, auth=("api_wrong_key", ""), timeout=10)
    assert bad.status_code == 401 and "error" in bad.json() and "api_wrong_key" not in bad.text
    assert requests.get(url, auth=(KEY, "secret"), timeout=10).status_code == 401
    me = api("GET", "/me/").json()
    assert me["id"].startswith("user_") and me["organization_id"].startswith("orga_")


def test_paging_and_caps(sandbox, api):
    leads = walk(api, "/lead/", 7)
    assert len(leads) == len({l["id"] for l in leads}) == len(sandbox.app.dump("lead"))
    assert api("GET", "/lead/", params={"_limit": 201}).status_code == 400
    resp = api("GET", "/lead/", params={"_skip": 250_001})
    assert resp.status_code == 400
    assert ("The skip you set is larger than the maximum skip for this resource (max_skip = 250000). "
            "Please refine your search query.") in resp.json()["errors"]
    with RunningSandbox(CloseSandbox(n_leads=5, max_skip=3, max_limit=2)) as small:
        get = lambda **p: requests.get(f"{small.url}/api/v1/contact/", params=p, auth=(KEY, ""), timeout=10)  # noqa: E731
        assert get(_skip=3, _limit=2).status_code == 200
        assert "max_skip = 3" in get(_skip=4).json()["errors"][0]
        assert get(_limit=3).status_code == 400


def test_fields_and_custom_keys(api):
    data = api("GET", "/lead/", params={"_fields": f"id,status_label,{ACCOUNT}", "_limit": 200}).json()["data"]
    assert all(set(l) <= {"id", "status_label", ACCOUNT} for l in data)
    synced = [l for l in data if l["status_label"] in ("Customer", "Trial")]
    assert synced and all(ACCOUNT in l for l in synced)
    assert len({l[ACCOUNT] for l in data if ACCOUNT in l}) == sum(ACCOUNT in l for l in data)  # unique ids
    full = api("GET", "/lead/", params={"_fields": "id,custom"}).json()["data"]
    assert any(ACCOUNT in l for l in full) and all(k == "id" or k.startswith("custom.cf_") for l in full for k in l)
    lead = api("GET", f"/lead/{data[0]['id']}/").json()
    assert {"contacts", "opportunities", "tasks", "html_url", "status_id"} <= set(lead)
    assert all(not t["is_complete"] for t in lead["tasks"])
    assert api("GET", "/lead/lead_nope/").status_code == 404


def test_hierarchy_has_three_levels(sandbox):
    by_account = {l[ACCOUNT]: l for l in sandbox.app.dump("lead") if ACCOUNT in l}
    depth = lambda l: 1 + (depth(by_account[l[PARENT]]) if PARENT in l else 0)  # noqa: E731
    assert max(depth(l) for l in by_account.values()) >= 3
    assert all(by_account[l[PARENT]]["status_label"] in ("Customer", "Trial") for l in by_account.values() if PARENT in l)


def test_opportunity_incremental_filter_and_order(api):
    all_opps = walk(api, "/opportunity/", 250)
    stamps = sorted(o["date_updated"] for o in all_opps)
    assert len(stamps) != len(set(stamps)), "the dataset should contain date_updated ties"
    cut = stamps[len(stamps) // 2]
    got = walk(api, "/opportunity/", 5, date_updated__gte=cut, _order_by="date_updated")
    assert [o["date_updated"] for o in got] == [s for s in stamps if s >= cut]
    desc = api("GET", "/opportunity/", params={"date_updated__gt": cut, "_order_by": "-date_updated"}).json()["data"]
    assert [o["date_updated"] for o in desc] == sorted((s for s in stamps if s > cut), reverse=True)
    assert all(isinstance(o["value"], int) and o["value_formatted"].startswith("$") for o in all_opps)
    won = api("GET", "/opportunity/", params={"status_type": "won"}).json()["data"]
    assert won and all(o["date_won"] and o["status_type"] == "won" for o in won)


def test_lead_query_param(api):
    stamps = sorted(l["date_updated"] for l in walk(api, "/lead/", 200))
    cut = stamps[10]
    got = api("GET", "/lead/", params={"query": f'date_updated>="{cut}" sort:date_updated'}).json()["data"]
    assert [l["date_updated"] for l in got] == [s for s in stamps if s >= cut]
    assert api("GET", "/lead/", params={"query": "industry:banking"}).status_code == 400


def test_search_walk_with_cursor(sandbox, api):
    leads = sandbox.app.dump("lead")
    cut = sorted(l["date_updated"] for l in leads)[8]
    moment = parse_dt(cut).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    body = {
        "query": {"type": "and", "queries": [
            {"type": "object_type", "object_type": "lead"},
            {"type": "field_condition",
             "field": {"type": "regular_field", "object_type": "lead", "field_name": "date_updated"},
             "condition": {"type": "moment_range", "on_or_after": {"type": "fixed_utc", "value": moment}}}]},
        "sort": [{"direction": "asc", "field": {"type": "regular_field", "object_type": "lead", "field_name": "date_updated"}}],
        "_fields": {"lead": ["id", "date_updated", "custom"]}, "_limit": 4, "include_counts": True}
    hits, cursor = [], None
    while True:
        resp = api("POST", "/data/search/", json={**body, "cursor": cursor} if cursor else body).json()
        hits += resp["data"]
        cursor = resp["cursor"]
        if cursor is None:
            break
        stale = api("POST", "/data/search/", json={**body, "_limit": 5, "cursor": cursor})
        assert stale.status_code == 400 and "cursor" in stale.json()["field-errors"]
    expected = sorted((l for l in leads if parse_dt(l["date_updated"]) >= parse_dt(moment)), key=lambda l: l["date_updated"])
    assert [h["id"] for h in hits] == [l["id"] for l in expected]
    assert resp["count"]["total"] == len(expected)
    assert all(h["__object_type"] == "lead" for h in hits)
    bare = api("POST", "/data/search/", json={"query": {"type": "object_type", "object_type": "contact"}, "_limit": 1}).json()
    assert set(bare["data"][0]) == {"__object_type", "id"}
    assert api("POST", "/data/search/", json={**body, "_limit": 201}).status_code == 400
    negated = {"query": {"type": "and", "queries": [body["query"], {**body["query"]["queries"][1], "negate": True}]},
               "include_counts": True, "results_limit": 0}
    assert api("POST", "/data/search/", json=negated).json()["count"]["total"] == 0


def test_search_cursor_walk_cap(sandbox, api):
    sandbox.app.search_max_walk = 6
    try:
        body = {"query": {"type": "object_type", "object_type": "contact"}, "_limit": 3}
        cursor = api("POST", "/data/search/", json=body).json()["cursor"]
        cursor = api("POST", "/data/search/", json={**body, "cursor": cursor}).json()["cursor"]
        resp = api("POST", "/data/search/", json={**body, "cursor": cursor})
        assert resp.status_code == 400 and "cursor" in resp.json()["field-errors"]
    finally:
        del sandbox.app.search_max_walk


def test_put_custom_field_and_events(api):
    opp = api("GET", "/opportunity/", params={"_limit": 1}).json()["data"][0]
    lead_before = api("GET", f"/lead/{opp['lead_id']}/", params={"_fields": "date_updated"}).json()["date_updated"]
    url_key = f"custom.{CUSTOM_FIELD_IDS['end_date']}"
    updated = api("PUT", f"/opportunity/{opp['id']}/", json={url_key: "2027-03-31T00:00:00Z"}).json()
    assert updated[url_key] == "2027-03-31" and updated["date_updated"] > opp["date_updated"]
    assert api("GET", f"/lead/{opp['lead_id']}/").json()["date_updated"] > lead_before
    cleared = api("PUT", f"/opportunity/{opp['id']}/", json={url_key: None}).json()
    assert url_key not in cleared
    bad = api("PUT", f"/opportunity/{opp['id']}/", json={"custom.cf_doesnotexist": 1, "status_id": "stat_x"})
    assert bad.status_code == 400 and set(bad.json()["field-errors"]) == {"custom.cf_doesnotexist", "status_id"}
    events = api("GET", "/event/", params={"object_type": "opportunity", "action": "updated"}).json()["data"]
    assert events[0]["object_id"] == opp["id"] and url_key in events[1]["changed_fields"]
    assert "+" not in events[0]["date_updated"]  # event stamps carry no offset


def test_tasks_update_rules_and_completion(api):
    open_task = api("GET", "/task/", params={"is_complete": "false", "_limit": 1}).json()["data"][0]
    assert open_task["_type"] == "lead" and open_task["view"] in ("inbox", "future")
    assert api("PUT", f"/task/{open_task['id']}/", json={"lead_id": open_task["lead_id"]}).status_code == 400
    done = api("PUT", f"/task/{open_task['id']}/", json={"is_complete": True}).json()
    assert done["is_complete"] and done["view"] == "archive"
    acts = api("GET", "/activity/task_completed/", params={"lead_id": open_task["lead_id"]}).json()["data"]
    assert any(a["task_id"] == open_task["id"] and a["_type"] == "TaskCompleted" for a in acts)


def test_control_delete_lead_emits_cascade_events(sandbox, api):
    control = SandboxControl(sandbox.url)
    lead = next(l for l in sandbox.app.dump("lead") if l["contacts"] and l["opportunities"])
    tasks = api("GET", "/task/", params={"lead_id": lead["id"]}).json()["data"]
    assert control.mutate("delete", "lead", id=lead["id"]) == {}
    assert api("GET", f"/lead/{lead['id']}/").status_code == 404
    events = api("GET", "/event/", params={"lead_id": lead["id"], "action": "deleted"}).json()["data"]
    deleted = {(e["object_type"], e["object_id"]) for e in events}
    expected = {("lead", lead["id"])} | {("contact", c["id"]) for c in lead["contacts"]}
    expected |= {("opportunity", o["id"]) for o in lead["opportunities"]} | {("task.lead", t["id"]) for t in tasks}
    assert expected <= deleted
    with pytest.raises(requests.HTTPError):
        control.mutate("update", "lead", id=lead["id"], data={"name": "x"})


def test_event_cursor_pages(sandbox, api):
    control = SandboxControl(sandbox.url)
    lead = sandbox.app.dump("lead")[0]
    for _ in range(3):
        control.mutate("touch", "lead", id=lead["id"])
    seen, cursor = [], None
    while True:
        body = api("GET", "/event/", params={"_limit": 2, **({"_cursor": cursor} if cursor else {})}).json()
        seen += body["data"]
        cursor = body["cursor_next"]
        if not cursor:
            break
    assert [e["id"] for e in seen] == [e["id"] for e in sandbox.app.dump("event")]
    assert api("GET", "/event/", params={"_limit": 51}).status_code == 400


def test_rate_limit(sandbox, api):
    control = SandboxControl(sandbox.url)
    control.rate_limit(3, 60)
    try:
        answers = [api("GET", "/user/") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert answers[0].headers["RateLimit"].startswith("limit=3, remaining=2, reset=")
        limited = answers[-1]
        assert limited.headers["RateLimit"].startswith("limit=3, remaining=0, reset=")
        assert int(limited.headers["Retry-After"]) >= 1 and limited.json()["error"]["rate_reset"] >= 1
    finally:
        control.rate_limit(None)


def test_determinism():
    a, b = CloseSandbox(seed=7, n_leads=40), CloseSandbox(seed=7, n_leads=40)
    for kind in ("lead", "opportunity", "task", "task_completed", "user"):
        assert json.dumps(a.dump(kind)) == json.dumps(b.dump(kind))
    assert json.dumps(a.dump("lead")) != json.dumps(CloseSandbox(seed=8, n_leads=40).dump("lead"))
