"""The Teamwork Desk connector against implementations of contract section 4 that differ from our
sandbox where the contract says (inferred)/(unverified) or nothing: `MiniDesk`, a `responses` stub
written from the contract alone, with one knob per open point (pagination blocks, `included`,
deleted tickets in the default list, the state filter, customers.json, ordering, page clamping),
plus plain stubs for rate-limit headers. Each test names the server behaviour it stands for."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses

from cz_pipeline.core.http import ApiError, RetryPolicy
from cz_pipeline.sources.teamwork_desk.connector import MIN_WAIT, TeamworkDeskConnector, UnexpectedShape

BASE = "https://acme.teamwork.com/desk/api/v2"
T0 = datetime(2024, 5, 1, tzinfo=timezone.utc)


def ts(seconds: int) -> str:
    return (T0 + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def ticket(tid: int, updated: int | str, customer: int = 1, state: str = "active", status: int = 3) -> dict[str, Any]:
    return {"id": tid, "subject": f"ticket {tid}", "updatedAt": updated if isinstance(updated, str) else ts(updated),
            "createdAt": ts(0), "customer": {"id": customer, "type": "customers"},
            "status": {"id": status, "type": "ticketstatuses"}, "state": state}


def customer(cid: int, email: str, contacts: list[int] = (), updated: int = 0) -> dict[str, Any]:
    return {"id": cid, "firstName": f"C{cid}", "email": email, "updatedAt": ts(updated), "state": "active",
            "contacts": [{"id": k, "type": "contacts"} for k in contacts]}


STATUSES = [{"id": 3, "name": "Waiting on customer", "code": "waiting"}, {"id": 5, "name": "Solved", "code": "solved"}]


class MiniDesk:
    """Tickets/customers/statuses served over `responses`, independently of our sandbox."""

    def __init__(self, tickets: list[dict], customers: list[dict] = (), contacts: list[dict] = (), *,
                 blocks: tuple[str, ...] = ("meta", "pagination"), deleted_by_default: bool = False,
                 state_filter: str = "ok", includes: bool = True, include_statuses: bool = True,
                 reject_include: str | None = None, order: str = "updatedAt", honour_filter: bool = True,
                 customers_status: int = 200, customer_lookup: bool = True, past_end: str = "empty",
                 page_size: int = 100, state_scan: str = "nested"):
        self.tickets, self.customers, self.contacts = list(tickets), list(customers), list(contacts)
        self.blocks, self.deleted_by_default, self.state_filter = blocks, deleted_by_default, state_filter
        self.includes, self.include_statuses, self.reject_include = includes, include_statuses, reject_include
        self.order, self.honour_filter, self.customers_status = order, honour_filter, customers_status
        self.customer_lookup, self.past_end, self.max_page = customer_lookup, past_end, page_size
        self.state_scan = state_scan  # "top": deleted tickets show only for a top-level `state` key
        self.calls: list[tuple[str, dict[str, str]]] = []
        responses.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/.*"), callback=self.answer)

    # ---- a small Mongo-style filter ---------------------------------------------------------
    def matches(self, row: dict, flt: dict) -> bool:
        for key, cond in flt.items():
            if key in ("$and", "$or"):
                results = [self.matches(row, sub) for sub in cond]
                if not (all(results) if key == "$and" else any(results)):
                    return False
                continue
            if key == "state" and self.state_filter == "ignore":
                continue
            value = row.get(key)
            value = value.get("id") if isinstance(value, dict) else value
            for op, arg in (cond if isinstance(cond, dict) else {"$eq": cond}).items():
                ok = {"$eq": lambda: value == arg, "$ne": lambda: value != arg, "$in": lambda: value in arg,
                      "$nin": lambda: value not in arg, "$gte": lambda: value is not None and value >= arg,
                      "$gt": lambda: value is not None and value > arg, "$lte": lambda: value is not None and value <= arg,
                      "$lt": lambda: value is not None and value < arg}[op]()
                if not ok:
                    return False
        return True

    @staticmethod
    def names_state(flt: Any) -> bool:
        return isinstance(flt, dict) and any(k == "state" or (k in ("$and", "$or") and any(MiniDesk.names_state(s) for s in v))
                                             for k, v in flt.items())

    def page_of(self, rows: list[dict], params: dict[str, str]) -> tuple[list[dict], dict]:
        flt = json.loads(params.get("filter") or "{}")
        named = "state" in flt if self.state_scan == "top" else self.names_state(flt)
        if not self.deleted_by_default and not (named and self.state_filter == "ok"):
            rows = [r for r in rows if r.get("state") != "deleted"]
        if self.honour_filter:
            rows = [r for r in rows if self.matches(r, flt)]
        if self.order == "updatedAt" and params.get("orderBy") == "updatedAt":
            rows = sorted(rows, key=lambda r: (r["updatedAt"], r["id"]), reverse=params.get("orderMode") == "desc")
        elif self.order == "desc":
            rows = sorted(rows, key=lambda r: (r["updatedAt"], r["id"]), reverse=True)
        else:
            rows = sorted(rows, key=lambda r: r["id"])
        size = min(int(params.get("pageSize", 50)), self.max_page)
        pages = max(1, -(-len(rows) // size))
        page = int(params.get("page", 1))
        if self.past_end == "last":
            page = min(page, pages)
        chunk = rows[(page - 1) * size: page * size]
        more = page * size < len(rows)
        paging = {}
        if "meta" in self.blocks:
            paging["meta"] = {"page": {"pageOffset": (page - 1) * size, "pageSize": size, "count": len(rows),
                                       "pages": pages, "hasMore": more}}
        if "meta-pages" in self.blocks:  # `meta.page` without `hasMore`
            paging["meta"] = {"page": {"pageSize": size, "count": len(rows), "pages": pages}}
        if "pagination" in self.blocks:
            paging["pagination"] = {"records": len(rows), "pageSize": size, "pages": pages, "page": page,
                                    "hasMorePages": more}
        return chunk, paging

    def included(self, rows: list[dict], wanted: set[str]) -> dict:
        by_id = {c["id"]: c for c in self.customers}
        out: dict[str, list] = {}
        if "customers" in wanted:
            cids = sorted({r["customer"]["id"] for r in rows if r.get("customer")} & set(by_id))
            out["customers"] = [by_id[c] for c in cids]
            if "contacts" in wanted:
                kids = {k["id"] for c in cids for k in by_id[c]["contacts"]}
                out["contacts"] = [k for k in self.contacts if k["id"] in kids]
        if "ticketstatuses" in wanted and self.include_statuses:
            sids = {r["status"]["id"] for r in rows if isinstance(r.get("status"), dict)}
            out["ticketstatuses"] = [s for s in STATUSES if s["id"] in sids]
        return out

    def answer(self, request):
        path = urlsplit(request.url).path[len(urlsplit(BASE).path) + 1:]
        params = dict(request.params)
        self.calls.append((path, params))
        assert len(self.calls) < 300, "the connector does not stop asking"  # fail, never hang

        def reply(status: int, body: dict) -> tuple[int, dict, str]:
            return status, {"Content-Type": "application/json"}, json.dumps(body)

        wanted = {w for w in params.get("includes", "").split(",") if w}
        if self.reject_include in wanted:
            return reply(400, {"message": f"unknown include {self.reject_include}"})
        if path == "tickets.json":
            if self.state_filter == "reject" and self.names_state(json.loads(params.get("filter") or "{}")):
                return reply(400, {"message": "state cannot be filtered"})
            rows, paging = self.page_of(self.tickets, params)
            body = {"tickets": rows, **paging}
            if self.includes:
                body["included"] = self.included(rows, wanted)
            return reply(200, body)
        if path == "customers.json":
            if self.customers_status != 200:
                return reply(self.customers_status, {"message": "not here"})
            rows, paging = self.page_of(self.customers, params)
            return reply(200, {"customers": rows, **paging})
        m = re.fullmatch(r"customers/(\d+)\.json", path)
        if m and self.customer_lookup:
            found = [c for c in self.customers if c["id"] == int(m.group(1))]
            if found:
                kids = {k["id"] for k in found[0]["contacts"]}
                return reply(200, {"customer": found[0], "included": {"contacts": [k for k in self.contacts if k["id"] in kids]}})
        if path == "ticketstatuses.json":
            return reply(200, {"ticketstatuses": STATUSES, "meta": {"page": {"hasMore": False}}})
        return reply(404, {"message": "no such endpoint"})

    def paths(self) -> list[str]:
        return [p for p, _ in self.calls]

    def filters(self, path: str = "tickets.json") -> list[Any]:
        return [json.loads(p["filter"]) if "filter" in p else None for q, p in self.calls if q == path]


def connector(page_size: int = 100, sleep=None, **kw) -> TeamworkDeskConnector:
    extra = {"sleep": sleep} if sleep else {}
    return TeamworkDeskConnector(BASE, "key", page_size=page_size, **kw, **extra)


def read(conn: TeamworkDeskConnector, since: datetime | None = None) -> dict[str, Any]:
    out = {}
    for page in conn.stream("tickets", since):
        for rec in page:
            out[rec.source_id] = rec
    return out


def people() -> tuple[list[dict], list[dict]]:
    """Customer 1 has the email on the customer; 2 only in its main contact (listed after a former,
    non-main one) with `email: ""`; 3 has a whitespace email and one contact without `isMain`."""
    customers = [customer(1, "one@acme.example", [11]), customer(2, "", [21, 22]), customer(3, "   ", [31])]
    contacts = [{"id": 11, "value": "one@acme.example", "isMain": True},
                {"id": 21, "value": "former@acme.example", "isMain": False},
                {"id": 22, "value": "Two@Acme.example", "isMain": True},
                {"id": 31, "value": "three@acme.example"}]
    return customers, contacts


EMAILS = {1: "one@acme.example", 2: "Two@Acme.example", 3: "three@acme.example"}


# ---- pagination blocks and end of data ---------------------------------------------------------
@responses.activate
@pytest.mark.parametrize("blocks", [("meta",), ("pagination",), ("meta-pages",), ()])
def test_either_pagination_block_alone_or_none_ends_the_walk_without_losing_rows(blocks):
    customers, contacts = people()
    desk = MiniDesk([ticket(i, i) for i in range(1, 8)], customers, contacts, blocks=blocks, page_size=3)
    got = read(connector(page_size=3))
    assert sorted(got, key=int) == [str(i) for i in range(1, 8)]
    main = [p for p, q in desk.calls if p == "tickets.json" and "state" not in q.get("filter", "")]
    # 7 rows, 3 a page, re-anchored on the newest: 3 pages. With no block at all the walk reads on
    # until a page brings nothing: page 1 of `>= 7` (known ids only), then page 2 (empty).
    assert len(main) == (5 if not blocks else 3)


@responses.activate
def test_a_server_clamping_page_size_below_ours_is_read_to_the_end_by_its_flag_not_by_short_pages():
    customers, contacts = people()
    desk = MiniDesk([ticket(i, i) for i in range(1, 12)], customers, contacts, blocks=("pagination",), page_size=4)
    got = read(connector())  # asks for 100, gets 4 a page
    assert sorted(got, key=int) == [str(i) for i in range(1, 12)]
    assert {q["pageSize"] for _, q in desk.calls} == {"100"}


@responses.activate
def test_a_server_answering_pages_past_the_end_with_the_last_page_does_not_loop():
    customers, contacts = people()
    # no pagination block and `page` clamped to the last page: only a repeated page says "the end"
    desk = MiniDesk([ticket(i, i // 2) for i in range(1, 10)], customers, contacts, blocks=(), past_end="last",
                    page_size=4)
    got = read(connector(page_size=4))
    assert sorted(got, key=int) == [str(i) for i in range(1, 10)]
    assert len(desk.calls) < 15


# ---- the customer email -------------------------------------------------------------------
@responses.activate
def test_customer_email_comes_from_customer_email_else_main_contact_else_the_only_contact():
    customers, contacts = people()
    MiniDesk([ticket(10 + c, c, customer=c) for c in (1, 2, 3)], customers, contacts)
    got = read(connector())
    assert {r.payload["customer"]["id"]: r.payload["customer_email"] for r in got.values()} == EMAILS
    two = got["12"].payload["customer"]
    assert two["email"] == "" and [c["value"] for c in two["contacts"]] == ["former@acme.example", "Two@Acme.example"]


@responses.activate
def test_without_included_each_customer_is_looked_up_once():
    customers, contacts = people()
    desk = MiniDesk([ticket(i, i, customer=1 + i % 3) for i in range(1, 10)], customers, contacts, includes=False)
    got = read(connector())
    assert {r.source_id: r.payload["customer_email"] for r in got.values()} == \
        {str(i): EMAILS[1 + i % 3] for i in range(1, 10)}
    assert sorted(p for p in desk.paths() if p.startswith("customers/")) == \
        ["customers/1.json", "customers/2.json", "customers/3.json"]
    # statuses were not included either: looked up once, by name
    assert desk.paths().count("ticketstatuses.json") == 1
    assert {r.payload["status"]["name"] for r in got.values()} == {"Waiting on customer"}


@responses.activate
def test_a_server_refusing_customer_lookups_leaves_the_email_unknown_and_stops_asking():
    customers, contacts = people()
    many = [customer(c, f"c{c}@acme.example") for c in range(1, 9)]
    desk = MiniDesk([ticket(c, c, customer=c) for c in range(1, 9)], many, contacts, includes=False,
                    customer_lookup=False)
    conn = connector()
    got = read(conn)
    assert len(got) == 8 and all(r.payload["customer_email"] is None for r in got.values())
    assert len([p for p in desk.paths() if p.startswith("customers/")]) == 3  # then it gives up
    assert any("no more lookups" in n for n in conn.notes)


@responses.activate
def test_included_as_a_jsonapi_list_with_text_ids_and_an_embedded_customer_are_understood():
    rows = [ticket(1, 1, customer=1), ticket(2, 2, customer=2)]
    rows[0]["customer"]["id"] = "1"  # the reference says "1", `included` says 1
    rows[1]["customer"] = {"id": 2, "type": "customers", "email": "embedded@acme.example"}  # webhook shape
    body = {"tickets": rows, "included": [
        {"id": 1, "type": "customers", "email": "", "contacts": [{"id": 11, "type": "contacts"}]},
        {"id": 11, "type": "contacts", "value": "listed@acme.example", "isMain": True},
        {"id": 3, "type": "ticketstatuses", "name": "Waiting on customer"}],
        "pagination": {"page": 1, "pages": 1}}
    responses.get(re.compile(re.escape(BASE) + r"/tickets\.json.*"), json=body)
    got = read(connector())
    assert got["1"].payload["customer_email"] == "listed@acme.example"
    assert got["2"].payload["customer_email"] == "embedded@acme.example"
    assert got["1"].payload["status"]["name"] == "Waiting on customer"


@responses.activate
def test_a_server_rejecting_the_ticketstatuses_include_is_asked_again_without_it():
    customers, contacts = people()
    desk = MiniDesk([ticket(1, 1, status=5)], customers, contacts, reject_include="ticketstatuses")
    conn = connector()
    got = read(conn)
    assert got["1"].payload["status"]["name"] == "Solved" and got["1"].payload["customer_email"] == EMAILS[1]
    tickets = [q["includes"] for p, q in desk.calls if p == "tickets.json"]
    assert tickets[0] == "customers,contacts,ticketstatuses" and set(tickets[1:]) == {"customers,contacts"}


# ---- soft-deleted tickets ------------------------------------------------------------------
@responses.activate
@pytest.mark.parametrize("deleted_by_default", [False, True])
def test_deleted_tickets_arrive_whether_or_not_the_default_list_shows_them(deleted_by_default):
    customers, contacts = people()
    rows = [ticket(1, 1), ticket(2, 2, state="deleted"), ticket(3, 3)]
    desk = MiniDesk(rows, customers, contacts, deleted_by_default=deleted_by_default)
    got = read(connector())
    assert sorted(got) == ["1", "2", "3"] and got["2"].payload["state"] == "deleted"
    filters = desk.filters()
    # the main read carries no `state` clause; deleted tickets are asked for in the contract's words
    assert filters[0] is None and filters[1] == {"state": {"$eq": "deleted"}}


@responses.activate
@pytest.mark.parametrize("state_scan", ["nested", "top"])
def test_more_than_a_page_of_deleted_tickets_is_read_whichever_way_the_server_spots_state(state_scan):
    customers, contacts = people()
    rows = [ticket(i, i) for i in range(1, 4)] + [ticket(i, i, state="deleted") for i in range(4, 12)]
    desk = MiniDesk(rows, customers, contacts, page_size=3, state_scan=state_scan)
    got = read(connector(page_size=3))
    assert sorted(got, key=int) == [str(i) for i in range(1, 12)]
    assert {r.source_id for r in got.values() if r.payload["state"] == "deleted"} == {str(i) for i in range(4, 12)}
    # re-anchored pages keep `state` a top-level key next to `updatedAt`
    assert {"state": {"$eq": "deleted"}, "updatedAt": {"$gte": ts(6)}} in desk.filters()


@responses.activate
def test_a_deletion_that_does_not_move_updated_at_is_still_seen_by_a_routine_read():
    customers, contacts = people()
    deleted = {**ticket(2, 2, state="deleted"), "deletedAt": ts(80)}  # updatedAt left before `since`
    rows = [ticket(1, 1), deleted, ticket(3, 100)]
    MiniDesk(rows, customers, contacts)
    got = read(connector(), T0 + timedelta(seconds=50))
    assert sorted(got) == ["2", "3"] and got["2"].payload["state"] == "deleted"


@responses.activate
@pytest.mark.parametrize("state_filter", ["reject", "ignore"])
def test_a_server_that_rejects_or_ignores_the_state_filter_still_syncs(state_filter):
    customers, contacts = people()
    rows = [ticket(i, i) for i in range(1, 8)] + [ticket(9, 9, state="deleted")]
    desk = MiniDesk(rows, customers, contacts, state_filter=state_filter, deleted_by_default=True, page_size=3)
    conn = connector(page_size=3)
    got = read(conn)
    assert sorted(got, key=int) == ["1", "2", "3", "4", "5", "6", "7", "9"]  # the default list had them all
    assert got["9"].payload["state"] == "deleted"
    state_reads = [f for f in desk.filters() if f and "state" in json.dumps(f)]
    assert len(state_reads) == 1  # refused, or answered with live tickets: one request, then no more
    assert conn.notes


# ---- customers changed since the window start (optional enrichment) -------------------------------
@responses.activate
@pytest.mark.parametrize("status", [400, 403, 404, 405, 422, 501])
def test_a_server_without_the_customers_probe_does_not_fail_the_routine_read(status):
    customers, contacts = people()
    MiniDesk([ticket(1, 1), ticket(2, 100)], customers, contacts, customers_status=status)
    conn = connector()
    got = read(conn, T0 + timedelta(seconds=50))
    assert sorted(got) == ["2"] and any("changed customers" in n for n in conn.notes)


@responses.activate
def test_a_failing_customers_probe_still_fails_the_read_so_that_it_is_retried():
    customers, contacts = people()
    MiniDesk([ticket(1, 1)], customers, contacts, customers_status=503)
    conn = connector(sleep=lambda s: None, policy=RetryPolicy(max_attempts=2))
    with pytest.raises(ApiError) as err:
        read(conn, T0)
    assert err.value.status == 503


@responses.activate
def test_a_customers_probe_ignoring_its_filter_rereads_only_the_changed_customers_tickets():
    customers, contacts = people()
    customers[1]["updatedAt"] = ts(200)  # only customer 2 changed since the window start
    rows = [ticket(1, 1, customer=1), ticket(2, 2, customer=2), ticket(3, 3, customer=3), ticket(4, 300, customer=1)]
    desk = MiniDesk(rows, customers, contacts, honour_filter=False)
    got = read(connector(), T0 + timedelta(seconds=100))
    # the ticket filter is ignored too, so rows older than `since` are dropped client-side
    assert sorted(got) == ["2", "4"] and got["2"].payload["customer_email"] == EMAILS[2]
    rereads = [f for f in desk.filters() if f and "customer" in f]
    assert rereads == [{"customer": {"$in": [2]}}]


# ---- ordering and filters the server does not honour ----------------------------------------
@responses.activate
@pytest.mark.parametrize("order", ["desc", "id"])
def test_a_server_ignoring_the_ascending_order_loses_no_rows(order):
    customers, contacts = people()
    rows = [ticket(i, (i * 7) % 23) for i in range(1, 24)]  # ids and updatedAt in different orders
    desk = MiniDesk(rows, customers, contacts, order=order, page_size=5)
    got = read(connector(page_size=5))
    assert sorted(got, key=int) == [str(i) for i in range(1, 24)]
    assert len(desk.calls) < 20  # plain page numbers, not a quadratic re-anchoring chase


@responses.activate
def test_a_server_ignoring_the_updated_at_filter_is_filtered_client_side_in_linear_requests():
    customers, contacts = people()
    rows = [ticket(i, i) for i in range(1, 41)]
    desk = MiniDesk(rows, customers, contacts, honour_filter=False, page_size=5)
    got = read(connector(page_size=5), T0 + timedelta(seconds=30))
    assert sorted(got, key=int) == [str(i) for i in range(30, 41)]
    main = [q for p, q in desk.calls if p == "tickets.json" and "state" not in q.get("filter", "")]
    assert len(main) <= 8 + 1  # 8 pages of 5 (+ the one that revealed the ignored filter)


# ---- timestamps and ties ------------------------------------------------------------------
@responses.activate
def test_a_run_of_equal_updated_at_longer_than_a_page_and_zero_times_are_read_once_each():
    customers, contacts = people()
    rows = ([ticket(i, "0001-01-01T00:00:00Z") for i in range(1, 4)] + [ticket(i, 5) for i in range(4, 12)]
            + [ticket(12, 6), ticket(13, 7)])
    desk = MiniDesk(rows, customers, contacts, page_size=3)
    got = read(connector(page_size=3))
    assert sorted(got, key=int) == [str(i) for i in range(1, 14)]
    assert [got[str(i)].updated_at for i in (1, 4)] == [None, T0 + timedelta(seconds=5)]
    assert len(desk.calls) < 16


@responses.activate
def test_a_page_without_the_tickets_list_fails_instead_of_reading_as_empty():
    responses.get(re.compile(re.escape(BASE) + r"/tickets\.json.*"), json={"data": [ticket(1, 1)]})
    with pytest.raises(UnexpectedShape):
        read(connector())


# ---- rate limits --------------------------------------------------------------------------
@responses.activate
@pytest.mark.parametrize("headers, low, high", [
    (lambda: {"X-Rate-Limit-Reset": str(int(time.time()) + 6)}, 4.5, 6.0),  # epoch second
    (lambda: {"X-Rate-Limit-Reset": "6"}, 6.0, 6.0),  # seconds left
    (lambda: {"X-Rate-Limit-Reset": "0"}, MIN_WAIT, MIN_WAIT),  # the last second of a window
    (lambda: {"X-Rate-Limit-Reset": str(int(time.time()) - 2)}, MIN_WAIT, MIN_WAIT),  # a past second (clock skew)
    (lambda: {}, 2.0, 2.0),  # no header at all: backoff
])
def test_a_429_waits_for_the_reset_whatever_form_it_takes(headers, low, high):
    slept: list[float] = []
    limited = {"n": 0}

    def answer(request):
        if limited["n"] == 0:
            limited["n"] += 1
            return 429, headers(), json.dumps({"message": "rate limited"})
        return 200, {}, json.dumps({"tickets": [], "meta": {"page": {"hasMore": False}}})

    responses.add_callback(responses.GET, re.compile(re.escape(BASE) + r"/tickets\.json.*"), callback=answer)
    assert read(connector(sleep=slept.append)) == {}
    assert len(slept) == 1 and low <= slept[0] <= high
