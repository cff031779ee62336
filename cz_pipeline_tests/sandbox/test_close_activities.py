"""The Close fake's activity endpoints, event log entries for activity writes, organisation
memberships and opportunity statuses, over real HTTP."""

from __future__ import annotations

from collections import Counter

import pytest
import requests

from cz_pipeline.sandbox.close import CUSTOM_FIELD_IDS, ORG_ID, CloseSandbox, parse_dt
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox

KEY = "api_sandbox_key"
TYPED = {"call": "Call", "email": "Email", "sms": "SMS", "meeting": "Meeting", "note": "Note",
         "task_completed": "TaskCompleted", "status_change/lead": "LeadStatusChange",
         "status_change/opportunity": "OpportunityStatusChange"}


def _client(running: RunningSandbox):
    session = requests.Session()
    session.auth = (KEY, "")

    def call(method: str, path: str, **kwargs):
        return session.request(method, f"{running.url}/api/v1{path}", timeout=10, **kwargs)

    return call


@pytest.fixture(scope="module")
def shared():
    """Read-only tests share one sandbox."""
    with RunningSandbox(CloseSandbox(n_leads=30, n_activities=400, activity_max_skip=1000)) as running:
        yield running


@pytest.fixture
def fresh():
    """Tests that write get their own sandbox."""
    with RunningSandbox(CloseSandbox(n_leads=20, n_activities=150)) as running:
        yield running


def walk(api, path: str, limit: int = 100, **params) -> list[dict]:
    rows, skip = [], 0
    while True:
        resp = api("GET", path, params={**params, "_skip": skip, "_limit": limit})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        rows += body["data"]
        if not body["has_more"]:
            return rows
        skip += limit


def test_generic_list_holds_every_type_newest_first_and_typed_lists_only_theirs(shared):
    api = _client(shared)
    everything = walk(api, "/activity/", 100)
    assert len(everything) == len({a["id"] for a in everything}) == len(shared.app.dump("activity"))
    assert set(TYPED.values()) <= {a["_type"] for a in everything}
    stamps = [parse_dt(a["date_created"]) for a in everything]
    assert stamps == sorted(stamps, reverse=True)
    by_type = Counter(a["_type"] for a in everything)
    for path, typ in TYPED.items():
        typed = walk(api, f"/activity/{path}/", 50)
        assert {a["_type"] for a in typed} == {typ} and len(typed) == by_type[typ]
    calls = walk(api, "/activity/", 100, _type="Call")
    assert {a["_type"] for a in calls} == {"Call"} and len(calls) == by_type["Call"]


def test_lead_user_and_date_created_filters(shared):
    api = _client(shared)
    everything = walk(api, "/activity/")
    lead, user = everything[0]["lead_id"], everything[0]["user_id"]
    assert {a["lead_id"] for a in walk(api, "/activity/", lead_id=lead)} == {lead}
    mine = walk(api, "/activity/email/", user_id=user)
    assert mine and {a["user_id"] for a in mine} == {user} and all("user_name" in a for a in mine)
    cut = everything[len(everything) // 2]["date_created"]
    newer = walk(api, "/activity/", date_created__gt=cut)
    older = walk(api, "/activity/", date_created__lte=cut)
    assert all(parse_dt(a["date_created"]) > parse_dt(cut) for a in newer)
    assert all(parse_dt(a["date_created"]) <= parse_dt(cut) for a in older)
    assert sorted(a["id"] for a in newer + older) == sorted(a["id"] for a in everything)
    window = walk(api, "/activity/call/", date_created__gte="2025-01-01T00:00:00Z", date_created__lt="2025-07-01")
    assert window and all("2025-01-01" <= a["date_created"][:10] < "2025-07-01" for a in window)


def test_skip_cap_and_limit_cap_answer_400(shared):
    api = _client(shared)
    over = api("GET", "/activity/", params={"_skip": 1001, "_limit": 10})
    assert over.status_code == 400
    assert "larger than the maximum skip" in over.json()["errors"][0]
    assert api("GET", "/activity/email/", params={"_skip": 1000, "_limit": 10}).status_code == 200
    assert api("GET", "/lead/", params={"_skip": 1001}).status_code == 200  # the cap is the activities' own
    too_big = api("GET", "/activity/call/", params={"_limit": 101})
    assert too_big.status_code == 400 and "less than or equal to 100" in too_big.text


def test_emails_carry_direction_and_every_status(shared):
    emails = walk(_client(shared), "/activity/email/")
    assert {e["direction"] for e in emails} == {"incoming", "outgoing"}
    assert {e["status"] for e in emails if e["direction"] == "incoming"} == {"inbox"}
    assert {"sent", "draft", "scheduled", "bounced"} <= {e["status"] for e in emails if e["direction"] == "outgoing"}
    calls = walk(_client(shared), "/activity/call/")
    assert {c["direction"] for c in calls} == {"inbound", "outbound"} and all("duration" in c for c in calls)


def test_activities_cover_unsynced_leads_and_imported_history(shared):
    everything = walk(_client(shared), "/activity/")
    leads = {l["id"]: l for l in shared.app.dump("lead")}
    assert {a["lead_id"] for a in everything} == set(leads)
    no_filter = [l for l in leads.values() if l["status_label"] in ("Potential", "Bad Fit")
                 and f"custom.{CUSTOM_FIELD_IDS['account_id']}" not in l]
    assert no_filter and {l["id"] for l in no_filter} <= {a["lead_id"] for a in everything}
    imported = [a for a in everything if parse_dt(a["date_created"]) < parse_dt(leads[a["lead_id"]]["date_created"])
                and a["date_created"] < "2024"]
    assert len(imported) >= 10


def test_generation_is_deterministic_and_volume_does_not_move_other_data():
    a, b = CloseSandbox(n_leads=15, n_activities=80), CloseSandbox(n_leads=15, n_activities=80)
    assert a.dump("activity") == b.dump("activity") and len(a.dump("activity")) >= 80
    none = CloseSandbox(n_leads=15, n_activities=0)
    assert none.dump("lead") == a.dump("lead") and none.dump("opportunity") == a.dump("opportunity")
    assert {x["_type"] for x in none.dump("activity")} <= {"TaskCompleted"}


def test_deleted_activity_vanishes_from_lists_and_appears_in_the_event_log(fresh):
    api, control = _client(fresh), SandboxControl(fresh.url)
    call = walk(api, "/activity/call/")[3]
    lead_before = api("GET", f"/lead/{call['lead_id']}/").json()["date_updated"]
    control.mutate("delete", "activity", id=call["id"])
    assert call["id"] not in {a["id"] for a in walk(api, "/activity/")}
    assert call["id"] not in {a["id"] for a in walk(api, "/activity/call/", lead_id=call["lead_id"])}
    assert api("GET", f"/activity/call/{call['id']}/").status_code == 404
    events = api("GET", "/event/", params={"object_type": "activity.call", "action": "deleted"}).json()["data"]
    assert [e["object_id"] for e in events] == [call["id"]]
    assert events[0]["lead_id"] == call["lead_id"] and events[0]["previous_data"]["_type"] == "Call"
    assert parse_dt(api("GET", f"/lead/{call['lead_id']}/").json()["date_updated"]) > parse_dt(lead_before)


def test_api_delete_of_typed_activity_and_wrong_type_path(fresh):
    api = _client(fresh)
    email = walk(api, "/activity/email/")[0]
    assert api("GET", f"/activity/call/{email['id']}/").status_code == 404
    assert api("DELETE", f"/activity/email/{email['id']}/").json() == {}
    assert api("GET", f"/activity/email/{email['id']}/").status_code == 404
    done = walk(api, "/activity/task_completed/")[0]
    assert api("DELETE", f"/activity/task_completed/{done['id']}/").status_code == 200
    types = [e["object_type"] for e in api("GET", "/event/", params={"action": "deleted"}).json()["data"]]
    assert types == ["activity.task_completed", "activity.email"]


def test_event_log_pages_activity_deletions_newest_first_with_cursor(fresh):
    api, control = _client(fresh), SandboxControl(fresh.url)
    notes = walk(api, "/activity/note/")[:3]
    for note in notes:
        control.mutate("delete", "activity", id=note["id"])
    control.mutate("update", "lead", id=notes[0]["lead_id"], data={"description": "not an activity"})
    seen, cursor = [], None
    while True:
        params = {"object_type": "activity.note", "action": "deleted", "_limit": 1, **({"_cursor": cursor} if cursor else {})}
        body = api("GET", "/event/", params=params).json()
        seen += body["data"]
        cursor = body["cursor_next"]
        if not cursor:
            break
    assert [e["object_id"] for e in seen] == [n["id"] for n in reversed(notes)]


def test_added_call_is_listed_first_with_a_created_event(fresh):
    api, control = _client(fresh), SandboxControl(fresh.url)
    lead = fresh.app.dump("lead")[0]
    user = fresh.app.dump("user")[3]["id"]
    made = control.mutate("create", "call", data={"lead_id": lead["id"], "user_id": user, "direction": "outbound",
                                                  "duration": 95, "disposition": "answered"})
    assert made["_type"] == "Call" and made["id"].startswith("acti_") and made["user_id"] == user
    calls = api("GET", "/activity/call/", params={"lead_id": lead["id"]}).json()["data"]
    assert calls[0]["id"] == made["id"] and calls[0]["duration"] == 95
    assert api("GET", "/activity/", params={"_limit": 1}).json()["data"][0]["id"] == made["id"]
    created = api("GET", "/event/", params={"object_type": "activity.call", "action": "created"}).json()["data"]
    assert [e["object_id"] for e in created] == [made["id"]] and created[0]["data"]["duration"] == 95
    dated = control.mutate("create", "email", data={"lead_id": lead["id"], "direction": "incoming", "status": "inbox",
                                                    "date_created": "2026-01-02T03:04:05Z"})
    window = walk(api, "/activity/email/", date_created__gte="2026-01-02", date_created__lt="2026-01-03")
    assert dated["id"] in {e["id"] for e in window}
    with pytest.raises(requests.HTTPError):
        control.mutate("create", "call", data={"lead_id": "lead_missing"})


def test_lead_deletion_removes_its_activities_with_events(fresh):
    api, control = _client(fresh), SandboxControl(fresh.url)
    lead_id = walk(api, "/activity/call/")[0]["lead_id"]
    theirs = {a["id"] for a in walk(api, "/activity/", lead_id=lead_id)}
    control.mutate("delete", "lead", id=lead_id)
    assert not walk(api, "/activity/", lead_id=lead_id)
    deleted = {e["object_id"] for e in fresh.app.dump("event") if e["action"] == "deleted"}
    assert theirs <= deleted


def test_memberships_roles_and_inactive_members(fresh):
    api, control = _client(fresh), SandboxControl(fresh.url)
    org = api("GET", f"/organization/{ORG_ID}/").json()
    roles = Counter(m["role_id"] for m in org["memberships"])
    assert roles == {"admin": 2, "superuser": 1, "user": 1}
    assert len(org["inactive_memberships"]) == 1
    members = org["memberships"] + org["inactive_memberships"]
    assert {m["user_id"] for m in members} == {u["id"] for u in fresh.app.dump("user")}
    assert all(m["id"].startswith("memb_") and m["user_email"] and m["organization_id"] == ORG_ID for m in members)
    gone = org["inactive_memberships"][0]["user_id"]
    assert gone in {u["id"] for u in walk(api, "/user/")}  # a departed rep's user stays readable
    plain = next(m["user_id"] for m in org["memberships"] if m["role_id"] == "user")
    control.mutate("update", "membership", user_id=plain, role_id="restricteduser", active=False)
    org = api("GET", f"/organization/{ORG_ID}/", params={"_fields": "inactive_memberships"}).json()
    assert list(org) == ["inactive_memberships"]
    assert {m["user_id"]: m["role_id"] for m in org["inactive_memberships"]}[plain] == "restricteduser"
    with pytest.raises(requests.HTTPError):
        control.mutate("update", "membership", user_id=plain, role_id="owner")


def test_opportunity_statuses_include_a_custom_and_an_unused_status(shared):
    api = _client(shared)
    statuses = api("GET", "/status/opportunity/").json()["data"]
    labels = {s["label"]: s for s in statuses}
    assert {"Active", "Won", "Lost", "Verbal", "On Hold"} <= set(labels)
    used = Counter(o["status_label"] for o in walk(api, "/opportunity/", 250))
    assert used["On Hold"] == 0 and used["Verbal"] > 0
    assert labels["On Hold"]["type"] == "active" and labels["On Hold"]["pipeline_id"] == labels["Won"]["pipeline_id"]
