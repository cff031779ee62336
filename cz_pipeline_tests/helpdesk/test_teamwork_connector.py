"""The Teamwork Desk connector against the fake over real HTTP: rate-limit pacing, deep paging
while tickets change, the customer email, soft-deleted tickets; one `responses` stub for the
pagination-block edge case."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import timedelta

import pytest
import responses

from cz_pipeline.sources.teamwork_desk.connector import TeamworkDeskConnector, desk_timestamp
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.teamwork_desk import TeamworkDeskSandbox
from cz_pipeline.model.tickets import site_url, ticket_url
from cz_pipeline_tests.helpdesk.desk_helpers import DESK_KEY


@pytest.fixture
def big_desk() -> Iterator[RunningSandbox]:
    app = TeamworkDeskSandbox(api_key=DESK_KEY, n_tickets=850, rate_limit_per_minute=120)
    with RunningSandbox(app) as server:
        yield server


def connector(server: RunningSandbox) -> TeamworkDeskConnector:
    return TeamworkDeskConnector(f"{server.url}/desk/api/v2", DESK_KEY)


def read_all(conn: TeamworkDeskConnector, since=None) -> list:
    return [rec for page in conn.stream("tickets", since) for rec in page]


def test_the_connector_paces_itself_under_the_rate_limit_instead_of_collecting_429s(big_desk):
    control = SandboxControl(big_desk.url)
    # The real limit is 120 requests/minute; the same fixed window, scaled down to 4 per second,
    # so that 850 tickets (9 pages of 100) cross it twice.
    control.rate_limit(4, 1)
    records = read_all(connector(big_desk))

    stats = control.stats()
    assert stats.get("throttled", 0) == 0 and stats.get("status 429", 0) == 0
    # 9 pages of 100 + one read of the soft-deleted tickets: more requests than two windows allow,
    # so it waited for resets
    assert stats["requests"] == 10 > 2 * 4
    truth = {str(t["id"]) for t in control.state("ticket")}
    assert len(records) == len(truth) == 850 and {r.source_id for r in records} == truth


def test_every_ticket_comes_with_its_customer_email_and_deleted_ones_keep_their_state(big_desk):
    control = SandboxControl(big_desk.url)
    records = {r.source_id: r for r in read_all(connector(big_desk))}
    truth = {str(t["id"]): t for t in control.state("ticket")}
    assert set(records) == set(truth)
    for tid, t in truth.items():
        payload = records[tid].payload
        # customer.email, else the customer's main contact (listed after a non-main former address for some)
        assert payload["customer_email"] == t["customer_email"]
        assert payload["customer"]["id"] == t["customer"]["id"] and payload["customer"]["contacts"][0]["value"]
        assert (payload["state"], payload["deletedAt"]) == (t["state"], t["deletedAt"])
    assert sum(1 for r in records.values() if r.payload["state"] == "deleted") == 2
    contact_only = [r for r in records.values() if not r.payload["customer"]["email"]]
    with_former = [r for r in contact_only if not r.payload["customer"]["contacts"][0]["isMain"]]
    assert contact_only and with_former
    assert all(r.payload["customer_email"] == next(c["value"] for c in r.payload["customer"]["contacts"] if c["isMain"])
               for r in contact_only)
    # the 0001-01-01 zero time is unknown, not year 1; statuses are resolved from `included`
    assert desk_timestamp("0001-01-01T00:00:00Z") is None
    assert any(r.payload["createdAt"].startswith("0001-01-01") for r in records.values())
    assert all(r.updated_at is not None and "name" in r.payload["status"] for r in records.values())


def test_tickets_changing_during_a_deep_walk_are_neither_skipped_nor_lost(big_desk):
    control = SandboxControl(big_desk.url)
    conn = connector(big_desk)
    pages = conn.stream("tickets", None)
    seen = {r.source_id: r for r in next(pages)}
    first_page = sorted(seen)
    # Tickets of the first page change while we are on page 1: with page numbers alone, every
    # later ticket would shift down three places and three of them would be skipped.
    for tid in first_page[:3]:
        control.mutate("update", "ticket", id=int(tid), data={"subject": f"changed {tid}"})
    for page in pages:
        for rec in page:
            seen[rec.source_id] = rec
    truth = {str(t["id"]): t for t in control.state("ticket")}
    assert set(seen) == set(truth)
    assert all(seen[tid].payload["subject"] == f"changed {tid}" for tid in first_page[:3])


def test_an_incremental_read_starts_at_since_and_includes_deleted_tickets(big_desk):
    control = SandboxControl(big_desk.url)
    conn = connector(big_desk)
    newest = max(r.updated_at for r in read_all(conn))
    deleted = control.mutate("delete", "ticket", id=control.state("ticket")[5]["id"])
    control.reset_stats()
    records = read_all(conn, newest + timedelta(seconds=1))
    # nothing else changed; soft-deleted tickets are read explicitly, bounded by `deletedAt` (whether
    # a deletion moves `updatedAt` is not in the contract): the new one, not the two seeded long ago
    truth = {str(t["id"]) for t in control.state("ticket") if t["state"] == "deleted"}
    assert str(deleted["id"]) in truth and len(truth) == 3
    assert {r.source_id for r in records} == {str(deleted["id"])}
    assert all(r.payload["state"] == "deleted" and r.payload["deletedAt"] for r in records)
    # one page of changed tickets, one of deleted tickets, one probe for customers whose address changed
    assert control.stats()["requests"] == 3


@responses.activate
def test_end_of_data_comes_from_either_pagination_block_never_from_a_short_page():
    def ticket(i: int) -> dict:
        return {"id": i, "updatedAt": f"2024-05-0{i}T00:00:00Z", "customer": {"id": 1, "type": "customers"}, "state": "active"}

    included = {"customers": [{"id": 1, "email": "a@b.example", "contacts": []}]}
    bodies = [  # a short first page that says "more" only in `pagination`, then `meta.page` says done
        {"tickets": [ticket(1), ticket(2)], "included": included,
         "pagination": {"page": 1, "pages": 2, "hasMorePages": True}},
        {"tickets": [ticket(3)], "included": included, "meta": {"page": {"hasMore": False}}},
    ]
    calls = []

    def answer(request):
        if "state" in request.params.get("filter", ""):  # the explicit read of soft-deleted tickets
            return 200, {}, json.dumps({"tickets": [], "meta": {"page": {"hasMore": False}}})
        calls.append(request)
        return 200, {}, json.dumps(bodies[len(calls) - 1])

    responses.add_callback(responses.GET, re.compile(r"https://acme\.teamwork\.com/desk/api/v2/tickets\.json.*"),
                           callback=answer)
    conn = TeamworkDeskConnector("https://acme.teamwork.com/desk/api/v2", "key")
    records = read_all(conn)
    assert [r.source_id for r in records] == ["1", "2", "3"] and len(calls) == 2
    assert all(r.payload["customer_email"] == "a@b.example" for r in records)
    assert calls[0].headers["Authorization"] == "Bearer key"
    # page 2 is re-anchored on the newest updatedAt of page 1
    assert json.loads(calls[1].params["filter"]) == {"updatedAt": {"$gte": "2024-05-02T00:00:00Z"}}


def test_ticket_links_point_at_the_desk_site():
    assert site_url("https://acme.teamwork.com/desk/api/v2") == "https://acme.teamwork.com"
    assert ticket_url("https://acme.teamwork.com/desk/api/v2/", 123) == "https://acme.teamwork.com/desk/tickets/123"
