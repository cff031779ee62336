"""Helpdesk fixtures: a Teamwork Desk fake whose customers are (mostly) the Close sandbox's contacts,
and a Close tenant with a `helpdesk` section."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cz_pipeline.sandbox.close import CloseSandbox
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.teamwork_desk import TeamworkDeskSandbox
from cz_pipeline_tests.conftest import SyncRunner, close_crm_config
from cz_pipeline_tests.helpdesk.desk_helpers import DESK_KEY, desk_config, synced_contacts, unsynced_contacts


@pytest.fixture
def desk_emails(close_app: CloseSandbox) -> list[str]:
    """Nine addresses of synced contacts (the fake serves them as given, UPPER-cased and
    space-padded lower-case) and two of contacts whose lead is not synced; the fake adds three
    unknown addresses of its own."""
    synced = [c["emails"][0]["email"] for c in synced_contacts(close_app)]
    other = [c["emails"][0]["email"] for c in unsynced_contacts(close_app)]
    return synced[:9] + other[:2]


@pytest.fixture
def desk_app(desk_emails: list[str]) -> TeamworkDeskSandbox:
    return TeamworkDeskSandbox(api_key=DESK_KEY, customer_emails=desk_emails, rate_limit_per_minute=120)


@pytest.fixture
def desk_server(desk_app: TeamworkDeskSandbox) -> Iterator[RunningSandbox]:
    with RunningSandbox(desk_app) as server:
        yield server


@pytest.fixture
def desk_control(desk_server: RunningSandbox) -> SandboxControl:
    return SandboxControl(desk_server.url)


@pytest.fixture
def helpdesk_tenant(tenant_id: str, close_server: RunningSandbox, desk_server: RunningSandbox, write_tenants,
                    warehouse_url: str):
    """`make(quality=None, **crm_overrides)` → a SyncRunner for a Close tenant with a Teamwork Desk helpdesk.
    The helpdesk reads with no overlap, so a routine read window starts at the newest ticket."""

    def make(quality: dict[str, Any] | None = None, **crm_overrides: Any) -> SyncRunner:
        tenant: dict[str, Any] = {
            "crm": close_crm_config(close_server.url, **crm_overrides),
            "helpdesk": desk_config(desk_server.url, overlap_seconds=0, settle_lag_seconds=0),
        }
        if quality:
            tenant["quality"] = quality
        path: Path = write_tenants({tenant_id: tenant})
        return SyncRunner(path, warehouse_url)

    return make
