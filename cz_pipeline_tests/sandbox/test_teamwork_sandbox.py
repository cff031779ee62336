"""The Teamwork Desk fake over real HTTP: auth, paging, filters, includes, writes, rate limit."""

from __future__ import annotations

import json
import time

import pytest
import requests

from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.teamwork_desk import TeamworkDeskSandbox

KEY = "tw_sandbox_key"
EMAILS = ["  Jane.Doe@Acme.example ", "bob@globex.example", "carol@initech.example", "dave@hooli.example"]


def norm(email: str) -> str:
    return email.strip().lower()


def _serve():
    app = TeamworkDeskSandbox(api_key=KEY, customer_emails=EMAILS, rate_limit_per_minute=None)
    with RunningSandbox(app) as running:
        yield running


# read-only tests share one server (each shutdown costs ~0.5 s); writing tests get their own
desk = pytest.fixture(scope="module")(_serve)
fresh_desk = pytest.fixture(_serve)


def get(running, path, key=KEY, **params):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.get(f"{running.url}/desk/api/v2{path}", params=params, headers=headers, timeout=10)


def live_tickets(running):
    return [t for t in SandboxControl(running.url).state("ticket") if t["state"] != "deleted"]


def test_auth(desk):
    assert get(desk, "/tickets.json", key=None).status_code == 401
    bad = get(desk, "/tickets.json", key="wrong")
    assert bad.status_code == 401 and bad.json()["message"]
    assert get(desk, "/tickets.json").status_code == 200
    assert get(desk, "/nope.json").status_code == 404


def test_paging_both_blocks_and_clamp(desk):
    expected = {t["id"] for t in live_tickets(desk)}
    assert len(expected) == 48  # 50 seeded, 2 soft-deleted hidden by default
    seen, page = [], 1
    while True:
        body = get(desk, "/tickets.json", page=page, pageSize=20).json()
        meta, pagination = body["meta"]["page"], body["pagination"]
        assert meta["pageSize"] == pagination["pageSize"] == 20
        assert meta["count"] == pagination["records"] == 48 and meta["pages"] == pagination["pages"] == 3
        assert meta["pageOffset"] == (page - 1) * 20 and pagination["page"] == page
        assert meta["hasMore"] == pagination["hasMorePages"]
        seen += [t["id"] for t in body["tickets"]]
        if not meta["hasMore"]:
            break
        page += 1
    assert page == 3 and len(seen) == len(set(seen)) and set(seen) == expected

    clamped = get(desk, "/tickets.json", pageSize=500).json()
    assert clamped["meta"]["page"]["pageSize"] == clamped["pagination"]["pageSize"] == 100
    assert len(clamped["tickets"]) == 48 and clamped["pagination"]["hasMorePages"] is False


def test_ticket_shape(desk):
    ticket = get(desk, "/tickets.json", pageSize=1).json()["tickets"][0]
    for field in ("id", "subject", "previewText", "messageCount", "originalRecipient", "customer", "agent",
                  "inbox", "status", "priority", "source", "type", "tags", "createdAt", "updatedAt",
                  "createdBy", "updatedBy", "state"):
        assert field in ticket
    assert ticket["customer"]["type"] == "customers" and ticket["status"]["type"] == "ticketstatuses"
    assert ticket["updatedAt"].endswith("Z") and len(ticket["updatedAt"]) == 20
    created = sorted(t["createdAt"] for t in live_tickets(desk))
    assert created[0] == "0001-01-01T00:00:00Z"  # the system ticket (gotcha 4)


def test_updated_filter_and_order(desk):
    tickets = live_tickets(desk)
    cutoff = sorted(t["updatedAt"] for t in tickets)[len(tickets) // 2]
    flt = json.dumps({"updatedAt": {"$gte": cutoff}})
    body = get(desk, "/tickets.json", filter=flt, orderBy="updatedAt", orderMode="asc", pageSize=100).json()
    stamps = [t["updatedAt"] for t in body["tickets"]]
    assert stamps == sorted(stamps) and min(stamps) == cutoff
    assert len(stamps) == sum(t["updatedAt"] >= cutoff for t in tickets)
    desc = get(desk, "/tickets.json", filter=flt, orderBy="updatedAt", orderMode="desc", pageSize=100).json()
    assert [t["updatedAt"] for t in desc["tickets"]] == stamps[::-1]

    combined = json.dumps({"$and": [{"updatedAt": {"$lt": cutoff}}, {"status": {"$in": [5, 6]}}]})
    rows = get(desk, "/tickets.json", filter=combined, pageSize=100).json()["tickets"]
    assert rows and all(t["updatedAt"] < cutoff and t["status"]["id"] in (5, 6) for t in rows)
    assert [t["id"] for t in rows] == sorted(t["id"] for t in rows)  # default order: id asc

    deleted = get(desk, "/tickets.json", filter=json.dumps({"state": {"$eq": "deleted"}})).json()["tickets"]
    assert len(deleted) == 2 and all(t["deletedAt"] for t in deleted)

    assert get(desk, "/tickets.json", filter='{"nosuch":{"$eq":1}}').status_code == 400
    assert get(desk, "/tickets.json", filter="not json").status_code == 400
    assert get(desk, "/tickets.json", orderBy="subject").status_code == 400


def test_includes_give_the_customer_email(desk):
    body = get(desk, "/tickets.json", pageSize=100, includes="customers,contacts").json()
    customers = {c["id"]: c for c in body["included"]["customers"]}
    contacts = {c["id"]: c for c in body["included"]["contacts"]}
    truth = {t["id"]: t["customer_email"] for t in live_tickets(desk)}

    def email_of(ticket):
        customer = customers[ticket["customer"]["id"]]
        if customer["email"].strip():
            return customer["email"]
        return next(contacts[r["id"]]["value"] for r in customer["contacts"] if contacts[r["id"]]["isMain"])

    assert {t["id"]: email_of(t) for t in body["tickets"]} == truth
    assert any(c["email"] == "" for c in customers.values())  # address only in the contact (gotcha 3)
    assert any(not c["isMain"] for c in contacts.values())
    stored = {c["effective_email"] for c in SandboxControl(desk.url).state("customer")}
    assert {norm(e) for e in EMAILS} <= {norm(e) for e in stored}
    assert "JANE.DOE@ACME.EXAMPLE" in stored and "someone@unknown.example" in stored
    assert "included" in get(desk, "/tickets.json").json()  # present even when nothing was asked for


def test_single_ticket_and_customers(desk):
    tid = live_tickets(desk)[3]["id"]
    body = get(desk, f"/tickets/{tid}.json", includes="customers").json()
    assert body["ticket"]["id"] == tid and body["included"]["customers"][0]["id"] == body["ticket"]["customer"]["id"]
    assert get(desk, "/tickets/1.json").status_code == 404

    flt = json.dumps({"contacts.value": {"$eq": "bob@globex.example"}})
    found = get(desk, "/customers.json", filter=flt, includes="contacts").json()
    assert len(found["customers"]) == 1 and found["customers"][0]["email"] == ""
    cid = found["customers"][0]["id"]
    assert get(desk, f"/customers/{cid}.json").json()["customer"]["id"] == cid

    statuses = get(desk, "/ticketstatuses.json").json()["ticketstatuses"]
    assert {s["code"]: s["id"] for s in statuses} == {"active": 1, "waiting": 3, "on-hold": 4, "solved": 5,
                                                      "closed": 6, "spam": 7}


def test_patch_ticket_bumps_updated_at(fresh_desk):
    desk = fresh_desk
    ticket = live_tickets(desk)[0]
    url = f"{desk.url}/desk/api/v2/tickets/{ticket['id']}.json"
    headers = {"Authorization": f"Bearer {KEY}"}
    body = {"ticket": {"status": {"id": 5, "type": "ticketstatuses"}, "priority": "high"}}
    resp = requests.patch(url, json=body, headers=headers, timeout=10)
    assert resp.status_code == 200
    patched = resp.json()["ticket"]
    assert patched["status"]["id"] == 5 and patched["priority"]["id"] == 3
    assert patched["updatedAt"] > ticket["updatedAt"]
    bad = requests.patch(url, json={"ticket": {"status": {"id": 99}}}, headers=headers, timeout=10)
    assert bad.status_code == 400


def test_control_mutations(fresh_desk):
    desk = fresh_desk
    control = SandboxControl(desk.url)
    ticket = live_tickets(desk)[5]
    before = {t["id"] for t in get(desk, "/tickets.json", pageSize=100).json()["tickets"]}
    updated = control.mutate("update", "ticket", id=ticket["id"], data={"subject": "Changed"})
    assert updated["subject"] == "Changed" and updated["updatedAt"] > ticket["updatedAt"]
    since = json.dumps({"updatedAt": {"$gte": updated["updatedAt"]}})
    assert [t["id"] for t in get(desk, "/tickets.json", filter=since).json()["tickets"]] == [ticket["id"]]

    created = control.mutate("create", "ticket", data={"customer_email": " bob@GLOBEX.example", "subject": "Hi"})
    assert norm(created["customer_email"]) == "bob@globex.example"  # reused the existing customer
    fresh = control.mutate("create", "ticket", data={"customer_email": "new@person.example", "subject": "Yo"})
    assert fresh["customer_email"] == "new@person.example" and fresh["customer"]["id"] != created["customer"]["id"]

    control.mutate("delete", "ticket", id=fresh["id"])
    ids = {t["id"] for t in get(desk, "/tickets.json", pageSize=100).json()["tickets"]}
    assert ids == before | {created["id"]}  # the same query again: no stale cached answer
    gone = next(t for t in control.state("ticket") if t["id"] == fresh["id"])
    assert gone["state"] == "deleted" and gone["deletedAt"] and gone["updatedAt"] >= fresh["updatedAt"]

    customer = control.mutate("update", "customer", id=fresh["customer"]["id"], data={"email": "moved@person.example"})
    assert customer["effective_email"] == "moved@person.example"
    with pytest.raises(requests.HTTPError):
        control.mutate("update", "ticket", id=1, data={"subject": "x"})


def test_rate_limit_headers_and_429():
    app = TeamworkDeskSandbox(api_key=KEY, n_tickets=5, rate_limit_per_minute=3)
    with RunningSandbox(app) as running:
        answers = [get(running, "/tickets.json") for _ in range(4)]
        assert [r.status_code for r in answers] == [200, 200, 200, 429]
        assert [r.headers["X-Rate-Limit-Remaining"] for r in answers] == ["2", "1", "0", "0"]
        assert all(r.headers["X-Rate-Limit-Limit"] == "3" for r in answers)
        reset = int(answers[-1].headers["X-Rate-Limit-Reset"])  # epoch second the window resets
        assert time.time() + 55 < reset <= time.time() + 61
        assert 1 <= int(answers[-1].headers["Retry-After"]) <= 60 and answers[-1].json()["message"]

        SandboxControl(running.url).rate_limit(2, 60)  # the control endpoint's limiter gets the same headers
        assert [get(running, "/tickets.json").status_code for _ in range(3)] == [200, 200, 429]


def test_deterministic_per_seed():
    def shape(app):
        return [(t["id"], t["subject"], t["customer_email"], t["status"]["id"]) for t in app.dump("ticket")]

    kwargs = {"customer_emails": EMAILS, "rate_limit_per_minute": None}
    assert shape(TeamworkDeskSandbox(seed=3, **kwargs)) == shape(TeamworkDeskSandbox(seed=3, **kwargs))
    assert shape(TeamworkDeskSandbox(seed=3, **kwargs)) != shape(TeamworkDeskSandbox(seed=4, **kwargs))
