"""Teamwork Desk tickets matched to contacts by Customer Email, end to end: the Teamwork and
Close fakes over real HTTP -> connectors -> engine -> Postgres -> `cs.tickets`, through the real
`routine_sync` job."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from cz_pipeline.sandbox.teamwork_desk import UNKNOWN_EMAILS
from cz_pipeline.model.tickets import WHY_SQL
from cz_pipeline_tests.conftest import CF, rows, scalar

from cz_pipeline_tests.helpdesk.desk_helpers import synced_contacts, unsynced_contacts

TICKETS_API = "GET /desk/api/v2/tickets.json"


def norm(email: str | None) -> str | None:
    return email.strip().lower() if email and email.strip() else None


def cs_tickets(engine, tenant: str) -> dict[str, dict[str, Any]]:
    return {r["ticket_id"]: r for r in rows(engine, "SELECT * FROM cs.tickets WHERE tenant_id = :t", t=tenant)}


def expected_matches(engine, tenant: str, desk_control) -> dict[str, tuple[str, str | None, str | None]]:
    """Ticket id -> (status, contact, account), computed in Python from the fake's tickets and cs.contacts."""
    by_email = defaultdict(list)
    for c in rows(engine, "SELECT contact_external_id, account_external_id, email FROM cs.contacts WHERE tenant_id = :t",
                  t=tenant):
        if norm(c["email"]):
            by_email[norm(c["email"])].append(c)
    out = {}
    for t in desk_control.state("ticket"):
        if t["state"] == "deleted":
            continue
        found = by_email.get(norm(t["customer_email"]), [])
        if len(found) == 1:
            out[str(t["id"])] = ("matched", found[0]["contact_external_id"], found[0]["account_external_id"])
        else:
            out[str(t["id"])] = ("ambiguous" if found else "no_contact", None, None)
    return out


def lead_account(close_app, lead_id: str) -> str:
    return next(lead for lead in close_app.dump("lead") if lead["id"] == lead_id)[CF["account_id"]]


def other_synced_lead(close_app, not_lead: str) -> str:
    return next(c["lead_id"] for c in synced_contacts(close_app) if c["lead_id"] != not_lead)


def tickets_by_email(desk_control, email: str) -> list[dict[str, Any]]:
    return [t for t in desk_control.state("ticket") if norm(t["customer_email"]) == norm(email) and t["state"] != "deleted"]


def test_each_customer_email_case_ends_in_the_right_match_status_and_association(
        helpdesk_tenant, tenant_id, engine, close_app, close_control, desk_control, desk_server, desk_emails):
    runner = helpdesk_tenant(contact_external_id="id")  # contacts keyed by CRM id: two may share an email
    shared = synced_contacts(close_app)[1]  # served "as given" by the fake
    shared_email = shared["emails"][0]["email"]
    dup = close_control.mutate("create", "contact", data={
        "name": "Second Holder", "lead_id": other_synced_lead(close_app, shared["lead_id"]),
        "emails": [{"type": "office", "email": shared_email.upper()}]})

    runner.run("routine_sync", tenant_id)

    got = cs_tickets(engine, tenant_id)
    expected = expected_matches(engine, tenant_id, desk_control)
    assert {tid: (r["match_status"], r["contact_external_id"], r["account_external_id"])
            for tid, r in got.items()} == expected

    # one contact: matched to it and to its account
    one = synced_contacts(close_app)[0]
    for t in tickets_by_email(desk_control, one["emails"][0]["email"]):
        row = got[str(t["id"])]
        assert (row["match_status"], row["contact_external_id"], row["account_external_id"]) == (
            "matched", one["id"], lead_account(close_app, one["lead_id"]))
    # differs only in case / whitespace: still matched (the fake upper-cases one address, pads another)
    variants = [r for r in got.values() if r["match_status"] == "matched"
                and r["customer_email"] not in {c["email"] for c in rows(
                    engine, "SELECT email FROM cs.contacts WHERE tenant_id = :t", t=tenant_id)}]
    assert variants, "no ticket whose address differs from its contact's only in case/whitespace"
    raw_variants = {t["customer_email"] for t in desk_control.state("ticket")} - set(desk_emails)
    assert any(e != e.strip() for e in raw_variants) and any(e.strip() != e.strip().lower() for e in raw_variants)
    # no contact: unknown addresses and contacts of leads that are not synced; unassociated, kept
    for email in [UNKNOWN_EMAILS[0], unsynced_contacts(close_app)[0]["emails"][0]["email"]]:
        tickets = tickets_by_email(desk_control, email)
        assert tickets and all(got[str(t["id"])]["match_status"] == "no_contact"
                               and got[str(t["id"])]["account_external_id"] is None for t in tickets)
    # two contacts with that email: ambiguous, unassociated, kept
    tickets = tickets_by_email(desk_control, shared_email)
    assert tickets and all((got[str(t["id"])]["match_status"], got[str(t["id"])]["contact_external_id"],
                            got[str(t["id"])]["account_external_id"]) == ("ambiguous", None, None) for t in tickets)
    assert dup["id"] in {c["contact_external_id"] for c in rows(
        engine, "SELECT contact_external_id FROM cs.contacts WHERE tenant_id = :t", t=tenant_id)}

    # every live ticket is there with its link; soft-deleted ones are only in raw, with their state
    desk = {str(t["id"]): t for t in desk_control.state("ticket")}
    live = {tid for tid, t in desk.items() if t["state"] != "deleted"}
    assert set(got) == live and len(desk) - len(live) == 2
    assert all(r["ticket_url"] == f"{desk_server.url}/desk/tickets/{tid}" for tid, r in got.items())
    deleted = rows(engine, "SELECT payload->>'state' AS state, payload->>'deletedAt' AS deleted_at FROM raw.tickets "
                           "WHERE tenant_id = :t AND source_id = ANY(:ids)", t=tenant_id, ids=list(set(desk) - live))
    assert len(deleted) == 2 and all(d["state"] == "deleted" and d["deleted_at"] for d in deleted)
    # the system ticket's 0001-01-01 creation time is unknown, not year 1
    system = next(tid for tid, t in desk.items() if t["createdAt"].startswith("0001-01-01"))
    assert got[system]["created_at"] is None and got[system]["updated_at"] is not None
    assert {r["status"] for r in got.values()} <= {"Active", "Waiting on customer", "On-hold", "Solved", "Closed", "Spam"}


def test_a_routine_sync_rematches_tickets_when_contacts_change_without_rereading_them(
        helpdesk_tenant, tenant_id, engine, close_app, close_control, desk_control):
    runner = helpdesk_tenant(contact_external_id="id")
    runner.run("routine_sync", tenant_id)
    before = cs_tickets(engine, tenant_id)
    newest = scalar(engine, "SELECT max(source_updated_at) FROM raw.tickets WHERE tenant_id = :t", t=tenant_id)
    updated_at = {r["source_id"]: r["source_updated_at"] for r in rows(
        engine, "SELECT source_id, source_updated_at FROM raw.tickets WHERE tenant_id = :t", t=tenant_id)}

    def old_tickets(email: str) -> list[str]:
        ids = [str(t["id"]) for t in tickets_by_email(desk_control, email)]
        return ids if ids and all(updated_at[i] < newest for i in ids) else []

    unknown = next(e for e in UNKNOWN_EMAILS if old_tickets(e))
    unmatched = old_tickets(unknown)
    assert {before[i]["match_status"] for i in unmatched} == {"no_contact"}
    holder = next(c for c in synced_contacts(close_app) if old_tickets(c["emails"][0]["email"]))
    matched = old_tickets(holder["emails"][0]["email"])
    assert {before[i]["contact_external_id"] for i in matched} == {holder["id"]}

    lead = other_synced_lead(close_app, holder["lead_id"])
    new_contact = close_control.mutate("create", "contact", data={
        "name": "New Contact", "lead_id": lead, "emails": [{"type": "office", "email": unknown.upper()}]})
    second = close_control.mutate("create", "contact", data={
        "name": "Second Holder", "lead_id": lead, "emails": [{"type": "office", "email": holder["emails"][0]["email"]}]})
    desk_control.reset_stats()
    runner.run("routine_sync", tenant_id)

    after = cs_tickets(engine, tenant_id)
    for i in unmatched:  # a new contact with an unmatched ticket's email matches it
        assert (after[i]["match_status"], after[i]["contact_external_id"], after[i]["account_external_id"]) == (
            "matched", new_contact["id"], lead_account(close_app, lead))
    for i in matched:  # a second contact with a matched ticket's email makes it ambiguous
        assert (after[i]["match_status"], after[i]["contact_external_id"], after[i]["account_external_id"]) == (
            "ambiguous", None, None)
    assert {i: r["match_status"] for i, r in after.items() if i not in unmatched + matched} == \
        {i: r["match_status"] for i, r in before.items() if i not in unmatched + matched}

    # ... without re-reading those tickets: the run read the helpdesk incrementally from the newest ticket
    run = rows(engine, "SELECT mode, window_start, records_read, api_calls FROM sync.runs "
                       "WHERE tenant_id = :t AND entity = 'tickets' ORDER BY id DESC LIMIT 1", t=tenant_id)[0]
    assert run["mode"] == "routine" and run["window_start"] == newest
    assert all(updated_at[i] < run["window_start"] for i in unmatched + matched)
    deleted = sum(1 for t in desk_control.state("ticket") if t["state"] == "deleted")  # re-read every sync
    assert run["records_read"] < len(before) // 10 + deleted
    # one page of the newest tickets, one of the deleted ones (+ the changed-customers probe)
    assert desk_control.stats()[TICKETS_API] == 2

    log = rows(engine, WHY_SQL, tenant=tenant_id, ticket=matched[0])
    assert log[0]["match_status"] == "ambiguous" and log[0]["previous_status"] == "matched"
    assert log[0]["previous_account_external_id"] == lead_account(close_app, holder["lead_id"])
    assert log[0]["reason"].startswith(f"2 contacts share customer email {norm(holder['emails'][0]['email'])}: ")
    assert holder["id"] in log[0]["reason"] and second["id"] in log[0]["reason"]
    assert [h["match_status"] for h in log] == ["ambiguous", "matched"]


def test_the_audit_trail_answers_why_a_ticket_is_not_on_the_account(
        helpdesk_tenant, tenant_id, engine, close_app, close_control, desk_control):
    # contacts keyed by email: two CRM contacts sharing one are quarantined (tolerated by this
    # tenant's quality threshold, so the sync goes on)
    runner = helpdesk_tenant(quality={"thresholds": {"contact_external_id_unique": 0.5}})
    contacts = synced_contacts(close_app)
    shared, kept = contacts[0], contacts[2]
    close_control.mutate("create", "contact", data={
        "name": "Second Holder", "lead_id": other_synced_lead(close_app, shared["lead_id"]),
        "emails": [{"type": "office", "email": shared["emails"][0]["email"]}]})
    runner.run("routine_sync", tenant_id)

    def why(ticket_id: str) -> list[dict[str, Any]]:
        return rows(engine, WHY_SQL, tenant=tenant_id, ticket=ticket_id)

    quarantined = tickets_by_email(desk_control, shared["emails"][0]["email"])[0]
    history = why(str(quarantined["id"]))
    # Both CRM contacts still count: the address is ambiguous, and the reason says they are quarantined.
    assert len(history) == 1 and history[0]["match_status"] == "ambiguous"
    assert history[0]["reason"] == (f"2 contacts share customer email {norm(shared['emails'][0]['email'])}: "
                                    "quarantined as duplicate ContactExternalIDs; the ticket stays unassociated")

    unknown = tickets_by_email(desk_control, UNKNOWN_EMAILS[1])[0]
    assert why(str(unknown["id"]))[0]["reason"] == f"no contact with customer email {UNKNOWN_EMAILS[1]}"

    ticket = tickets_by_email(desk_control, kept["emails"][0]["email"])[0]
    account = lead_account(close_app, kept["lead_id"])
    contact_id = kept["emails"][0]["email"].lower()
    assert why(str(ticket["id"]))[0]["reason"] == (
        f"matched contact {contact_id} (account {account}) by customer email {contact_id}")

    # the ticket is deleted in Teamwork Desk: it leaves cs.tickets, and the trail says why
    desk_control.mutate("delete", "ticket", id=ticket["id"])
    runner.run("routine_sync", tenant_id)
    assert scalar(engine, "SELECT count(*) FROM cs.tickets WHERE tenant_id = :t AND ticket_id = :i",
                  t=tenant_id, i=str(ticket["id"])) == 0
    history = why(str(ticket["id"]))
    assert [h["match_status"] for h in history] == ["removed", "matched"]
    assert history[0]["reason"].startswith("ticket deleted in Teamwork Desk at ")
    assert history[0]["previous_account_external_id"] == account
    # unchanged tickets got no new audit rows
    assert len(why(str(unknown["id"]))) == 1


def test_a_customer_email_changed_in_the_helpdesk_rematches_that_customers_tickets(
        helpdesk_tenant, tenant_id, engine, close_app, desk_control):
    runner = helpdesk_tenant()
    runner.run("routine_sync", tenant_id)
    ticket = tickets_by_email(desk_control, UNKNOWN_EMAILS[0])[0]
    target = synced_contacts(close_app)[3]
    assert cs_tickets(engine, tenant_id)[str(ticket["id"])]["match_status"] == "no_contact"

    # Teamwork does not bump the tickets' updatedAt when their customer's address changes
    desk_control.mutate("update", "customer", id=ticket["customer"]["id"], data={"email": target["emails"][0]["email"]})
    runner.run("routine_sync", tenant_id)

    row = cs_tickets(engine, tenant_id)[str(ticket["id"])]
    assert (row["match_status"], row["contact_external_id"]) == ("matched", target["emails"][0]["email"].lower())
    assert row["account_external_id"] == lead_account(close_app, target["lead_id"])


def test_a_tenant_without_a_helpdesk_syncs_without_error(close_tenant, tenant_id, engine):
    result = close_tenant.run("routine_sync", tenant_id)
    assert result.success
    events = {tuple(e.asset_key.path): e.materialization.metadata for e in result.get_asset_materialization_events()}
    assert "no helpdesk" in events[("helpdesk", "tickets")]["skipped"].value
    assert "no helpdesk" in events[("cs", "tickets")]["skipped"].value
    assert scalar(engine, "SELECT count(*) FROM cs.tickets WHERE tenant_id = :t", t=tenant_id) == 0
