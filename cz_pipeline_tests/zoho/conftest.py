"""Zoho fixtures: the Zoho CRM fake on loopback (a small org by default, the full 400-account org
where a test needs `page_token`), its control client, and a Zoho tenant configuration."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from cz_pipeline.sources.zoho_crm.connector import clear_token_cache
from cz_pipeline.sandbox.control import SandboxControl
from cz_pipeline.sandbox.server import RunningSandbox
from cz_pipeline.sandbox.zoho_crm import ZohoSandbox

# The values `write_tenants` (root conftest) exports into these variables.
ZOHO_SECRETS = {"client_id": "zoho_client", "client_secret": "zoho_secret", "refresh_token": "zoho_refresh"}
# ChurnZero's usual Zoho filter: a checkbox on the account (pass as `sync_filter=SYNC_FILTER`)
SYNC_FILTER = [{"field": "Sync_to_ChurnZero", "op": "eq", "value": True}]
SMALL_ORG = 30  # accounts: 156 contacts, one page per module, no page_token


@pytest.fixture
def make_zoho() -> Iterator:
    """Factory: `make_zoho(cls=ZohoSandbox, **sandbox kwargs)` → (app, running server, control).
    Access tokens are cached per process and grant; a fresh org starts without one (a reused
    loopback port must not hand a test the previous org's token)."""
    running: list[RunningSandbox] = []
    clear_token_cache()

    def make(cls: type[ZohoSandbox] = ZohoSandbox, **kwargs: Any) -> tuple[ZohoSandbox, RunningSandbox, SandboxControl]:
        app = cls(**{"n_accounts": SMALL_ORG, **kwargs})
        server = RunningSandbox(app)
        running.append(server)
        return app, server, SandboxControl(server.url)

    yield make
    for server in running:
        server.stop()


@pytest.fixture
def zoho(make_zoho) -> tuple[ZohoSandbox, RunningSandbox, SandboxControl]:
    """A small Zoho org."""
    return make_zoho()


def zoho_crm_config(url: str, **overrides: Any) -> dict[str, Any]:
    """A Zoho tenant's `crm` block against the sandbox at `url` (accounts server and API)."""
    cfg: dict[str, Any] = {
        "system": "zoho_crm",
        "base_url": url,
        "credentials": {"client_id": {"env": "TEST_ZOHO_CLIENT_ID"},
                        "client_secret": {"env": "TEST_ZOHO_CLIENT_SECRET"},
                        "refresh_token": {"env": "TEST_ZOHO_REFRESH_TOKEN"},
                        "accounts_url": url},
        "account_external_id": "Account_Number",
        "account_fields": {
            "next_renewal_date": {"definition": {
                "from": "deals", "aggregate": "max", "field": "end_date",
                "where": [{"field": "start_date", "op": "lte", "value": "today"},
                          {"field": "end_date", "op": "gte", "value": "today"}]}},
            "churn_score": {"source": "ChurnScore"},
            "industry": {"source": "Industry"},
        },
        "contact_fields": {"nps_rating": {"source": "NPS_Rating"}},
    }
    cfg.update(overrides)
    return cfg
