"""A long or rate-limited sync never looks hung: the engine logs progress while a stream runs
(records so far, rate, API calls), and the HTTP core logs every rate-limit wait with its length
and the vendor header that caused it, and every retry (never a query string or a key)."""

from __future__ import annotations

import logging

from cz_pipeline.core.http import RetryPolicy
from cz_pipeline.ingest import engine as ingest_engine
from cz_pipeline.ingest.engine import sync_entity
from cz_pipeline.sources.close.connector import CloseConnector
from cz_pipeline_tests.conftest import CLOSE_KEY


def test_progress_rate_limit_waits_and_retries_are_logged(engine, tenant_id, close_server, close_control,
                                                          caplog, monkeypatch):
    monkeypatch.setattr(ingest_engine, "PROGRESS_EVERY_SECONDS", 0.0)  # every page instead of every 10 s
    close_control.fault(429, count=1, path_contains="search", headers={"Retry-After": "0"})
    close_control.fault(503, count=1, path_contains="search")
    connector = CloseConnector(f"{close_server.url}/api/v1", CLOSE_KEY, RetryPolicy(backoff_base=0.01))
    with caplog.at_level(logging.INFO, logger="cz_pipeline"):
        result = sync_entity(engine, tenant_id=tenant_id, source_system="close", entity="leads",
                             connector=connector, requested_mode="full")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("cz_pipeline")]
    progress = [line for line in lines if line.startswith(f"{tenant_id} leads:") and "records so far" in line]
    assert progress and f"{result.records_read} records so far" in progress[-1] and "API calls" in progress[-1]
    waits = [line for line in lines if "rate limited" in line]
    assert len(waits) == 1 and "waiting 0.0s" in waits[0] and "Retry-After: 0" in waits[0]
    retries = [line for line in lines if "answered 503; retry" in line]
    assert len(retries) == 1
    assert not any(CLOSE_KEY in line or "?" in line.split(" (")[0] for line in waits + retries)
