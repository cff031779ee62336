"""The Close connector against behaviour the contract (docs/crm-api-contracts.md section 1) allows
or leaves open but our Close sandbox does not produce: search hits with `__object_type`, a nested
`custom` dict or no `date_updated`; a last page without a `cursor` key or an empty page that still
carries one; a search that ignores `sort` or a cursor that does not advance; lists without
`has_more`, ignoring `_skip` or `_order_by`; the other wording of the `_limit` 400; the legacy
rate-limit headers. The sandbox over real HTTP where it can be made to behave so (an edit during
a walk); `responses` stubs for one connector edge case each otherwise."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
import responses

from cz_pipeline.sources.close.connector import CloseConnector
from cz_pipeline.core.http import ApiError, RetryPolicy
from cz_pipeline.sandbox.close import CloseSandbox
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline_tests.conftest import CLOSE_KEY

BASE = "https://api.close.test/api/v1"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
MAX_CALLS = 60  # a stub answering more than this means the walk is not bounded


def stamp(seconds: float, fmt: str = "us") -> str:
    moment = T0 + timedelta(seconds=seconds)
    if fmt == "naive":  # event-log style: no offset
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")
    if fmt == "plain":  # the other Close rendering: no fraction
        return moment.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def connector(**policy: Any) -> tuple[CloseConnector, list[float]]:
    conn = CloseConnector(BASE, CLOSE_KEY, RetryPolicy(max_attempts=3, backoff_base=0.001, **policy))
    slept: list[float] = []
    conn.http.sleep = slept.append  # rate-limit waits are recorded, not slept
    return conn, slept


def ids_of(pages: list) -> list[str]:
    return [r.source_id for page in pages for r in page]


def query_of(request: Any) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(request.url).query))


class ListStub:
    """A Close list endpoint (`{"data": [...], "has_more": bool}`) with switchable deviations."""

    def __init__(self, rows: list[dict[str, Any]], *, order_field: str | None = "date_updated",
                 honour_order: bool = True, honour_skip: bool = True, honour_filters: bool = True,
                 send_has_more: bool = True, max_limit: int = 1000, max_skip: int = 10**6,
                 limit_error: dict[str, Any] | None = None, skip_error: dict[str, Any] | None = None):
        self.rows, self.order_field = rows, order_field
        self.honour_order, self.honour_skip, self.honour_filters = honour_order, honour_skip, honour_filters
        self.send_has_more, self.max_limit, self.max_skip = send_has_more, max_limit, max_skip
        self.limit_error = limit_error or {"errors": [], "field-errors": {
            "_limit": f"Ensure this value is less than or equal to {max_limit}."}}
        self.skip_error = skip_error or {"errors": [f"The skip you set is larger than the maximum skip for this "
                                                    f"resource (max_skip = {max_skip}). Please refine your search query."]}
        self.requests: list[dict[str, str]] = []

    def __call__(self, request: Any) -> tuple[int, dict, str]:
        q = query_of(request)
        self.requests.append(q)
        assert len(self.requests) <= MAX_CALLS, "the walk does not terminate"
        skip, limit = int(q.get("_skip", 0)), int(q.get("_limit", 100))
        if limit > self.max_limit:
            return 400, {}, json.dumps(self.limit_error)
        if skip > self.max_skip:
            return 400, {}, json.dumps(self.skip_error)
        rows = list(self.rows)
        if self.honour_filters:
            for key, value in q.items():
                if key.endswith("__gte"):
                    bound = datetime.fromisoformat(value.replace("Z", "+00:00"))
                    if bound.tzinfo is None:
                        bound = bound.replace(tzinfo=timezone.utc)
                    rows = [r for r in rows if _dt(r[key[:-5]]) >= bound]
        if self.order_field and self.honour_order and q.get("_order_by") == self.order_field:
            rows.sort(key=lambda r: _dt(r[self.order_field]))
        start = skip if self.honour_skip else 0
        body: dict[str, Any] = {"data": rows[start:start + limit]}
        if self.send_has_more:
            body["has_more"] = start + limit < len(rows)
        return 200, {}, json.dumps(body)


def _dt(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed


def opportunities(n: int, *, same_stamp: bool = False) -> list[dict[str, Any]]:
    return [{"id": f"oppo_{i:03d}", "lead_id": "lead_1", "value": 100 * i,
             "date_created": stamp(i), "date_updated": stamp(0 if same_stamp else i)} for i in range(n)]


class SearchStub:
    """`POST /data/search/` serving pre-built pages: page i answers the body with cursor `c{i}`."""

    def __init__(self, pages: list[dict[str, Any]]):
        self.pages, self.bodies = pages, []

    def __call__(self, request: Any) -> tuple[int, dict, str]:
        body = json.loads(request.body)
        self.bodies.append(body)
        assert len(self.bodies) <= MAX_CALLS, "the walk does not terminate"
        index = int(body["cursor"][1:]) if body.get("cursor") else 0
        return 200, {}, json.dumps(self.pages[index])


def lead(i: int, seconds: float | None = None, **extra: Any) -> dict[str, Any]:
    hit = {"__object_type": "lead", "id": f"lead_{i:03d}", "display_name": f"Lead {i}", **extra}
    if seconds is not None:
        hit["date_updated"] = stamp(seconds)
    return hit


def search_stub(pages: list[dict[str, Any]]) -> SearchStub:
    stub = SearchStub(pages)
    responses.add_callback(responses.POST, f"{BASE}/data/search/", callback=stub, content_type="application/json")
    return stub


# ---- Advanced Filtering search ----------------------------------------------------------------

@responses.activate
def test_search_hits_land_without_object_type_and_a_nested_custom_dict_becomes_flat_id_keys():
    # `__object_type` (inferred on every hit) is search metadata; a nested `custom` dict "may come
    # along": id keys are kept flat (the flat key wins), name keys dropped (a rename would churn).
    search_stub([{"data": [
        lead(1, 1, **{"custom.cf_tier": "SMB", "custom": {"cf_tier": "stale", "cf_region": "EMEA", "Tier": "SMB"}}),
        {"__object_type": "contact", "id": "cont_x", "date_updated": stamp(2)},  # not a lead: not ours
    ], "cursor": None}])
    conn, _ = connector()
    pages = list(conn.stream("leads", None))
    assert ids_of(pages) == ["lead_001"]
    assert pages[0][0].payload == {"id": "lead_001", "display_name": "Lead 1", "date_updated": stamp(1),
                                   "custom.cf_tier": "SMB", "custom.cf_region": "EMEA"}


@responses.activate
def test_search_last_page_without_a_cursor_key_ends_the_walk():
    stub = search_stub([{"data": [lead(1, 1), lead(2, 2)]}])  # no "cursor" key at all
    conn, _ = connector()
    assert ids_of(list(conn.stream("leads", None))) == ["lead_001", "lead_002"]
    assert len(stub.bodies) == 1


@responses.activate
def test_search_empty_page_that_still_carries_a_cursor_ends_the_walk():
    stub = search_stub([{"data": [lead(1, 5)], "cursor": "c1"},
                        {"data": [], "cursor": "c2"},  # empty, yet a cursor
                        {"data": [], "cursor": "c2"}])
    conn, _ = connector()
    assert ids_of(list(conn.stream("leads", None))) == ["lead_001"]
    # first query, re-query from the newest stamp (served the same hit again), its cursor page:
    # empty, so the cursor that came with it is never sent
    assert [b.get("cursor") for b in stub.bodies] == [None, None, "c1"]


@responses.activate
def test_search_hits_without_date_updated_are_walked_by_cursor_to_the_end():
    # Bare hits (no date_updated) give nothing to re-anchor on: the walk follows the cursor in
    # the identical body, lands every hit once, and stops at the null cursor.
    pages = [{"data": [lead(3 * p + i) for i in range(3)], "cursor": f"c{p + 1}" if p < 3 else None} for p in range(4)]
    stub = search_stub(pages)
    conn, _ = connector()
    walked = ids_of(list(conn.stream("leads", None)))
    assert walked == [f"lead_{i:03d}" for i in range(12)]
    assert all({k: v for k, v in b.items() if k != "cursor"} == stub.bodies[0] for b in stub.bodies)


@responses.activate
def test_search_cursor_that_does_not_advance_fails_instead_of_looping():
    search_stub([{"data": [lead(1, 0), lead(2, 0)], "cursor": "c0"}])  # the same page, forever
    conn, _ = connector()
    with pytest.raises(ApiError, match="no progress"):
        list(conn.stream("leads", None))


@responses.activate
def test_search_that_ignores_sort_never_re_anchors_past_unseen_hits():
    # Descending pages: re-querying from a page's newest stamp would drop every older hit not
    # yet read. An unsorted page is walked by cursor instead.
    pages = [{"data": [lead(9 - 3 * p - i, 9 - 3 * p - i) for i in range(3)], "cursor": f"c{p + 1}" if p < 2 else None}
             for p in range(3)]
    search_stub(pages)
    conn, _ = connector()
    assert sorted(ids_of(list(conn.stream("leads", None)))) == sorted(f"lead_{i:03d}" for i in range(1, 10))


@responses.activate
def test_search_since_is_sent_as_fixed_utc_with_z_whatever_the_cursor_time_zone():
    stub = search_stub([{"data": [], "cursor": None}])
    conn, _ = connector()
    plus_two = timezone(timedelta(hours=2))
    list(conn.stream("leads", datetime(2025, 3, 1, 14, 0, 0, 123456, tzinfo=plus_two)))
    list(conn.stream("contacts", datetime(2025, 3, 1, 12, 0, 0)))  # naive = UTC, not host local time
    values = [b["query"]["queries"][1]["condition"]["on_or_after"]["value"] for b in stub.bodies]
    assert values == ["2025-03-01T12:00:00.123Z", "2025-03-01T12:00:00.000Z"]
    assert stub.bodies[1]["_fields"] == {"contact": stub.bodies[1]["_fields"]["contact"]}  # keyed by type


@responses.activate
def test_search_naive_and_plain_timestamps_land_as_utc_and_a_run_of_ties_is_read_once():
    # Mixed renderings (µs +00:00, no fraction, naive) and a tie run longer than a page.
    pages = [{"data": [{**lead(1), "date_updated": stamp(1, "naive")}, {**lead(2), "date_updated": stamp(2, "plain")},
                       {**lead(3), "date_updated": stamp(2)}], "cursor": "c1"},
             # re-query from 12:00:02: the two ties come back with a third, then a cursor page
             {"data": [{**lead(2), "date_updated": stamp(2, "plain")}, {**lead(3), "date_updated": stamp(2)},
                       {**lead(4), "date_updated": stamp(2)}], "cursor": "c2"},
             {"data": [{**lead(5), "date_updated": stamp(2)}, {**lead(6), "date_updated": stamp(3)}], "cursor": None}]
    stub_calls: list[int] = []

    def answer(request: Any) -> tuple[int, dict, str]:
        body = json.loads(request.body)
        stub_calls.append(1)
        assert len(stub_calls) <= MAX_CALLS
        if body.get("cursor"):
            return 200, {}, json.dumps(pages[int(body["cursor"][1:])])
        lower = body["query"]["queries"][1:] and body["query"]["queries"][1]["condition"]["on_or_after"]["value"]
        return 200, {}, json.dumps(pages[1] if lower else pages[0])

    responses.add_callback(responses.POST, f"{BASE}/data/search/", callback=answer, content_type="application/json")
    conn, _ = connector()
    records = [r for page in conn.stream("leads", None) for r in page]
    assert [r.source_id for r in records] == [f"lead_{i:03d}" for i in range(1, 7)]
    assert records[0].updated_at == T0 + timedelta(seconds=1) and records[0].updated_at.tzinfo is not None
    assert records[1].updated_at == records[2].updated_at == T0 + timedelta(seconds=2)


# ---- list endpoints (`_skip`/`_limit`) --------------------------------------------------------

def list_stub(path: str, stub: ListStub) -> ListStub:
    responses.add_callback(responses.GET, f"{BASE}/{path}", callback=stub, content_type="application/json")
    return stub


@responses.activate
def test_list_without_has_more_keeps_paging_while_pages_are_full():
    stub = list_stub("user/", ListStub([{"id": f"user_{i}", "date_created": stamp(i)} for i in range(2500)],
                                       order_field=None, send_has_more=False))
    conn, _ = connector()
    assert len(set(ids_of(list(conn.stream("users", None))))) == 2500
    assert [q["_skip"] for q in stub.requests] == ["0", "1000", "2000"]


@responses.activate
def test_list_server_that_ignores_skip_fails_instead_of_looping():
    list_stub("user/", ListStub([{"id": f"user_{i}"} for i in range(1500)], order_field=None, honour_skip=False))
    conn, _ = connector()
    with pytest.raises(ApiError, match="no progress"):
        list(conn.stream("users", None))


@responses.activate
def test_deals_server_that_ignores_skip_and_filters_still_terminates():
    list_stub("opportunity/", ListStub(opportunities(600), honour_skip=False, honour_filters=False))
    conn, _ = connector()
    with pytest.raises(ApiError, match="no progress"):
        list(conn.stream("deals", None))


@responses.activate
def test_deals_page_by_date_updated_keyset_and_send_the_since_filter_as_utc():
    stub = list_stub("opportunity/", ListStub(opportunities(600)))
    conn, _ = connector()
    since = datetime(2025, 3, 1, 14, 0, 10, tzinfo=timezone(timedelta(hours=2)))  # = T0 + 10 s
    walked = ids_of(list(conn.stream("deals", since)))
    assert walked == [f"oppo_{i:03d}" for i in range(10, 600)]
    assert stub.requests[0]["date_updated__gte"] == "2025-03-01T12:00:10+00:00"
    assert stub.requests[0]["_order_by"] == "date_updated"
    assert all(q["_skip"] == "0" for q in stub.requests)  # never near the `_skip` cap


@responses.activate
def test_a_run_of_equal_date_updated_longer_than_a_page_is_read_with_skip_within_the_run():
    stub = list_stub("opportunity/", ListStub(opportunities(600, same_stamp=True)))
    conn, _ = connector()
    walked = ids_of(list(conn.stream("deals", None)))
    assert sorted(walked) == [f"oppo_{i:03d}" for i in range(600)] and len(walked) == 600
    assert len(stub.requests) <= 5


@responses.activate
def test_skip_cap_inside_a_run_of_equal_timestamps_fails_loudly_instead_of_looping():
    list_stub("opportunity/", ListStub(opportunities(600, same_stamp=True), max_skip=300))
    conn, _ = connector()
    with pytest.raises(ApiError, match="maximum skip"):
        list(conn.stream("deals", None))


@responses.activate
def test_list_that_ignores_order_by_falls_back_to_plain_offsets_and_misses_nothing():
    rows = opportunities(600)
    rows.reverse()  # served newest first whatever `_order_by` says
    stub = list_stub("opportunity/", ListStub(rows, honour_order=False))
    conn, _ = connector()
    assert sorted(ids_of(list(conn.stream("deals", None)))) == [f"oppo_{i:03d}" for i in range(600)]
    assert not any("date_updated__gte" in q for q in stub.requests)


@responses.activate
@pytest.mark.parametrize("error", [
    {"errors": [], "field-errors": {"_limit": "Ensure this value is less than or equal to 100."}},
    {"errors": ["The limit you set is larger than the maximum limit for this resource (max_limit = 100)."]},
    {"errors": ["Ensure this value is less than or equal to 100."]},  # names neither _limit nor _skip
])
def test_a_limit_400_in_any_wording_shrinks_the_page_to_the_named_maximum(error):
    stub = list_stub("task/", ListStub([{"id": f"task_{i}", "date_created": stamp(i), "date_updated": stamp(i)}
                                        for i in range(250)], order_field="date_created", max_limit=100,
                                       limit_error=error))
    conn, _ = connector()
    assert len(ids_of(list(conn.stream("tasks", None)))) == 250
    assert [q["_limit"] for q in stub.requests][:2] == ["1000", "100"]


@responses.activate
def test_the_other_skip_cap_wording_is_not_mistaken_for_a_limit_error():
    # Airbyte treats a bare "less than or equal to" 400 as the `_skip` cap: past skip 0, it is.
    list_stub("user/", ListStub([{"id": f"user_{i}"} for i in range(2500)], order_field=None, max_skip=1000,
                                skip_error={"errors": ["Ensure this value is less than or equal to 1000."]}))
    conn, _ = connector()
    with pytest.raises(ApiError, match="less than or equal to 1000"):
        list(conn.stream("users", None))


@responses.activate
def test_activities_filter_on_date_created_in_utc():
    stub = list_stub("activity/task_completed/", ListStub(
        [{"id": f"acti_{i}", "date_created": stamp(i, "naive")} for i in range(5)], order_field=None))
    conn, _ = connector()
    records = [r for page in conn.stream("activities", datetime(2025, 3, 1, 12, 0, 2)) for r in page]
    assert [r.source_id for r in records] == ["acti_2", "acti_3", "acti_4"]
    assert stub.requests[0]["date_created__gte"] == "2025-03-01T12:00:02+00:00"
    assert records[0].updated_at == T0 + timedelta(seconds=2)


# ---- rate limits --------------------------------------------------------------------------------

@responses.activate
@pytest.mark.parametrize("headers,body,expected", [
    ({"RateLimit": "limit=100, remaining=0, reset=7"}, {}, 7.0),  # current contract
    ({"RateLimit-Reset": "4"}, {}, 4.0),  # the official client's last fallback
    ({"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": "3"}, {"rate_reset": 3}, 3.0),  # tap-closeio era
    ({}, {"error": {"rate_reset": 9, "message": "API call count exceeded"}}, None),  # deprecated body only
])
def test_a_429_in_any_documented_shape_is_waited_out_and_the_walk_completes(headers, body, expected):
    responses.add(responses.GET, f"{BASE}/user/", status=429, headers=headers, json=body)
    responses.add(responses.GET, f"{BASE}/user/", json={"data": [{"id": "user_1"}], "has_more": False})
    conn, slept = connector()
    assert ids_of(list(conn.stream("users", None))) == ["user_1"]
    assert slept and all(0 < s <= 120 for s in slept)
    if expected is not None:
        assert slept[0] == expected


# ---- an edit during the walk (the sandbox, over real HTTP) ------------------------------------

def test_an_edit_during_the_deals_walk_does_not_shift_an_unseen_deal_past_the_offset():
    # Ordered by date_updated, an edit moves a deal to the end; with plain offsets every row
    # behind it moved up one place and the first row of the next page was never read (a full
    # sync would then tombstone a live deal). Keyset paging re-reads from the last stamp seen.
    app = CloseSandbox(api_key=CLOSE_KEY, n_leads=20)
    with RunningSandbox(app) as server:
        conn = CloseConnector(f"{server.url}/api/v1", CLOSE_KEY)
        walk = conn._offset_walk("opportunity/", {"_order_by": "date_updated"}, 5, anchor="date_updated")
        first = next(walk)
        SandboxControl(server.url).mutate("update", "opportunity", id=first[0].source_id, data={"confidence": 42})
        seen = {r.source_id for r in first} | set(ids_of(list(walk)))
        assert seen == {o["id"] for o in app.dump("opportunity")}
        assert len(seen) > 10
