"""The Close adapter against the Close sandbox: search walks, ties, skip caps, custom fields."""

from __future__ import annotations

from cz_pipeline.sources.close.connector import CloseConnector
from cz_pipeline.core.http import parse_timestamp
from cz_pipeline.sandbox.close import CloseSandbox
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline_tests.conftest import CF, CLOSE_KEY


def ids(pages) -> list[str]:
    return [r.source_id for page in pages for r in page]


def test_search_walk_yields_every_lead_once_across_ties_and_reanchors(close_server, close_app):
    connector = CloseConnector(f"{close_server.url}/api/v1", CLOSE_KEY)
    connector.search_page_size = 3  # many pages: re-anchoring and runs of equal timestamps
    walked = ids(connector.stream("leads", None))
    assert sorted(walked) == sorted(lead["id"] for lead in close_app.dump("lead"))
    assert len(walked) == len(set(walked))


def test_incremental_walk_returns_exactly_the_records_changed_since(close_server, close_app):
    connector = CloseConnector(f"{close_server.url}/api/v1", CLOSE_KEY)
    connector.search_page_size = 4
    leads = sorted(close_app.dump("lead"), key=lambda lead: lead["date_updated"])
    since = parse_timestamp(leads[len(leads) // 2]["date_updated"])
    expected = {lead["id"] for lead in leads if parse_timestamp(lead["date_updated"]) >= since}
    assert set(ids(connector.stream("leads", since))) == expected


def test_past_the_skip_cap_the_offset_walk_reanchors_and_stays_complete():
    app = CloseSandbox(api_key=CLOSE_KEY, n_leads=60, max_skip=20)
    with RunningSandbox(app) as server:
        connector = CloseConnector(f"{server.url}/api/v1", CLOSE_KEY)
        pages = list(connector._offset_walk("opportunity/", {"_order_by": "date_updated"}, 10, anchor="date_updated"))
        assert set(ids(pages)) == {o["id"] for o in app.dump("opportunity")}
        assert len(app.dump("opportunity")) > 30  # the cap was really crossed


def test_custom_fields_are_discovered_per_object(close_server):
    connector = CloseConnector(f"{close_server.url}/api/v1", CLOSE_KEY)
    assert CF["account_id"] in connector.custom_fields("leads")
    assert CF["nps"] in connector.custom_fields("contacts")
    assert CF["end_date"] in connector.custom_fields("deals")


def test_an_unpublished_page_size_maximum_makes_the_walk_use_smaller_pages():
    app = CloseSandbox(api_key=CLOSE_KEY, n_leads=30, max_limit=100)  # below our 250 for opportunities
    with RunningSandbox(app) as server:
        connector = CloseConnector(f"{server.url}/api/v1", CLOSE_KEY)
        assert set(ids(connector.stream("deals", None))) == {o["id"] for o in app.dump("opportunity")}
